"""How local an edit is, measured on image pixels, and the registry of such metrics.

ROIR (the paper's Table 1, lower is better): ``||(1 - M) * (X' - X)|| / ||M * (X' - X)||`` over
all pixels and channels, M the region mask, X the original image and X' the edited one. A change
only inside M gives 0; a uniform change everywhere gives sqrt(|outside| / |inside|).

Region specificity (issue: an edit of the wrong region that also covers the target scores well on ROIR alone):
the image is split into disjoint cells (eyes, nose, mouth, the rest of the face, the background;
:func:`panda.landmarks.face_cells`) and the edit's RMS pixel change is measured in each; the specificity is the RMS
change inside the target over the largest RMS change inside any other cell (> 1: the target is where the edit acts
most, per pixel). RMS per pixel, not the share of the total, because the background's area would otherwise win
every comparison.

Every metric registered with :func:`register_metric` is computed by the ROIR benchmark for every
method and region and reported in its tables (as StyleGAN's ``metric_main.register_metric``): adding
a metric means adding one function here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .registry import Registry

@dataclass(frozen=True)
class Cells:
    """A target region and the disjoint cells the image is split into (the target one of them).

    Attributes
    ----------
    target : str
    cells : dict of str to torch.Tensor
        Cell name -> (N, H, W) bool, disjoint, covering every pixel.
    """

    target: str
    cells: dict[str, torch.Tensor]

    @property
    def mask(self) -> torch.Tensor:
        """(N, H, W) float: the target region."""
        return self.cells[self.target].float()


#: ``fn(original, edited, cells) -> (N,)``: images (N, 3, H, W) in [0, 1] and the target's :class:`Cells`.
MetricFn = Callable[[torch.Tensor, torch.Tensor, Cells], torch.Tensor]


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


def cell_rms(original: torch.Tensor, edited: torch.Tensor, cells: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """RMS pixel change (over channels and the cell's pixels) in each cell, per sample.

    Parameters
    ----------
    original, edited : torch.Tensor
        (N, C, H, W) images.
    cells : dict of str to torch.Tensor
        Cell name -> (N, H, W) bool.

    Returns
    -------
    dict of str to torch.Tensor
        Cell name -> (N,); NaN where a sample's cell is empty.
    """
    d2 = ((edited - original) ** 2).mean(1)  # (N, H, W)
    out = {}
    for name, m in cells.items():
        m = m.to(d2.device).float()
        area = m.flatten(1).sum(1)
        ms = (d2 * m).flatten(1).sum(1) / area.clamp_min(1)
        out[name] = torch.where(area > 0, ms.sqrt(), torch.full_like(ms, float("nan")))
    return out


@register_metric("ROIR", lower_is_better=True,
                 description="norm of the pixel change outside the region over the norm inside it")
def _roir(original: torch.Tensor, edited: torch.Tensor, cells: Cells) -> torch.Tensor:
    return roir(original, edited, cells.mask)


@register_metric("specificity", lower_is_better=False,
                 description="RMS change inside the region over the largest RMS change inside any other face cell "
                             "(eyes, nose, mouth, rest of face, background); > 1 when the region changes most")
def specificity(original: torch.Tensor, edited: torch.Tensor, cells: Cells, floor: float = 1e-6) -> torch.Tensor:
    """RMS change inside the target over the largest RMS change inside any other (non-empty) cell, per sample:
    (N,), > 1 where the target is where the edit acts most. An RMS change below ``floor`` (a millionth of the [0, 1]
    range) counts as ``floor``, so an edit that changes nothing else gets a large finite score, not inf."""
    rms = cell_rms(original, edited, cells.cells)
    target = rms[cells.target].nan_to_num(0.0)
    others = torch.stack([v for k, v in rms.items() if k != cells.target]).nan_to_num(0.0).amax(0)
    return target / others.clamp_min(floor)


@register_metric("inside share", lower_is_better=False,
                 description="share of the squared pixel change that falls inside the region")
def _inside_share(original: torch.Tensor, edited: torch.Tensor, cells: Cells) -> torch.Tensor:
    return change_inside_fraction(original, edited, cells.mask)
