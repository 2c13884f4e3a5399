"""Concept localisation: ``A^T Z_i`` (R_C x S) says how much of each appearance is at each position."""

from __future__ import annotations

from typing import Sequence

import torch

from .features import capture
from .generators import GeneratorAdapter, Latents
from .model import PandA


def localize(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int]) -> torch.Tensor:
    """Localisation maps (N, R_C, H, W) on the layer's grid for latents (or seeds)."""
    from .editing import as_latents

    model.check_compatible(generator)
    return model.localize(capture(generator, as_latents(generator, latents), model.layer_)).cpu()


def strongest(maps: torch.Tensor, k: int) -> list[int]:
    """The k appearances with the most energy (sum of squares over positions) in one sample's maps (R_C, H, W)."""
    energy = (maps ** 2).flatten(1).sum(1)
    return [int(j) for j in torch.argsort(energy, descending=True)[:k]]


def signed(model: PandA, appearance: int, maps: torch.Tensor) -> torch.Tensor:
    """Maps of one appearance oriented so that "more of it" is positive: the background appearance's
    maps are multiplied by its border sign; others are kept as they are."""
    return maps * (model.background_sign_ if appearance == model.background_ else 1.0)
