"""Stability: how much of a fit's parts and appearances comes back with another random start, or other samples?

For each face generator at its default layer and each R_S, fits (R_C = C) compared with a reference (samples
0..N-1, random_state 0): a restart (the same samples, random_state 1000: only the parts' random starts differ), one
sample changed (samples 1..N), and three resamples (samples kN..(k+1)N-1, k = 1, 2, 3). Each comparison
(:func:`panda.comparison.compare`) matches the parts one to one by the cosine similarity of their maps, and measures
the overlap of the leading appearances' subspaces (1: the same; k / C by chance). Each setting's ranks share one
statistics pass (:func:`rank_sweep`).

    python benchmarks/stability.py            # about 4 minutes on 2 CPU cores; writes benchmarks/stability.md
"""

from __future__ import annotations

import time
from pathlib import Path

from common import device_label, fit_arguments, spread, write_report

from panda.comparison import compare
from panda.features import FeatureSource
from panda.generators import load_registered
from panda.selection import rank_sweep

GENERATORS = ("dcgan-celeba", "dcgan-digiface")
RANKS = (12, 24, 40)
STARTS = {"4": (4, 0), "16": (16, 0), "4 + reseed 8": (4, 8)}  # label -> (n_init, reseed)
NOTES = """## Notes

- **The parts are not unique.** Restarted from other random starts on the same samples, a fit finds parts of nearly the
  same error that differ: at R_S = 24 and 40, 8-28 of the parts come back (0.9 or more), and at R_S = 12 all of them on
  dcgan-celeba but 6-9 of 12 on dcgan-digiface. The objective has many nearly equal solutions, which split the same
  regions differently (two small parts in one fit against one larger in the other: `panda compare A B` draws them side
  by side).
- **One sample changed** moves nothing, except dcgan-celeba at R_S = 40 with 4 starts (21 of 40 back): that fit sat
  on the edge between two solutions. With 16 starts it lands on a better one (training error 0.1477 against 0.1524)
  that one sample no longer moves. Elsewhere 16 starts lower the error by 0.0003 at most, and they do not make the
  parts more reproducible on other samples (dcgan-celeba at R_S = 24: 0.77 against 0.98).
- **The leading appearances** come back in every row (top 8: 0.91-1.00 against 0.031 by chance): they are the
  eigenvectors of the channel statistics, which the parts barely change at R_C = C.
- **Re-seeding** (`--reseed 8`: rounds that move the weakest parts to where the fit misses most,
  `benchmarks/reseed.md`) lowers the reference's error at R_S = 24 and 40 on both generators (dcgan-digiface R_S = 40:
  0.1504 against 0.1552 with 4 or 16 starts). Its parts come back about as often as those of 4 or 16 starts, more
  often in some rows and less in others: on dcgan-digiface at R_S = 40, 32 of 40 after a restart (4 starts: 28,
  16 starts: 24) and 35.0 of 40 on other samples (34.0, 26.7); at R_S = 24, 16 and 19.0 of 24 (15 and 18.0; 21 and
  22.7). On dcgan-celeba at R_S = 40 one changed sample still moves 11 of its 40 parts (4 starts: 19, 16 starts:
  none), at an error (0.1492) between theirs. A lower error does not make the parts unique.
- What to do: before building on one part (an edit, a region's name), `panda compare` the fit with a second one
  (another `--seed`); the parts that come back are the ones to trust. At high R_S, `--reseed 8` or `--n-init 16` is
  worth its cost (about twice the P-step's time).
"""


def main() -> None:
    args = fit_arguments(__doc__, Path(__file__).with_suffix(".md"))
    n = args.n_fit
    rows = []
    start = time.perf_counter()
    for name in GENERATORS:
        g = load_registered(name, args.device)
        layer = g.default_layer
        # the restart's starts are seeds 1000.. : disjoint from the reference's 0..n_init-1
        settings = {"restart": (0, 1000), "one sample changed": (1, 0), "resample 1": (n, 0), "resample 2": (2 * n, 0),
                    "resample 3": (3 * n, 0)}
        for label, (n_init, reseed) in STARTS.items():
            reference = rank_sweep(FeatureSource(g, layer, range(n)), RANKS, random_state=0, n_init=n_init,
                                   reseed=reseed)
            compared = {}  # setting -> [Comparison per rank]
            for setting, (first, state) in settings.items():
                sweep = rank_sweep(FeatureSource(g, layer, range(first, first + n)), RANKS, random_state=state,
                                   n_init=n_init, reseed=reseed)
                compared[setting] = [compare(ref, other) for ref, other in zip(reference.models, sweep.models)]
            for i, rank in enumerate(RANKS):
                for against, group in (("restart", ["restart"]), ("one sample changed", ["one sample changed"]),
                                       ("3 resamples", ["resample 1", "resample 2", "resample 3"])):
                    cmps = [compared[s][i] for s in group]
                    means = [sum(c.matched) / len(c.matched) for c in cmps]
                    at = [sum(x >= 0.9 for x in c.matched) for c in cmps]
                    low = [sum(x < 0.5 for x in c.matched) for c in cmps]
                    top8 = [dict(zip(c.ks, c.overlap))[8] for c in cmps]
                    rows.append([name, layer, str(rank), label, f"{reference.models[i].train_error_:.4f}", against,
                                 spread(means, "{:.2f}"), spread(at, "{}", "{:.1f}") + f" of {rank}",
                                 spread(low, "{}", "{:.1f}") + f" of {rank}", spread(top8, "{:.3f}")])
                    print(" | ".join(rows[-1]), flush=True)
    intro = (f"Made by `python benchmarks/stability.py` on {device_label(args.device)} in "
             f"{time.perf_counter() - start:.0f} s. Each fit: R_C = C, {n:,} samples, at the generator's default layer, "
             "with 4 or 16 random starts of the parts (`--n-init`), or 4 followed by up to 8 rounds that re-seed the "
             "weakest parts (`--reseed 8`); the reference's training error beside it. Compared with the reference fit "
             "(samples 0..N-1, random_state 0): a restart (same samples, starts from seed 1000 on, disjoint from the reference's), one sample changed (samples 1..N) and "
             "three resamples (samples kN..(k+1)N-1; mean and range over the three). Parts: the matched pairs' mean "
             "cosine similarity and how many pairs reach 0.9 or fall below 0.5. Appearances: the overlap of the 8 "
             "leading ones (by energy), ||A_k^T B_k||^2 / k (chance: k / C, 0.031 at C = 256).")
    write_report(args.out, "Stability of parts and appearances across starts and samples", intro,
                 ["generator", "layer", "R_S", "starts", "reference's training error", "against the reference",
                  "parts: mean similarity", ">= 0.9", "< 0.5", "appearances: top 8"], rows, NOTES)


if __name__ == "__main__":
    main()
