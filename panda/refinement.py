"""Refinement: sample-specific parts P_i for images not aligned with the data the factors came from.

For one sample, with A fixed, the PandA objective ``||Z_i - A A^T Z_i P_i P_i^T||^2`` is the
global P-step restricted to that sample: the same projected-gradient solver on the S x S matrix
``M_i = Z_i^T A A^T Z_i / ||Z_i||^2``, started from the global P (as the authors' demo does).

Why a neighbourhood: solved to convergence on one image, the objective happily re-purposes a
part for whatever reconstructs that image best, and the part loses its meaning (the authors avoid
this only by taking 100 tiny steps). Misalignment moves content locally, so each refined part is
kept inside its global part's support (rescaled map > ``threshold``) dilated by ``radius`` positions.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .errors import PandaError
from .factorisation import solve_parts
from .features import capture
from .generators import GeneratorAdapter, Latents
from .model import PandA


def part_neighbourhood(model: PandA, radius: int = 1, threshold: float = 0.25) -> torch.Tensor:
    """(S, R_S) bool: where each refined part may live: the global part's support (its [0, 1]-rescaled
    map above ``threshold``) dilated by ``radius`` positions (a square neighbourhood)."""
    from .viz import normalise

    _, h, w = model.layer_shape_
    maps = normalise(model.part_maps()) > threshold  # (R_S, H, W)
    grown = F.max_pool2d(maps[:, None].float(), 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0
    return grown.flatten(1).T


def check_refine_args(grid: tuple[int, int], steps: int = 100, radius: int | None = 1,
                      shift: tuple[int, int] = (0, 0)) -> None:
    """Refinement steps >= 0, radius >= 0 (or None), and a shift smaller than the (H, W) grid."""
    if steps < 0:
        raise PandaError(f"steps={steps}: give a number of refinement steps >= 0.")
    if radius is not None and radius < 0:
        raise PandaError(f"radius={radius}: give a neighbourhood radius >= 0 (or none).")
    (h, w), (dy, dx) = grid, shift
    if abs(dy) >= h or abs(dx) >= w:
        raise PandaError(f"shift ({dy}, {dx}) is as large as the layer's {h}x{w} grid: use a smaller shift.")


def refine_parts(model: PandA, z: torch.Tensor, steps: int = 100, radius: int | None = 1,
                 tol: float = 1e-9) -> torch.Tensor:
    """Sample-specific parts for feature maps z (N, C, H, W): (N, S, R_S), non-negative.

    steps:  at most this many projected-gradient iterations per sample (each is an S x S product).
    radius: how many positions a part may move beyond its global support (None: anywhere).
    """
    check_refine_args(model.layer_shape_[1:], steps, radius)
    z = model._flat(z)
    a = model.appearances_.to(z)
    support = None if radius is None else part_neighbourhood(model, radius).to(z.device)
    out = []
    for zi in z:
        w = a.T @ zi  # (R_C, S)
        m = (w.T @ w).double() / (zi.double() ** 2).sum().clamp_min(1e-30)
        p = model.parts_.to(m)
        if steps > 0:
            # the global parts' mass outside the neighbourhood is moved out by the first projection
            p, _ = solve_parts(m, p, max_iter=steps, tol=tol, support=support)
        out.append(p.float())
    return torch.stack(out)


def sample_errors(model: PandA, z: torch.Tensor, parts: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample relative error ||Z_i - A A^T Z_i P P^T||^2 / ||Z_i||^2, (N,), with the global parts
    or per-sample parts (N, S, R_S)."""
    z = model._flat(z)
    a = model.appearances_.to(z)
    p = (model.parts_.to(z)[None] if parts is None else parts.to(z))
    r = z - a @ (a.T @ z @ p) @ p.transpose(1, 2)
    return (r ** 2).flatten(1).sum(1) / (z ** 2).flatten(1).sum(1)


def shift_features(z: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate feature maps (N, C, H, W) by (dy, dx) positions, repeating the edge into the gap,
    so that an image's content moves without wrapping round."""
    h, w = z.shape[-2:]
    check_refine_args((h, w), shift=(dy, dx))
    padded = F.pad(z, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="replicate")
    return padded[:, :, max(-dy, 0):max(-dy, 0) + h, max(-dx, 0):max(-dx, 0) + w]


def shift_map(m: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The same translation for (H, W) maps."""
    return shift_features(m[None, None], dy, dx)[0, 0]


def refine(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], steps: int = 100,
           shift: tuple[int, int] = (0, 0), radius: int | None = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Capture the samples' features (optionally shifted by ``shift`` = (dy, dx) positions) and refine.

    Returns (feature maps (N, C, H, W), refined parts (N, S, R_S)).
    """
    from .editing import as_latents

    model.check_compatible(generator)
    z = capture(generator, as_latents(generator, latents), model.layer_)
    if shift != (0, 0):
        z = shift_features(z, *shift)
    return z, refine_parts(model, z, steps, radius)
