"""Semantic parts: which layer and R_S give PandA separate eyes, nose and mouth parts? (issue 11, item 4)

For each face generator, layer and R_S, fits PandA (R_C = C, 5,000 samples, seed 0) and measures on 400 held-out
faces (FaceMesh masks, ONet cross-check; :func:`panda.naming.part_regions`) where every part's mass falls: the face
is split into eyes, nose, mouth, the rest of the face oval and the background. A part is named after the cell where
its lift (its share of mass there over the cell's share of the image) is highest, when that cell is a region. Per
region the table gives its best part's purity (share of that part's mass inside the region) and lift, and whether
the part is named after the region; "distinct" counts the regions (of 3) that have a part of their own.

    python benchmarks/semantic_parts.py    # prints the table, writes benchmarks/semantic_parts.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import device_label, table

import panda  # noqa: F401  (before torch)
from panda.features import FeatureSource
from panda.generators import load_registered
from panda.landmarks import FaceMeshMasker, face_set, load_onet
from panda.naming import CALIB_SEED_START
from panda.selection import rank_sweep

CONFIGS = {
    "dcgan-celeba": {"relu2": (12, 24, 32, 40, 48), "relu3": (12, 24, 48, 64, 96)},
    "dcgan-digiface": {"main.5": (12, 24, 32, 48), "main.8": (12, 24, 48, 64, 96)},
}
N_FIT, N_FACES = 5000, 400
NOTES = """
## Notes

- **Defaults chosen from this table** (`GeneratorSpec.default_rank_parts`, used by `panda fit`, `make demo` and
  `panda bench roir` at the default layer): the smallest R_S at which each region's best part is named after it with
  a purity of at least 0.2. dcgan-celeba relu2: **R_S = 40** (eyes 0.35, nose 0.51, mouth 0.48; at 32 the eyes' part
  has 0.10). dcgan-digiface main.5: **R_S = 24** (0.35, 0.65, 0.69; at 12 the eyes' part has 0.10). Re-measured on
  2026-11-26 with the current P-step (coarse-to-fine, run to convergence): the same two defaults are still the
  smallest that qualify.
- **16 x 16 layers** give the purest parts with enough of them (dcgan-digiface main.8 at R_S = 48: 0.84, 0.80, 0.93;
  dcgan-celeba relu3 at 96: 0.71, 0.72, 0.34), but their maps are speckled by the transposed convolutions' checkerboard
  (look at `panda parts`) and a fit costs about twice as much ("features + fit s"). They stay one option away
  (`--layer main.8 -rs 48`); the 8 x 8 defaults give blob-like parts, one per eye on dcgan-digiface.
- With 12 parts, the old default, neither 8 x 8 layer has an eyes part of purity 0.2: on dcgan-celeba the eyes sit
  in the central eyes-and-mouth band that the ROIR review found winning both cells.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true", help="print the table only, keep the .md file as it is")
    args = ap.parse_args()
    rows = []
    masker, onet = FaceMeshMasker(), load_onet()
    for name, layers in CONFIGS.items():
        g = load_registered(name)
        faces = face_set(g, CALIB_SEED_START + 100_000, N_FACES, masker, onet)  # held out from naming's own seeds
        for layer, ranks in layers.items():
            # every rank on one shared statistics pass (panda ranks does the same)
            t = time.perf_counter()
            sweep = rank_sweep(FeatureSource(g, layer, range(N_FIT)), ranks, faces=faces)
            per_rank = (time.perf_counter() - t) / len(ranks)
            for rank, model, pr in zip(sweep.ranks, sweep.models, sweep.regions):
                s = pr.summary()
                cells = [f"{'**' if s[r]['named'] else ''}part {s[r]['part']}: {s[r]['share']:.2f}, "
                         f"x{s[r]['lift']:.1f}{'**' if s[r]['named'] else ''}" for r in ("eyes", "nose", "mouth")]
                _, h, w = model.layer_shape_
                rows.append([name, f"{layer} ({h}x{w})", str(rank), f"{s['distinct']}/3", *cells,
                             f"{model.extract_time_ + model.fit_time_:.1f}", f"{per_rank:.1f}"])
                print(" | ".join(rows[-1]), flush=True)
    lines = ["# Semantic parts: separate eyes, nose and mouth parts by layer and R_S", "",
             f"Made by `python benchmarks/semantic_parts.py` on {device_label('cpu')}. PandA with R_C = C on {N_FIT:,} "
             f"samples (seed 0); parts measured on {N_FACES} held-out faces (seeds from {CALIB_SEED_START + 100_000:,}, "
             f"FaceMesh masks dilated 2 px, ONet cross-check; {len(faces.seeds)} kept for the last generator).", "",
             "Per region: its best part (highest lift), that part's purity (share of its mass inside the region) and "
             "lift (x: purity over the region's share of the image). **Bold**: the part is named after the region (its "
             "lift is highest there of all five cells: eyes, nose, mouth, rest of face, background). \"distinct\": "
             "regions with a part of their own. \"features + fit s\": what the same fit on its own costs (the shared "
             "pass counted); \"sweep s per rank\": the layer's whole sweep (`rank_sweep`: one statistics pass shared by its ranks, the "
             "parts measured on the faces) over its ranks.", ""]
    lines += table(["generator", "layer", "R_S", "distinct", "eyes", "nose", "mouth", "features + fit s",
                    "sweep s per rank"], rows)
    text = "\n".join(lines) + "\n" + NOTES
    print(text)
    if not args.no_write:
        Path(__file__).with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
