"""Regions to edit or remove, on the layer's grid: a learnt part, a mask drawn at any resolution, or a face region
FaceMesh finds in each image; and the appearances particular to a region.

A region r (H, W) in [0, 1] takes appearance j as ``alpha * a_j r^T`` (:func:`panda.editing.region_delta`), whether
it is a part or not; :func:`panda.removal.removal` fills one with a background appearance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .editing import part_profile
from .errors import PandaError
from .generators import GeneratorAdapter, Latents
from .landmarks import FaceMeshMasker
from .localisation import RANKING_SEEDS, region_appearances
from .model import PandA


def rasterise_mask(mask: torch.Tensor | np.ndarray | str | Path, grid: tuple[int, int]) -> torch.Tensor:
    """A mask at any resolution (array (H', W'), or a PNG whose non-black pixels are the region)
    -> (H, W) on the layer's grid, each cell the mask's coverage in [0, 1] (area average)."""
    if isinstance(mask, (str, Path)):
        path = Path(mask)
        if not path.is_file():
            raise PandaError(f"mask file '{path}' does not exist: give a PNG whose white pixels mark the region.")
        try:
            with Image.open(path) as im:
                mask = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except (OSError, Image.DecompressionBombError) as exc:  # the latter: a mask of hundreds of megapixels
            raise PandaError(f"cannot read mask '{path}' ({exc}): give a PNG whose white pixels mark the region "
                             f"(at most the image's own size is needed).") from exc
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    if m.dim() != 2:
        raise PandaError(f"a mask must be 2-D (H, W), got shape {tuple(m.shape)}.")
    if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise PandaError("mask values must be finite and in [0, 1] (0 = outside the region, 1 = inside).")
    cells = F.adaptive_avg_pool2d(m[None, None], grid)[0, 0]
    if float(cells.max()) <= 0:
        raise PandaError("the mask is empty (all zero): mark the region in white.")
    return cells


def rasterise_masks(masks: torch.Tensor, grid: tuple[int, int], present: torch.Tensor | None = None) -> torch.Tensor:
    """One mask per image (N, H', W') -> (N, H, W) on the layer's grid (:func:`rasterise_mask`). Where ``present``
    (N,) bool is False (default: where the mask is empty, e.g. no face was found) the region is empty instead of
    refused."""
    present = masks.flatten(1).any(1) if present is None else present
    return torch.stack([rasterise_mask(m.float().numpy(), grid) if ok else torch.zeros(grid)
                        for m, ok in zip(masks, present.tolist())])


def region_for(model: PandA, part: int | None = None, mask=None) -> torch.Tensor:
    """The (H, W) region to edit or fill: a part (rescaled to [0, 1]) or a rasterised user mask; exactly one."""
    if (part is None) == (mask is None):
        raise PandaError("say which region: either a part or a mask (not both).")
    if part is not None:
        return part_profile(model, part)
    return rasterise_mask(mask, model.layer_shape_[1:])


@dataclass
class FaceRegions:
    """A face region found by FaceMesh in each image.

    Attributes
    ----------
    grid : torch.Tensor
        (N, H, W) on the layer's grid, in [0, 1] (:func:`rasterise_mask`); zero where no face was found.
    masks : torch.Tensor
        (N, H', W') bool at image resolution.
    found : torch.Tensor
        (N,) bool: a face was found.
    images : torch.Tensor
        (N, 3, H', W') in [0, 1]: the images FaceMesh looked at, for whatever draws or measures them next (a second
        render of the same latents would cost a generator pass).
    """

    grid: torch.Tensor
    masks: torch.Tensor
    found: torch.Tensor
    images: torch.Tensor


def face_regions(model: PandA, generator: GeneratorAdapter, latents: Latents, region: str, dilate: int = 5) -> FaceRegions:
    """``region`` (eyes, nose, mouth, forehead) as FaceMesh finds it in each image, grown by ``dilate`` pixels."""
    return faces_in(model, generator.render(latents), region, dilate)


def faces_in(model: PandA, images: torch.Tensor, region: str, dilate: int = 5) -> FaceRegions:
    """:func:`face_regions` in images already rendered, (N, 3, H', W') in [0, 1]."""
    found = FaceMeshMasker(dilate=dilate)(images, regions=(region,))
    masks = found.masks[region]
    return FaceRegions(rasterise_masks(masks, model.layer_shape_[1:], found.found), masks, found.found, images)


def calibrated_appearance(model: PandA, generator: GeneratorAdapter, mask=None, region: str | None = None,
                          dilate: int = 5) -> tuple[int, int]:
    """(the appearance most particular to a region, how many samples it was ranked on): a mask (as
    :func:`rasterise_mask` takes it) or a face region, on :data:`panda.localisation.RANKING_SEEDS`, for a face region
    those FaceMesh finds a face in. A few images alone would rank noise first."""
    calib = generator.sample(RANKING_SEEDS)
    if region is None:
        return region_appearances(model, generator, calib, rasterise_mask(mask, model.layer_shape_[1:]), 1)[0], len(calib)
    faces = face_regions(model, generator, calib, region, dilate)
    keep = faces.found.nonzero().flatten()
    if len(keep) == 0:
        raise PandaError(f"FaceMesh found no face in {len(calib)} calibration samples to rank appearances for the "
                         f"{region}: name one (an appearance index).")
    return region_appearances(model, generator, calib[keep], faces.grid[keep], 1)[0], len(keep)
