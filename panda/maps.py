"""Small helpers on (N, H, W) maps that algorithms and pictures share (the bottom layer).

Parts, localisation maps and region masks all live on a grid; these move them between the layer's
grid and image resolution and bring them to a common range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import PandaError


def upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of maps to image resolution (what the generator 'sees' is smooth).

    Parameters
    ----------
    maps : torch.Tensor
        (N, H, W) maps.
    size : int
        The output side.

    Returns
    -------
    torch.Tensor
        (N, size, size) float maps.
    """
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def region_at(region: torch.Tensor, size: int, n: int | None = None) -> torch.Tensor:
    """A region on the layer's grid, (H, W) or one per image (N, H, W), at image resolution in [0, 1] (what pictures
    draw and metrics measure above 0.5): (size, size) or (N, size, size); with ``n``, an (H, W) region is repeated
    to (n, size, size)."""
    one = region.dim() == 2
    shown = upsample(region.detach().cpu().float()[None] if one else region.detach().cpu().float(), size).clamp(0, 1)
    if not one:
        return shown
    return shown[0] if n is None else shown.expand(n, size, size).clone()


def check_region(region: torch.Tensor, grid: tuple[int, int], per_image: bool = False) -> None:
    """A region map on the layer's (H, W) grid, or with ``per_image`` also one per image (N, H, W): its shape, and
    finite, non-negative values (0 = outside, 1 = inside); one line naming what is wrong."""
    h, w = grid
    if region.dim() not in ((2, 3) if per_image else (2,)) or tuple(region.shape[-2:]) != (h, w):
        each = f", or one per image (N, {h}, {w})" if per_image else ""
        raise PandaError(f"the region is {tuple(region.shape)}, but the layer's grid is ({h}, {w}): give it as (H, W) on "
                         f"the layer's grid{each} (panda.regions.rasterise_mask puts a mask on it).")
    if not torch.isfinite(region).all() or float(region.min()) < 0:
        raise PandaError("a region's values must be finite and non-negative (0 = outside, 1 = inside).")


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max each map to [0, 1]; a constant map becomes 0.

    Parameters
    ----------
    maps : torch.Tensor
        (N, H, W) maps.

    Returns
    -------
    torch.Tensor
        (N, H, W), each map rescaled to [0, 1].
    """
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)


def change_map(original: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """Per-pixel size of an edit: the mean absolute difference over channels.

    Parameters
    ----------
    original, edited : torch.Tensor
        (N, 3, H, W) images.

    Returns
    -------
    torch.Tensor
        (N, H, W), non-negative.
    """
    return (edited - original).abs().mean(1)


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow boolean masks by a (2 radius + 1)-wide square: a position is set when any position within
    ``radius`` (Chebyshev distance) is.

    Window sums of an integral image cost the same for any radius; a max-pool would cost radius^2 per
    pixel (seconds per 1024 px mask at the removal band's radius of 128).

    Parameters
    ----------
    masks : torch.Tensor
        (..., H, W) bool.
    radius : int
        >= 0.

    Returns
    -------
    torch.Tensor
        (..., H, W) bool.
    """
    if radius <= 0:
        return masks.bool().clone()
    x = masks.to(torch.float64)
    for dim in (-1, -2):
        n = x.shape[dim]
        padded = F.pad(x.movedim(dim, -1), (radius + 1, radius))  # a leading zero makes window sums a difference
        c = padded.cumsum(-1)
        x = (c[..., 2 * radius + 1:] - c[..., :n]).movedim(-1, dim)
    return x > 0.5


def grow(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (N, H, W) bool masks by ``pixels``, alternating 3 x 3 squares and crosses: an octagon, close to the
    disc FaceMesh's masks are dilated with (:func:`dilate` grows a square, at any radius for the same cost; this one
    costs ``pixels`` passes and is meant for the few pixels of a mask's margin)."""
    x = masks.float()[:, None]
    cross = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]])[None, None]
    for i in range(pixels):
        if i % 2 == 0:
            x = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            x = (F.conv2d(x, cross, padding=1) > 0).float()
    return x[:, 0] > 0.5
