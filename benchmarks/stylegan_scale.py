"""PandA at StyleGAN scale: extraction, fit, background search, refinement and edit cost at the 16x16, 32x32 and
64x64 layers of a StyleGAN2 with random weights (weights do not change the cost), with peak memory.

    python benchmarks/stylegan_scale.py                                # 256 px on CPU -> stylegan_scale.md
    python benchmarks/stylegan_scale.py --resolution 1024 --device cuda --out benchmarks/stylegan_scale_cuda.md

The background search is timed on 2 samples and 4 candidates and reported per candidate: the default search
(16 candidates x 2 signs on 8 samples) costs 16x that tried exhaustively and 7x raced, as it runs (all 32 on 2
samples, the best 8 on the other 6).
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch
from common import device_label, stage_columns, staged_fit, table, timed, write_keeping_notes

from panda.checkpoints import random_stylegan2
from panda.editing import Edit, edit
from panda.features import FeatureSource, capture
from panda.model import PandA
from panda.refinement import refine_parts
from panda.removal import find_background

HERE = Path(__file__).resolve().parent


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", default="256,128,64", help="training samples at the 16, 32 and 64 px layers")
    ap.add_argument("--out", default=str(HERE / "stylegan_scale.md"))
    args = ap.parse_args()
    g = random_stylegan2(args.resolution).to(args.device)  # config-f widths
    one = g.sample([7])
    g.synthesize(one)
    _, forward_s = timed(lambda: g.synthesize(one), args.device)
    rows = []
    for res, n in zip((16, 32, 64), (int(v) for v in args.n.split(","))):
        layer = f"synthesis.b{res}.conv1"
        c, h, w = g.layer_shapes()[layer]
        print(f"{layer} ({c}x{h}x{w}), N={n} ...", file=sys.stderr, flush=True)
        source = FeatureSource(g, layer, range(n), progress=True)
        model = PandA(rank_parts=8).fit(source)
        # where the fit's time goes: the same fit again on the kept features (a streamed source would regenerate them)
        stages = None if source.streamed else staged_fit(lambda: PandA(rank_parts=8).fit(source), args.device)
        search, search_s = timed(lambda: find_background(model, g, range(2), candidates=4), args.device)
        z = capture(g, one, layer)
        _, refine_s = timed(lambda: refine_parts(model, z), args.device)
        e = [Edit(0, model.top_appearances(0, 1)[0], 1.0)]
        _, edit_s = timed(lambda: edit(model, g, one, e), args.device)
        rows.append({"layer": f"{layer} ({c}x{h}x{w})", "n": n, "batch": source.batch_size, "streamed": source.streamed,
                     "extract": model.extract_time_, "fit": model.fit_time_, "search": search_s / len(search.table),
                     "refine": refine_s, "edit": edit_s, "rss": rss_mb(), "stages": stages})
    device = device_label(args.device)
    lines = [f"# PandA on a {args.resolution} px StyleGAN2 (random weights)", "",
             f"Device: {device}; torch {torch.__version__}; config-f widths; R_C = C, R_S = 8. One forward pass of one "
             f"image: {1000 * forward_s:.0f} ms. Extraction: the generator's passes to the layer (batch chosen from the "
             "image size); fit: statistics and factorisation; search: one background candidate (appearance and sign) on "
             "2 samples, all parts; refinement and edit: one image. Peak RSS is the process's so far.", ""]
    lines += table(["layer", "N", "batch", "extract s", "fit s", "search s / candidate", "refine s / image",
                    "edit ms (x forward)", "peak RSS MB"],
                   [[r["layer"], str(r["n"]), f"{r['batch']}{' (streamed)' if r['streamed'] else ''}", f"{r['extract']:.1f}",
                     f"{r['fit']:.1f}", f"{r['search']:.1f}", f"{r['refine']:.2f}",
                     f"{1000 * r['edit']:.0f} ({r['edit'] / forward_s:.1f}x)", f"{r['rss']:.0f}"] for r in rows])
    staged = [r for r in rows if r["stages"] is not None]
    if staged:
        header, cells = stage_columns([r["stages"] for r in staged])
        lines += ["", "Where the fit's time goes: the same fit again on the kept features, each stage timed with the "
                  "device synchronised around it (`common.staged_fit`); rest: Python between the stages and "
                  "`PandA.fit`'s pass for the coefficients' moments.", ""]
        lines += table(["layer", "N"] + header, [[r["layer"], str(r["n"])] + c for r, c in zip(staged, cells)])
    text = "\n".join(lines) + "\n"
    print(text)
    write_keeping_notes(args.out, text)


if __name__ == "__main__":
    main()
