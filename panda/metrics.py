"""How local an edit is, measured on image pixels, and the registry of such metrics.

ROIR (the paper's Table 1, lower is better): ``||(1 - M) * (X' - X)|| / ||M * (X' - X)||`` over
all pixels and channels, M the region mask, X the original image and X' the edited one. A change
only inside M gives 0; a uniform change everywhere gives sqrt(|outside| / |inside|).

Every metric registered with :func:`register_metric` is computed by the ROIR benchmark for every
method and region and reported in its tables (as StyleGAN's ``metric_main.register_metric``): adding
a metric means adding one function here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .registry import Registry

#: ``fn(original, edited, masks) -> (N,)``: images (N, 3, H, W) in [0, 1], masks (N, H, W) in [0, 1].
MetricFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Metric:
    """A per-sample score of an edit against a region.

    Attributes
    ----------
    name : str
        Short name, the column heading in the benchmark's tables.
    fn : MetricFn
        The score per sample, (N,).
    lower_is_better : bool
        Which way is better.
    description : str
        One line for the tables' notes.
    """

    name: str
    fn: MetricFn
    lower_is_better: bool
    description: str


METRICS: Registry = Registry("metric")


def register_metric(name: str, lower_is_better: bool, description: str) -> Callable[[MetricFn], MetricFn]:
    """Decorator: add ``fn`` to :data:`METRICS` under ``name``."""

    def wrap(fn: MetricFn) -> MetricFn:
        METRICS.add(name, Metric(name, fn, lower_is_better, description))
        return fn

    return wrap


def _broadcast_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(H, W) or (N, H, W) mask -> (N or 1, 1, H, W) float, to multiply (N, C, H, W) images."""
    mask = mask.to(images.device, images.dtype)
    if mask.dim() == 2:
        mask = mask[None]
    return mask[:, None]


@register_metric("ROIR", lower_is_better=True,
                 description="norm of the pixel change outside the region over the norm inside it")
def roir(original: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample ROIR.

    Parameters
    ----------
    original, edited : torch.Tensor
        (N, C, H, W) images.
    mask : torch.Tensor
        (H, W) or (N, H, W) region mask in [0, 1].

    Returns
    -------
    torch.Tensor
        (N,). A sample whose change inside the mask is zero gets inf (nothing was edited where it should be).
    """
    diff = edited - original
    m = _broadcast_mask(mask, diff)
    outside = ((1 - m) * diff).flatten(1).norm(dim=1)
    inside = (m * diff).flatten(1).norm(dim=1)
    return torch.where(inside > eps, outside / inside.clamp_min(eps), torch.full_like(inside, float("inf")))


@register_metric("inside share", lower_is_better=False,
                 description="share of the squared pixel change that falls inside the region")
def change_inside_fraction(original: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of the squared pixel change that falls inside the mask, per sample.

    Parameters
    ----------
    original, edited : torch.Tensor
        (N, C, H, W) images.
    mask : torch.Tensor
        (H, W) or (N, H, W) in [0, 1].

    Returns
    -------
    torch.Tensor
        (N,) in [0, 1].
    """
    diff2 = (edited - original) ** 2
    m = _broadcast_mask(mask, diff2)
    total = diff2.flatten(1).sum(1)
    return (m * diff2).flatten(1).sum(1) / total.clamp_min(1e-30)


def inside_change(original: torch.Tensor, edited: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel change (all channels) inside each sample's mask: the benchmark's matched magnitude.

    Parameters
    ----------
    original, edited : torch.Tensor
        (N, 3, H, W) images.
    masks : torch.Tensor
        (N, H, W) bool or [0, 1] masks.

    Returns
    -------
    torch.Tensor
        (N,).
    """
    d = (edited - original).abs().mean(1)  # (N, H, W)
    m = masks.float()
    return (d * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
