"""Concept localisation: ``A^T Z_i`` (R_C x S) says how much of each appearance is at each position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .features import capture, iter_features, render_and_capture
from .generators import GeneratorAdapter, Latents
from .model import PandA


def localize(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int]) -> torch.Tensor:
    """Localisation maps on the layer's grid.

    Parameters
    ----------
    latents : Latents or sequence of int
        N latents or seeds.

    Returns
    -------
    torch.Tensor
        (N, R_C, H, W) on the CPU.
    """
    model.check_compatible(generator)
    return model.localize(capture(generator, generator.latents(latents), model.layer_)).cpu()


def appearance_maps(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], appearance: int,
                    batch_size: int | None = None, progress: bool | None = False) -> torch.Tensor:
    """One appearance's localisation maps ``a_j^T Z_i`` for any number of samples, a generator batch at a time
    (features only: no image is rendered, and the other R_C - 1 maps are never formed).

    Returns
    -------
    torch.Tensor
        (N, H, W) float32 on the CPU: :func:`localize`'s ``[:, appearance]``.
    """
    model.check_compatible(generator)
    a = model.appearances_[:, model.check_appearance(appearance)]
    _, h, w = model.layer_shape_
    maps = [torch.einsum("c,bcs->bs", a.to(z.device, torch.float32), z.float()).cpu()  # float16 layers: float32 sums
            for z in iter_features(generator, model.layer_, latents, batch_size or generator.default_batch, progress,
                                   f"appearance {appearance}'s maps")]
    return torch.cat(maps).unflatten(1, (h, w))


@dataclass
class Localisation:
    """Images and where each appearance is in them.

    Attributes
    ----------
    images : torch.Tensor
        (N, 3, H', W') in [0, 1].
    maps : torch.Tensor
        (N, R_C, H, W) on the layer's grid (:func:`localize`).
    """

    images: torch.Tensor
    maps: torch.Tensor


def localisation(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int]) -> Localisation:
    """:func:`localize` with the images, for pictures."""
    model.check_compatible(generator)
    images, z = render_and_capture(generator, generator.latents(latents), model.layer_)
    return Localisation(images, model.localize(z).cpu())


def strongest(maps: torch.Tensor, k: int) -> list[int]:
    """The k appearances with the most energy (sum of squares over positions) in one sample's maps (R_C, H, W)."""
    energy = (maps ** 2).flatten(1).sum(1)
    return [int(j) for j in torch.argsort(energy, descending=True)[:k]]


def signed(model: PandA, appearance: int, maps: torch.Tensor) -> torch.Tensor:
    """Maps of one appearance oriented so that "more of it" is positive: the background appearance's
    maps are multiplied by its border sign; others are kept as they are."""
    return maps * (model.background_sign_ if appearance == model.background_ else 1.0)


#: The samples a region's appearances are ranked on where no images of its own are given: a few images alone rank
#: noise first (low-energy appearances whose share happens to be high there). The first 32 of the calibration faces
#: that name the parts (``panda.naming.CALIB_SEED_START``), far from training seeds.
RANKING_SEEDS = range(20_000_000, 20_000_032)


def region_appearances(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int],
                       region: torch.Tensor, k: int = 5) -> list[int]:
    """The ``k`` appearances most particular to a region of these images, the first to try as edits of it
    (:func:`rank_for_region` on their localisation maps).

    region: (H, W), or one per sample (N, H, W), on the layer's grid in [0, 1].
    """
    energy = localize(model, generator, latents).double() ** 2  # (N, R_C, H, W)
    return rank_for_region(energy if region.dim() == 3 else energy.sum(0), region, k)


def energy_maps(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int]) -> torch.Tensor:
    """sum_i (A^T Z_i)^2 over the samples: how much of each appearance is at each position, (R_C, H, W) float64.
    Any region's ranking (:func:`rank_for_region`) follows from it without the generator."""
    return (localize(model, generator, latents).double() ** 2).sum(0)


def rank_for_region(energy: torch.Tensor, region: torch.Tensor, k: int = 5) -> list[int]:
    """Appearances ranked for a region as :meth:`PandA.top_appearances` ranks them for a part (``by="specific"``):
    their energy inside the region times how much more of their energy falls there than the region's share of all
    energy would give them (the lift above 1).

    energy: (R_C, H, W) summed over samples (:func:`energy_maps`) with a region (H, W), or (N, R_C, H, W) with one
    region per sample (N, H, W); regions in [0, 1].
    """
    weight = region.double()[None] if energy.dim() == 3 else region.double()[:, None]
    dims = tuple(range(energy.dim() - 3)) + (-2, -1)  # the samples (if any) and the positions
    inside, total = (energy * weight).sum(dims), energy.sum(dims)  # (R_C,) each
    share = inside / total.clamp_min(1e-30)
    baseline = inside.sum() / total.sum().clamp_min(1e-30)
    score = inside * (share / baseline.clamp_min(1e-30) - 1).clamp_min(0)
    return [int(j) for j in torch.argsort(score, descending=True)[:min(k, len(score))]]
