"""Per-image cost of panda's applications against one generator forward pass, in one run.

Fits a model (R_C = C, R_S = 12, 2,000 samples) on each face generator at its default layer, and on dcgan-celeba
at a 32 x 32 and a 64 x 64 layer (where refinement solves on each image's factor), then times, per image:
a full generator forward pass, feature capture, an edit (single image and batches of 64),
refinement (the default: the best of 25 translations of the parts, then up to 100 steps), localisation and removal.

    python benchmarks/app_speed.py          # prints a Markdown table, writes benchmarks/app_speed.md
    python benchmarks/app_speed.py --rows dcgan-celeba,dcgan-celeba:relu4 --no-write
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch

from panda.editing import Edit, edit
from panda.features import FeatureSource, capture
from panda.model import PandA
from panda.refinement import refine_parts
from panda.regions import region_for
from panda.removal import remove

BATCH = 64
ROWS = "dcgan-celeba,dcgan-digiface,dcgan-celeba:relu4,dcgan-celeba:convTr5"


def per_image(fn, n_images: int, repeat: int = 5) -> float:
    """Median over ``repeat`` runs of fn()'s seconds, divided by the images it handles (ms per image)."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / n_images


def measure(name: str, layer: str | None = None) -> dict:
    torch.manual_seed(0)
    g = panda.load_generator(name)
    model = PandA(rank_parts=12).fit(FeatureSource(g, layer or g.default_layer, range(2000)))
    model.set_background(0, 1.0)  # removal's cost does not depend on which appearance
    one, many = g.sample([7]), g.sample(range(100, 100 + BATCH))
    z_one, z_many = capture(g, one, model.layer_), capture(g, many, model.layer_)
    e = [Edit(3, model.top_appearances(3, 1)[0], 1.0)]
    region = region_for(model, part=3)
    with torch.no_grad():
        return {
            "generator": name, "layer": model.layer_,
            "forward_1": per_image(lambda: g.synthesize(one), 1, 20),
            "forward_b": per_image(lambda: g.synthesize(many), BATCH),
            "capture_b": per_image(lambda: capture(g, many, model.layer_), BATCH),
            "edit_1": per_image(lambda: edit(model, g, one, e), 1, 20),
            "edit_b": per_image(lambda: edit(model, g, many, e), BATCH),
            "refine_1": per_image(lambda: refine_parts(model, z_one), 1),
            "refine_b": per_image(lambda: refine_parts(model, z_many), BATCH, 2),
            "localize_b": per_image(lambda: model.localize(z_many), BATCH),
            "remove_b": per_image(lambda: remove(model, g, many, region), BATCH),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=ROWS, help="generators, each with :LAYER for another than its default layer "
                                                 f"(default: {ROWS})")
    ap.add_argument("--no-write", action="store_true", help="print the table only, keep the .md file as it is")
    args = ap.parse_args()
    rows = [measure(*row.split(":", 1)) for row in args.rows.split(",")]
    lines = ["| generator (layer) | forward, 1 image | forward, batch of 64 | capture features | edit, 1 image | edit, batch of 64 "
             "| refine (search 2, 100 steps), 1 image | refine, batch of 64 | localise (from features) | remove, batch of 64 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["forward_b"]

        def cell(key: str, ref: float = f) -> str:
            return f"{r[key]:.2f} ms ({r[key] / ref:.1f}x)"

        lines.append(f"| {r['generator']} ({r['layer']}) | {r['forward_1']:.2f} ms | {f:.2f} ms | {cell('capture_b')} "
                     f"| {cell('edit_1', r['forward_1'])} | {cell('edit_b')} | {cell('refine_1', r['forward_1'])} | {cell('refine_b')} | {cell('localize_b')} "
                     f"| {cell('remove_b')} |")
    table = "\n".join(lines)
    print(table)
    header = (f"# Application cost per image\n\nMade by `python benchmarks/app_speed.py` on {torch.get_num_threads()} CPU "
              f"thread(s), torch {torch.__version__}, {platform.machine()}. Milliseconds per image (median of repeated "
              f"runs); in brackets, the ratio to the matching generator forward pass measured in the same run (single "
              f"image against a single-image forward pass; batched against one image's share of a batched one). "
              f"Batched figures are a call for {BATCH} images divided by {BATCH}. Refinement solves a batch's "
              f"S x S problems together (one batched product per iteration; its translation search is per image), "
              f"each on its factor (A^T Z_i)^T (S x R_C) where R_C <= S / 4: the 32 x 32 and 64 x 64 rows.\n\n")
    if not args.no_write:
        out = Path(__file__).with_name("app_speed.md")
        out.write_text(header + table + "\n")
        print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
