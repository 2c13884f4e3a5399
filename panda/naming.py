"""Naming parts after face regions found by independent landmark models (MediaPipe FaceMesh, ONet).

Each face is split into disjoint cells (eyes, nose, mouth, the rest of the face oval, the background;
:func:`panda.landmarks.face_cells`). For every part, the share of its mass (its map upsampled to the image) in each
cell is averaged over faces; its *lift* in a cell is that share over the cell's share of the image's area. A part is
named after the cell where its lift is highest when that cell is a region (eyes, nose or mouth); its *purity* is its
share of mass inside that cell. Lift, not share, picks the cell because the regions are small: a part sitting
squarely on the eyes still has most of its mass around them. The names are stored in the factor file and shown in
every picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .editing import part_profile
from .errors import PandaError
from .generators import GeneratorAdapter
from .landmarks import CELLS, REGIONS, FaceMeshMasker, FaceSet, face_cells, face_set, load_onet
from .maps import upsample
from .model import PandA

#: Faces that name parts and calibrate the benchmark's edits are seeds from here on (disjoint from training).
CALIB_SEED_START = 20_000_000


@dataclass
class PartRegions:
    """Where each part sits on the faces (see the module docstring).

    Attributes
    ----------
    share : torch.Tensor
        (R_S, len(CELLS)): mean share of each part's mass in each cell.
    area : torch.Tensor
        (len(CELLS),): mean share of the image's area in each cell.
    n_faces : int
    """

    share: torch.Tensor
    area: torch.Tensor
    n_faces: int

    @property
    def lift(self) -> torch.Tensor:
        """(R_S, len(CELLS)): share over area, > 1 where the part is denser than uniform."""
        return self.share / self.area.clamp_min(1e-12)

    def cell(self, part: int) -> str:
        """The cell where ``part``'s lift is highest."""
        return CELLS[int(self.lift[part].argmax())]

    def purity(self, part: int) -> float:
        """``part``'s share of mass inside its cell."""
        return float(self.share[part, CELLS.index(self.cell(part))])

    def names(self) -> dict[int, str]:
        """Part -> region, for the parts whose cell is a region (eyes, nose or mouth)."""
        return {k: self.cell(k) for k in range(len(self.share)) if self.cell(k) in REGIONS}

    def best_parts(self, region: str, k: int = 3) -> list[int]:
        """The ``k`` parts that sit most on ``region``: those named after it first, then the others, each by lift."""
        lift = self.lift[:, CELLS.index(region)]
        names = self.names()
        order = sorted(range(len(lift)), key=lambda i: (names.get(i) != region, -float(lift[i])))
        return order[:k]

    def summary(self) -> dict:
        """Per region: its best part (:meth:`best_parts`), that part's purity (share of its mass in the region) and
        lift, and whether it is named after the region; and how many regions have a part of their own
        ("distinct")."""
        names = self.names()
        out = {}
        for r in REGIONS:
            k = self.best_parts(r, 1)[0]
            c = CELLS.index(r)
            out[r] = {"part": k, "named": names.get(k) == r, "share": float(self.share[k, c]),
                      "lift": float(self.lift[k, c])}
        out["distinct"] = len(set(names.values()))
        return out


def part_regions(model: PandA, faces: FaceSet) -> PartRegions:
    """Measure where ``model``'s parts sit on ``faces`` (their masks, including the face oval).

    Returns
    -------
    PartRegions
    """
    size = faces.images.shape[-1]
    maps = torch.stack([upsample(part_profile(model, k)[None], size)[0] for k in range(model.n_parts)])  # (R_S, H, W)
    mass = maps.flatten(1).sum(1).clamp_min(1e-12)
    cells = face_cells(faces.masks)
    share = torch.stack([(maps[None] * m[:, None].float()).flatten(2).sum(2).mean(0) / mass for m in cells.values()], 1)
    area = torch.stack([m.float().mean() for m in cells.values()])
    return PartRegions(share, area, len(faces.seeds))


def region_parts(model: PandA, faces: FaceSet) -> dict[str, int]:
    """For each region, the part with the highest lift there (two regions may pick the same part).

    Returns
    -------
    dict of str to int
        Region name -> part index.
    """
    regions = part_regions(model, faces)
    return {r: regions.best_parts(r, 1)[0] for r in REGIONS}


def name_model_parts(model: PandA, generator: GeneratorAdapter, n: int = 64, start: int = CALIB_SEED_START) -> dict[int, str]:
    """Name ``model``'s parts after the regions they overlap most on ``n`` faces from seed ``start``. Names given by
    hand (:meth:`PandA.name_part`, ``hand_named_``; in files from before that list, any but a region's) are kept, and
    their parts left as named; the other region names are measured anew.

    Sets and returns ``model.part_names_``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PandaError(f"n={n!r}: name parts on at least 1 face.")
    model.check_compatible(generator)
    faces = face_set(generator, start, n, FaceMeshMasker(), load_onet())
    if len(faces.seeds) == 0:
        raise PandaError(f"no faces found in {n} samples of '{generator.name}': naming parts needs a face generator.")
    own = {k: v for k, v in model.part_names_.items() if v not in REGIONS or k in model.hand_named_}
    found = part_regions(model, faces).names()
    model.part_names_ = dict(sorted(({k: v for k, v in found.items() if k not in own} | own).items()))
    return model.part_names_
