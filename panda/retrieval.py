"""Retrieval: which samples hold the most (or the least) of an appearance in a region.

Sample i's score is appearance j's mean coefficient over a region r on the layer's grid,
``a_j^T Z_i r / sum(r)``, in units of the layer's typical activation norm (the unit of edit strengths), signed so that
"more of it" is positive (:func:`panda.localisation.signed`). With a part as the region it is the sample's coefficient
``Lambda_i[j, k]`` over the part's mass. Scores stream over any number of samples a batch at a time: an attribute score
for your own latents, a way to find the samples that show what an appearance means, and the images an edit of it would
be compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import PandaError
from .features import iter_features
from .generators import GeneratorAdapter, Latents
from .localisation import Localisation, localisation, signed
from .maps import check_region
from .model import PandA


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
        (H, W) on the layer's grid, the weights the mean is taken with.
    """

    scores: torch.Tensor
    appearance: int
    region: torch.Tensor

    def top(self, k: int) -> list[int]:
        """Indices of the ``k`` samples with the highest scores, highest first."""
        return [int(i) for i in torch.argsort(self.scores, descending=True, stable=True)[:k]]

    def bottom(self, k: int) -> list[int]:
        """Indices of the ``k`` samples with the lowest scores, lowest first."""
        return [int(i) for i in torch.argsort(self.scores, stable=True)[:k]]


def retrieve(model: PandA, generator: GeneratorAdapter, samples: Latents | Sequence[int], appearance: int,
             region: torch.Tensor | None = None, batch_size: int | None = None,
             progress: bool | None = False) -> Retrieval:
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

    Returns
    -------
    Retrieval
    """
    model.check_compatible(generator)
    j = model.check_appearance(appearance)
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


def ends(model: PandA, generator: GeneratorAdapter, samples: Latents | Sequence[int], result: Retrieval,
         k: int) -> tuple[list[int], list[int], Localisation, Localisation]:
    """The ``k`` samples of ``samples`` (those ``result`` scored) with the most and the least: their indices, best and
    worst first, and their images and maps for :func:`panda.figures.retrieval_figure`."""
    most, least = result.top(k), result.bottom(k)

    def picked(idx: list[int]) -> Latents | list[int]:
        return samples[torch.tensor(idx)] if isinstance(samples, Latents) else [samples[i] for i in idx]

    return most, least, localisation(model, generator, picked(most)), localisation(model, generator, picked(least))
