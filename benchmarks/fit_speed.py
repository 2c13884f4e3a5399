"""Fit speed: panda's learning-rate-free fit against the authors' projected-gradient scheme.

For each generator, layer and N, in a fresh subprocess (so peak memory is that run's own):
feature extraction time (generator forward passes only), fit time (every pass over the kept
features, statistics included), passes over the data, held-out relative error on 512 other
samples, peak memory (resident, and the GPU's when on one); then the authors' scheme (HOSVD init,
P ~ U[0, 0.01], plain gradient steps, P clamped at 0) on the same N samples, batches of 8, at each
learning rate of ``--lrs`` (the paper code's is 1e-8), in the same process.

    python benchmarks/fit_speed.py                                    # CPU table -> benchmarks/fit_speed.md
    python benchmarks/fit_speed.py --device cuda --ns 50000 --out benchmarks/fit_speed_cuda.md
    python benchmarks/fit_speed.py --generator my.pkl --layer synthesis.b64.conv1 --ns 1000
    python benchmarks/fit_speed.py --quick                            # one small configuration
    python benchmarks/fit_speed.py --layers relu2,main.5              # some rows of the table (printed, not written)
    python benchmarks/fit_speed.py --device cuda --ns 50000 --lrs cpu-best   # 1e-8 and each row's best on the CPU

``--lrs cpu-best`` runs the authors' scheme at 1e-8 and at the learning rate that was best for the same generator
and layer in the CPU table (``benchmarks/fit_speed.md``, swept over 1e-8..1e-3): where the optimum lies depends on
the features' scale, not on the device, and the full sweep (six runs of 10,000 steps a row) does not fit in a GPU
session's time. Rows the CPU table lacks get the full sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

# 8x8 and 16x16 (the issue's rows), then 32x32 (S = 1024) and 64x64 (S = 4096, the DCGANs' RGB layer before tanh)
CONFIGS = [("dcgan-celeba", "relu2"), ("dcgan-celeba", "relu3"), ("dcgan-digiface", "main.5"), ("dcgan-digiface", "main.8"),
           ("dcgan-celeba", "relu4"), ("dcgan-celeba", "convTr5"), ("dcgan-digiface", "main.11"), ("dcgan-digiface", "main.12")]
HELDOUT = 512
LRS = "1e-8,1e-7,1e-6,1e-5,1e-4,1e-3"
PAPER_LR = 1e-8
BEST_COLUMN = "official, best lr: s, error"


def cpu_best_lrs(path: Path = Path(__file__).with_name("fit_speed.md")) -> dict[tuple[str, str], float]:
    """(generator, layer) -> the authors' best learning rate in the CPU table at ``path`` (its "official, best lr"
    column, e.g. "1e-05: 24.2, 0.4020")."""
    best, column = {}, None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if BEST_COLUMN in cells:
            column = cells.index(BEST_COLUMN)
        elif column is not None and len(cells) > column and not set(cells[0]) <= set("-"):
            best[(cells[0], cells[1].split(" ")[0])] = float(cells[column].split(":")[0])
    if not best:
        raise SystemExit(f"{path} holds no table with a '{BEST_COLUMN}' column: run the CPU table first, or give --lrs.")
    return best


def lrs_for(spec: str, generator: str, layer: str) -> list[float]:
    """The learning rates of ``--lrs`` for one row: a comma-separated list, or ``cpu-best``."""
    if spec != "cpu-best":
        return [float(v) for v in spec.split(",")]
    best = cpu_best_lrs().get((generator, layer))
    return [float(v) for v in LRS.split(",")] if best is None else sorted({PAPER_LR, best})


def one(generator: str, layer: str, n: int, rank_parts: int, official_iters: int, lrs: list[float], device: str,
        repeat: int = 3, mixing_directions: int = 32, n_init: int = 4, reseed: int = 0) -> dict:
    import panda  # first: its OpenMP setting applies only if torch is not loaded yet
    import torch
    import panda.factorisation as fac  # looked up at each call, so staged_fit's wrappers are what a fit calls
    from panda.factorisation import projected_gradient_factorise, relative_error
    from panda.features import FeatureSource
    from panda.generators import synchronize
    from common import staged_fit, timed

    torch.manual_seed(0)
    # A learning rate that shrinks P to nothing leaves denormal floats, which x86 CPUs compute 10-100x slower than
    # normal ones (GPUs do not): flushing them to zero keeps each run's time about its arithmetic.
    torch.set_flush_denormal(True)
    g = panda.load_generator(generator, device)
    c, h, w = g.layer_shapes()[layer]
    held = FeatureSource.heldout(g, layer, HELDOUT)

    source = FeatureSource(g, layer, range(n))
    for _ in source:  # the first pass generates the features and keeps them in memory
        pass
    extract = source.extract_time

    def fit_once(mixing: bool = False, directions: int | None = None):
        """One fit from scratch, statistics included as in PandA.fit."""
        stats = fac.data_stats(source, grid=(h, w))  # border statistics included
        return fac.panda_factorise(source, c, rank_parts, stats=stats, mixing=mixing, mixing_directions=directions,
                                   n_init=n_init, reseed=reseed)

    def timed_fit(mixing: bool, directions: int | None = None):
        """(result, median seconds, held-out error) of ``repeat`` identical fits from scratch. A few-second run moves
        by 20-30% with the machine's other load; the official runs, at 15-85 s each, average it out themselves."""
        res, seconds = timed(lambda: fit_once(mixing, directions), device, repeat)
        return res, seconds, relative_error(held, res.appearances, res.parts, res.mixing)

    res, fit, ours = timed_fit(False)
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    stages = staged_fit(fit_once, device)  # one more plain fit, its stages timed
    # the same fit with an appearance mixing W (the authors' model class, A' A'^T = A W A^T)
    _, mixed_fit, mixed_heldout = timed_fit(True)
    # and with W's eigenvalues refitted along its mixing_directions directions of most energy only (the rest share one)
    few_fit, few_heldout = None, None
    if mixing_directions < c:
        _, few_fit, few_heldout = timed_fit(True, mixing_directions)
    feats = torch.cat(list(source))
    official = {}
    for lr in lrs:
        synchronize(device)
        t = time.perf_counter()
        a, p = projected_gradient_factorise(feats, c, rank_parts, lr=lr, n_iter=official_iters, batch_size=8)
        synchronize(device)
        err = relative_error(held, a, p)
        official[f"{lr:g}"] = {"time": time.perf_counter() - t, "heldout": err if math.isfinite(err) else None}
    return {
        "generator": generator, "layer": layer, "shape": [c, h, w], "n": n, "rank_parts": rank_parts,
        "extract_s": extract, "fit_s": fit, "passes": res.n_passes + 1, "iterations": len(res.errors),
        "heldout": ours, "mixing_fit_s": mixed_fit, "mixing_heldout": mixed_heldout,
        "mixing_directions": mixing_directions, "mixing_few_fit_s": few_fit, "mixing_few_heldout": few_heldout,
        "feature_mb": feats.numel() * 4 / 2**20, "gpu_peak_mb": gpu_peak,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "official_iters": official_iters, "official": official, "stages": stages,
    }


def table(rows: list[dict]) -> str:
    from common import table as md

    def err(e):
        return "diverged" if e is None else f"{e:.4f}"

    out = []
    for r in rows:
        runs = r["official"]
        paper = runs.get("1e-08")
        lr, best = min(runs.items(), key=lambda kv: math.inf if kv[1]["heldout"] is None else kv[1]["heldout"])
        # panda's fastest fit (plain, mixing with all directions or with fewer) among those at least as good as the
        # authors' best run
        fits = [(r[f"{k}fit_s"], r[f"{k}heldout"]) for k in ("", "mixing_", "mixing_few_") if r.get(f"{k}fit_s") is not None]
        ok = [f for f in fits if best["heldout"] is None or f[1] <= best["heldout"]]
        mixed = f"all: {r['mixing_fit_s']:.2f}, {r['mixing_heldout']:.4f}"
        if r.get("mixing_few_fit_s") is not None:
            mixed += f"; {r['mixing_directions']}: {r['mixing_few_fit_s']:.2f}, {r['mixing_few_heldout']:.4f}"
        gpu = "" if r["gpu_peak_mb"] is None else f"; GPU {r['gpu_peak_mb']:.0f}"
        out.append([r["generator"], f"{r['layer']} ({'x'.join(map(str, r['shape']))})", str(r["n"]), f"{r['extract_s']:.2f}",
                    f"{r['fit_s']:.2f}", f"{r['fit_s'] / r['extract_s']:.2f}", str(r["passes"]), f"{r['heldout']:.4f}",
                    mixed,
                    f"{r['peak_rss_mb']:.0f} ({r['feature_mb']:.0f}){gpu}",
                    "-" if paper is None else f"{paper['time']:.1f}, {err(paper['heldout'])}",
                    f"{lr}: {best['time']:.1f}, {err(best['heldout'])}",
                    f"{best['time'] / min(ok)[0]:.1f}x" if ok
                    else f"not reached ({min(f[1] for f in fits) - best['heldout']:+.4f})"])
    return "\n".join(md(["generator", "layer (C x H x W)", "N", "extract s", "fit s", "fit / extract", "passes",
                         "held-out error", "with mixing (directions): fit s, held-out error", "peak MB: RSS (features)", "official lr=1e-8: s, error",
                         "official, best lr: s, error", "speed-up vs best"], out))


def stages_table(rows: list[dict]) -> str:
    """Where each row's plain fit spends its time (``common.staged_fit``), seconds and shares."""
    from common import stage_columns, table as md
    staged = [r for r in rows if "stages" in r]
    header, cells = stage_columns([r["stages"] for r in staged])
    out = [[r["generator"], f"{r['layer']} ({'x'.join(map(str, r['shape']))})", str(r["n"])] + c
           for r, c in zip(staged, cells)]
    return "\n".join(md(["generator", "layer (C x H x W)", "N"] + header, out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="5000", help="sample counts, comma-separated")
    ap.add_argument("--rank-parts", type=int, default=12)
    ap.add_argument("--official-iters", type=int, default=10_000, help="iterations of the authors' scheme (their code runs 10,000)")
    ap.add_argument("--lrs", default=LRS, help="learning rates of the authors' scheme, or cpu-best (1e-8 and each row's "
                    "best in the CPU table); the table gives 1e-8 and the best")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3, help="panda's fits are timed this many times; the median is given")
    ap.add_argument("--generator", help="a registered name or a checkpoint path (with --layer) instead of the DCGAN table")
    ap.add_argument("--layer", help="the layer for --generator (default: the generator's default layer)")
    ap.add_argument("--layers", help="only these rows of the DCGAN table, by layer name, comma-separated (e.g. "
                                     "relu2,relu3,main.5,main.8: the issue's rows)")
    ap.add_argument("--mixing-directions", type=int, default=32,
                    help="the mixing fit is also timed with W's eigenvalues refitted along this many directions")
    ap.add_argument("--n-init", type=int, default=4, help="panda's random starts of the parts (its default: 4)")
    ap.add_argument("--reseed", type=int, default=0, help="panda's re-seeding rounds after the starts (default: none)")
    ap.add_argument("--quick", action="store_true", help="one small configuration")
    ap.add_argument("--out", default=None, help="markdown file (default benchmarks/fit_speed.md on CPU, none otherwise)")
    ap.add_argument("--one", nargs=3, metavar=("GENERATOR", "LAYER", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        gen, layer, n = args.one
        lrs = lrs_for(args.lrs, gen, layer)
        print(json.dumps(one(gen, layer, int(n), args.rank_parts, args.official_iters, lrs, args.device, args.repeat,
                             args.mixing_directions, args.n_init, args.reseed)))
        return
    pairs = CONFIGS
    if args.layers:
        wanted = args.layers.split(",")
        unknown = [name for name in wanted if name not in {layer for _, layer in CONFIGS}]
        if unknown:
            ap.error(f"--layers: {', '.join(unknown)} not in the DCGAN table ({', '.join(l for _, l in CONFIGS)}); "
                     "for another generator or layer give --generator and --layer")
        pairs = [(g, l) for g, l in CONFIGS if l in wanted]
    if args.generator:
        layer = args.layer
        if layer is None:
            import panda
            layer = panda.load_generator(args.generator).default_layer
        pairs = [(args.generator, layer)]
    configs = [(g, l, n) for g, l in pairs for n in map(int, args.ns.split(","))]
    if args.quick:
        configs, args.official_iters, args.lrs = [("dcgan-digiface", "main.5", 500)], 300, "1e-8,1e-4"
    out = args.out or (None if args.quick or args.generator or args.layers or args.device != "cpu"
                       else str(Path(__file__).with_name("fit_speed.md")))  # the whole CPU table only
    rows = []
    for gen, layer, n in configs:
        print(f"{gen} {layer} N={n} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--one", gen, layer, str(n), "--rank-parts", str(args.rank_parts),
               "--official-iters", str(args.official_iters), "--lrs", args.lrs, "--device", args.device,
               "--repeat", str(args.repeat), "--mixing-directions", str(args.mixing_directions),
               "--n-init", str(args.n_init), "--reseed", str(args.reseed)]
        # the child's stderr passes through: its warnings (a failed CUDA-graph capture) and errors reach the log
        rows.append(json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout))
        md = table(rows) + STAGES_INTRO + stages_table(rows)
        if out:  # after every row, so a run cut short (a device's time limit) keeps the rows it finished
            write(out, args, md, done=len(rows) == len(configs))
    print(md)
    if out:
        print(f"\nwritten to {out}", file=sys.stderr)


STAGES_INTRO = ("\n\nWhere the plain fit's time goes: one more fit of each row, each stage timed with the device "
                "synchronised around it (`staged_fit`); rest: Python and the work between the stages.\n\n")


def lr_text(spec: str) -> str:
    if spec == "cpu-best":
        return (f"{PAPER_LR:g} and the row's best in the CPU table (`benchmarks/fit_speed.md`, swept over "
                f"{LRS.replace(',', ', ')}; the full sweep where it has no such row)")
    return ", ".join(f"{float(v):g}" for v in spec.split(","))


def write(out: str, args, md: str, done: bool) -> None:
    import torch
    from common import device_label, write_keeping_notes
    header = (f"# Fit speed\n\nMade by `python {' '.join(['benchmarks/fit_speed.py'] + sys.argv[1:])}` on "
              f"{device_label(args.device)}, torch {torch.__version__}. R_C = C, R_S = {args.rank_parts}; held-out error "
              f"on {HELDOUT} samples never used for fitting; panda's parts from {args.n_init} random starts"
              + (f" and up to {args.reseed} re-seeding rounds" if args.reseed else "")
              + f"; the authors' scheme runs {args.official_iters} iterations "
              f"of batch 8 drawn from the same N kept feature maps, at each learning rate of {lr_text(args.lrs)} "
              "(the table gives the paper code's 1e-8 and the best). \"With mixing\": the same fit with `mixing=True` "
              "(reconstruction A W A^T Z P P^T, the model class of the authors' code, whose A is not kept orthonormal), "
              f"timed from scratch, statistics included, refitting all of W's eigenvalues, then only {args.mixing_directions} "
              "(`mixing_directions`: those of the directions of most energy, the rest sharing one) where C is larger. "
              f"panda's fit times are the median of {args.repeat} runs. Speed-up = the best official run's time / the "
              "time of panda's fastest fit (plain or with mixing) whose held-out error is at least as low; otherwise "
              "the excess error.\n\n")
    write_keeping_notes(out, header + md + "\n" + ("" if done else "\n(unfinished: the run stopped before its last rows)\n"))

if __name__ == "__main__":
    main()
