"""How local an edit is, measured on image pixels.

ROIR (the paper's Table 1, lower is better): ``||(1 - M) * (X' - X)|| / ||M * (X' - X)||`` over
all pixels and channels, M the region mask, X the original image and X' the edited one. A change
only inside M gives 0; a uniform change everywhere gives sqrt(|outside| / |inside|).
"""

from __future__ import annotations

import torch


def _broadcast_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(H, W) or (N, H, W) mask -> (N or 1, 1, H, W) float, to multiply (N, C, H, W) images."""
    mask = mask.to(images.device, images.dtype)
    if mask.dim() == 2:
        mask = mask[None]
    return mask[:, None]


def roir(original: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample ROIR for images (N, C, H, W) and a mask (H, W) or (N, H, W) in [0, 1]. Returns (N,).

    A sample whose change inside the mask is zero gets inf (nothing was edited where it should be).
    """
    diff = edited - original
    m = _broadcast_mask(mask, diff)
    outside = ((1 - m) * diff).flatten(1).norm(dim=1)
    inside = (m * diff).flatten(1).norm(dim=1)
    return torch.where(inside > eps, outside / inside.clamp_min(eps), torch.full_like(inside, float("inf")))


def change_inside_fraction(original: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of the squared pixel change that falls inside the mask, per sample, (N,) in [0, 1]."""
    diff2 = (edited - original) ** 2
    m = _broadcast_mask(mask, diff2)
    total = diff2.flatten(1).sum(1)
    return (m * diff2).flatten(1).sum(1) / total.clamp_min(1e-30)
