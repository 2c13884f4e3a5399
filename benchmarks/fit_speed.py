"""Fit speed: panda's learning-rate-free fit against the authors' projected-gradient scheme.

For each generator, layer and N, in a fresh subprocess (so peak memory is that run's own):
feature extraction time (generator forward passes only), fit time (every pass over the kept
features, statistics included), passes over the data, held-out relative error on 512 other
samples, peak resident memory; then the authors' scheme (HOSVD init, P ~ U[0, 0.01], plain
gradient steps, P clamped at 0) on the same N samples, batches of 8, at the paper code's lr
(1e-8) and at the best lr found for this DCGAN family (1e-4, see shared notes), in the same process.

    python benchmarks/fit_speed.py                 # all configurations, writes benchmarks/fit_speed.md
    python benchmarks/fit_speed.py --quick         # one small configuration
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [("dcgan-celeba", "relu2"), ("dcgan-celeba", "relu3"), ("dcgan-digiface", "main.5"), ("dcgan-digiface", "main.8")]
HELDOUT = 512


def one(generator: str, layer: str, n: int, rank_parts: int, official_iters: int) -> dict:
    import torch

    import panda
    from panda.factorisation import data_stats, panda_factorise, projected_gradient_factorise, relative_error
    from panda.features import FeatureSource

    torch.manual_seed(0)
    g = panda.load_generator(generator)
    c, h, w = g.layer_shapes()[layer]
    held = FeatureSource.heldout(g, layer, HELDOUT)

    source = FeatureSource(g, layer, range(n))
    for _ in source:  # the first pass generates the features and keeps them in memory
        pass
    extract = source.extract_time

    t = time.perf_counter()
    stats = data_stats(source, grid=(h, w))  # as PandA.fit: border statistics included
    res = panda_factorise(source, c, rank_parts, stats=stats)
    fit = time.perf_counter() - t
    ours = relative_error(held, res.appearances, res.parts)

    feats = torch.cat(list(source))
    official = {}
    for lr in (1e-8, 1e-4):
        t = time.perf_counter()
        a, p = projected_gradient_factorise(feats, c, rank_parts, lr=lr, n_iter=official_iters, batch_size=8)
        official[f"{lr:g}"] = {"time": time.perf_counter() - t, "heldout": relative_error(held, a, p)}
    return {
        "generator": generator, "layer": layer, "shape": [c, h, w], "n": n, "rank_parts": rank_parts,
        "extract_s": extract, "fit_s": fit, "passes": res.n_passes + 1, "iterations": len(res.errors),
        "heldout": ours, "feature_mb": feats.numel() * 4 / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "official_iters": official_iters, "official": official,
    }


def table(rows: list[dict]) -> str:
    out = ["| generator | layer (C x H x W) | N | extract s | fit s | fit / extract | passes | held-out error | peak RSS MB (features MB) "
           "| official lr=1e-8: s, error | official lr=1e-4: s, error | speed-up vs 1e-8 | speed-up vs 1e-4 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o8, o4 = r["official"]["1e-08"], r["official"]["0.0001"]

        def speed(o):  # only meaningful where our error is at least as low as theirs
            return f"{o['time'] / r['fit_s']:.0f}x" if r["heldout"] <= o["heldout"] else "not reached"

        out.append(f"| {r['generator']} | {r['layer']} ({'x'.join(map(str, r['shape']))}) | {r['n']} | {r['extract_s']:.2f} "
                   f"| {r['fit_s']:.2f} | {r['fit_s'] / r['extract_s']:.2f} | {r['passes']} | {r['heldout']:.4f} "
                   f"| {r['peak_rss_mb']:.0f} ({r['feature_mb']:.0f}) | {o8['time']:.1f}, {o8['heldout']:.4f} "
                   f"| {o4['time']:.1f}, {o4['heldout']:.4f} | {speed(o8)} | {speed(o4)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="1000,5000", help="sample counts")
    ap.add_argument("--rank-parts", type=int, default=12)
    ap.add_argument("--official-iters", type=int, default=10_000, help="iterations of the authors' scheme (their code runs 10,000)")
    ap.add_argument("--quick", action="store_true", help="one small configuration")
    ap.add_argument("--out", default=str(Path(__file__).with_name("fit_speed.md")))
    ap.add_argument("--one", nargs=3, metavar=("GENERATOR", "LAYER", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        gen, layer, n = args.one
        print(json.dumps(one(gen, layer, int(n), args.rank_parts, args.official_iters)))
        return
    configs = [(g, l, n) for g, l in CONFIGS for n in map(int, args.ns.split(","))]
    if args.quick:
        configs, args.official_iters = [("dcgan-digiface", "main.5", 500)], 300
    rows = []
    for gen, layer, n in configs:
        print(f"{gen} {layer} N={n} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--one", gen, layer, str(n), "--rank-parts", str(args.rank_parts),
               "--official-iters", str(args.official_iters)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    md = table(rows)
    print(md)
    if not args.quick:
        import platform
        import torch
        header = (f"# Fit speed\n\nMade by `python benchmarks/fit_speed.py` on {torch.get_num_threads()} CPU thread(s), "
                  f"torch {torch.__version__}, {platform.processor() or platform.machine()}. R_C = C, R_S = {args.rank_parts}; "
                  f"held-out error on {HELDOUT} samples never used for fitting; the authors' scheme runs "
                  f"{args.official_iters} iterations of batch 8 drawn from the same N kept feature maps. "
                  "Speed-up = the official scheme's time / panda's fit time, given only where panda's held-out error is "
                  "at least as low as the official scheme's final one.\n\n")
        Path(args.out).write_text(header + md + "\n")
        print(f"\nwritten to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
