"""Naming parts after face regions found by independent landmark models (MediaPipe FaceMesh, ONet).

A part is named after the region (eyes, nose, mouth) whose masks hold the largest share of its mass,
averaged over faces; the names are stored in the factor file and shown in every picture.
"""

from __future__ import annotations

import torch

from .editing import part_profile
from .errors import PandaError
from .generators import GeneratorAdapter
from .landmarks import FaceMeshMasker, FaceSet, face_set, load_onet
from .maps import upsample
from .model import PandA

#: Faces that name parts and calibrate the benchmark's edits are seeds from here on (disjoint from training).
CALIB_SEED_START = 20_000_000


def region_parts(model: PandA, faces: FaceSet) -> dict[str, int]:
    """For each region, the part with the largest share of its (rescaled, upsampled) mass inside that
    region's masks, averaged over the samples. Two regions may pick the same part.

    Returns
    -------
    dict of str to int
        Region name -> part index.
    """
    size = faces.images.shape[-1]
    maps = torch.stack([upsample(part_profile(model, k)[None], size)[0] for k in range(model.n_parts)])
    return {r: int(torch.argmax((maps[None] * m[:, None].float()).flatten(2).sum(2).mean(0) / maps.flatten(1).sum(1)))
            for r, m in faces.masks.items()}


def part_names(parts: dict[str, int]) -> dict[int, str]:
    """Part index -> name ('eyes', 'nose', 'mouth', or several joined by '/'), from :func:`region_parts`."""
    names: dict[int, list[str]] = {}
    for region, k in parts.items():
        names.setdefault(k, []).append(region)
    return {k: "/".join(v) for k, v in names.items()}


def name_model_parts(model: PandA, generator: GeneratorAdapter, n: int = 64, start: int = CALIB_SEED_START) -> dict[int, str]:
    """Name ``model``'s parts after the regions they overlap most on ``n`` faces from seed ``start``.

    Sets and returns ``model.part_names_``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PandaError(f"n={n!r}: name parts on at least 1 face.")
    model.check_compatible(generator)
    faces = face_set(generator, start, n, FaceMeshMasker(), load_onet())
    if len(faces.seeds) == 0:
        raise PandaError(f"no faces found in {n} samples of '{generator.name}': naming parts needs a face generator.")
    model.part_names_ = part_names(region_parts(model, faces))
    return model.part_names_
