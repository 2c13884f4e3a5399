"""Retrieval: which samples hold the most (or the least) of an appearance in a region.

Sample i's score is appearance j's mean coefficient over a region r on the layer's grid,
``a_j^T Z_i r / sum(r)``, in units of the layer's typical activation norm (the unit of edit strengths), signed so that
"more of it" is positive (:func:`panda.localisation.signed`). With a part as the region it is the sample's coefficient
``Lambda_i[j, k]`` over the part's mass. Scores stream over any number of samples a batch at a time: an attribute score
for your own latents, a way to find the samples that show what an appearance means, and the images an edit of it would
be compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import PandaError
from .features import iter_features, render_and_capture
from .generators import NO_IMAGES, GeneratorAdapter, Latents
from .localisation import Localisation, localisation, signed
from .maps import check_region
from .model import PandA
from .progress import progress_bar
from .regions import faces_in

#: The most samples a face-region retrieval renders and gives FaceMesh at once (fewer where the generator's batch is).
FACE_CHUNK = 64


@dataclass
class Retrieval:
    """What :func:`retrieve` returns.

    Attributes
    ----------
    scores : torch.Tensor
        (N,) float64: appearance j's mean over the region in each sample, in units of the layer's typical activation
        norm (``model.feature_scale_``), signed so that more of the appearance is positive.
    appearance : int
    region : torch.Tensor
        (H, W) on the layer's grid, the weights the mean is taken with; with a face region found in each image, their
        mean over the samples where one was found.
    regions : torch.Tensor or None
        (N, H, W): each sample's own region (a face region found by FaceMesh), zero where none was found (N S floats
        of memory: 25 MB for 100,000 samples of an 8 x 8 layer).
    found : torch.Tensor or None
        (N,) bool: where FaceMesh found the face region; the other samples' scores are NaN and never ranked.
    """

    scores: torch.Tensor
    appearance: int
    region: torch.Tensor
    regions: torch.Tensor | None = None
    found: torch.Tensor | None = None

    def _ranked(self, descending: bool) -> list[int]:
        order = torch.argsort(self.scores.nan_to_num(-math.inf if descending else math.inf), descending=descending,
                              stable=True)
        return [int(i) for i in order if not math.isnan(float(self.scores[i]))]

    def top(self, k: int) -> list[int]:
        """Indices of the ``k`` samples with the highest scores, highest first (NaN scores left out)."""
        return self._ranked(True)[:k]

    def bottom(self, k: int) -> list[int]:
        """Indices of the ``k`` samples with the lowest scores, lowest first (NaN scores left out)."""
        return self._ranked(False)[:k]


def retrieve(model: PandA, generator: GeneratorAdapter, samples: Latents | Sequence[int], appearance: int,
             region: torch.Tensor | None = None, batch_size: int | None = None,
             progress: bool | None = False, face_region: str | None = None, dilate: int = 5) -> Retrieval:
    """Score every sample by how much of ``appearance`` it holds in ``region``.

    Parameters
    ----------
    samples : Latents or sequence of int
        N latents or seeds, read a batch at a time (any N).
    appearance : int
        j, in 0..R_C-1.
    region : torch.Tensor, optional
        (H, W) non-negative weights on the layer's grid (a part: :func:`panda.regions.region_for`; a mask); default
        the whole grid.
    batch_size : int, optional
        Generator batch; default the generator's.
    face_region : str, optional
        Instead of ``region``: a face region (eyes, nose, mouth, forehead) found by FaceMesh in each sample's image,
        grown by ``dilate`` pixels, so that each face is scored where it has that region (a fixed part misses it on
        faces turned or placed otherwise). Each batch (at most :data:`FACE_CHUNK`) is rendered for FaceMesh, a second
        generator pass; samples without a face score NaN.

    Returns
    -------
    Retrieval
    """
    model.check_compatible(generator)
    j = model.check_appearance(appearance)
    if len(samples) == 0:
        raise PandaError(NO_IMAGES)
    if face_region is not None:
        if region is not None:
            raise PandaError("score in a region or in a face region found in each image, not both.")
        chunk = batch_size or min(FACE_CHUNK, generator.default_batch)  # images at once: the generator's batch
        return _retrieve_in_faces(model, generator, samples, j, face_region, dilate, chunk, progress)
    grid = tuple(model.layer_shape_[1:])
    region = torch.ones(grid) if region is None else region.detach().float().cpu()
    check_region(region, grid)
    if float(region.sum()) <= 0:
        raise PandaError("the region is all zeros: give one that is not empty (at least one position above 0).")
    weights = (region.flatten() / region.sum()).double()
    a = model.appearances_[:, j].double()
    scores = []
    for z in iter_features(generator, model.layer_, samples, batch_size or generator.default_batch, progress,
                           "scoring samples"):
        z = z.double()
        scores.append((torch.einsum("c,bcs->bs", a.to(z), z) @ weights.to(z)).cpu())  # (B,)
    scores = signed(model, j, torch.cat(scores)) / model.feature_scale_
    return Retrieval(scores, j, region)


def _retrieve_in_faces(model: PandA, generator: GeneratorAdapter, samples: Latents | Sequence[int], j: int,
                       face_region: str, dilate: int, chunk: int, progress: bool | None) -> Retrieval:
    """:func:`retrieve` with each sample's own face region, ``chunk`` samples rendered at a time."""
    a = model.appearances_[:, j].double()
    scores, grids, found = [], [], []
    n = len(samples)
    bar = progress_bar(total=n, desc=f"scoring samples in their {face_region}", unit="sample", progress=progress)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        lat = generator.latents(samples[start:stop])  # a slice of the latents, or these seeds' latents
        images, z = render_and_capture(generator, lat, model.layer_)  # one pass for FaceMesh's images and the maps
        faces = faces_in(model, images, face_region, dilate)
        z = z.double()
        maps = torch.einsum("c,bchw->bhw", a.to(z), z).cpu()  # (B, H, W): a_j^T Z_i
        w = faces.grid.double()
        mass = w.flatten(1).sum(1)
        mean = (maps * w).flatten(1).sum(1) / mass.clamp_min(1e-30)
        ok = faces.found.cpu() & (mass > 0)
        scores.append(torch.where(ok, mean, torch.full_like(mean, math.nan)))
        grids.append(faces.grid.float().cpu())
        found.append(ok)
        bar.update(stop - start)
    bar.close()
    found_all, grid_all = torch.cat(found), torch.cat(grids)
    if not found_all.any():
        raise PandaError(f"FaceMesh found the {face_region} in none of the {n} samples: score in a part or a mask "
                         f"instead, or use a face generator.")
    scores_all = signed(model, j, torch.cat(scores)) / model.feature_scale_
    return Retrieval(scores_all, j, grid_all[found_all].mean(0), grid_all, found_all)


def ends(model: PandA, generator: GeneratorAdapter, samples: Latents | Sequence[int], result: Retrieval,
         k: int) -> tuple[list[int], list[int], Localisation, Localisation]:
    """The ``k`` samples of ``samples`` (those ``result`` scored) with the most and the least: their indices, best and
    worst first, and their images and maps for :func:`panda.figures.retrieval_figure`."""
    most, least = result.top(k), result.bottom(k)

    def picked(idx: list[int]) -> Latents | list[int]:
        return samples[torch.tensor(idx)] if isinstance(samples, Latents) else [samples[i] for i in idx]

    return most, least, localisation(model, generator, picked(most)), localisation(model, generator, picked(least))
