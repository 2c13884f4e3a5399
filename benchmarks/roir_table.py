"""Regenerates benchmarks/roir_table.md and benchmarks/roir/<generator>/ with one command (issue 11):

    python benchmarks/roir_table.py                  # both face generators (N = 1100 test seeds) + setup cost, CPU
    python benchmarks/roir_table.py --device cuda    # the same, and the setup cost at 1024 px too

Every number comes from ``panda bench roir`` (:func:`panda.evaluation.run_roir`) and ``panda bench setup-cost``
(:func:`panda.setup_cost.time_setup`); this script only runs them with the table's settings and joins their tables
under the notes below. About 17 minutes per generator and 4 for the setup cost on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import device_label

import panda  # noqa: F401  (before torch)
from panda.checkpoints import random_stylegan2
from panda.evaluation import run_roir
from panda.generators import load_registered
from panda.setup_cost import time_setup
from panda.tables import markdown, setup_cost_markdown, write_outputs

HERE = Path(__file__).resolve().parent
GENERATORS = ("dcgan-celeba", "dcgan-digiface")
NOTES = Path(HERE / "roir_notes.md")


def summary(results) -> list[str]:
    """Who has the lowest ROIR (first dilation) in each cell, and how often each method does."""
    lines, wins, cells = [], {}, 0
    for res in results:
        for region in ("eyes", "nose", "mouth"):
            scored = [(r.score("ROIR")[0], r.method) for r in res.rows if r.region == region and r.available and r.chosen]
            if not scored:
                continue
            best = min(scored)
            cells += 1
            wins[best[1]] = wins.get(best[1], 0) + 1
            lines.append(f"{res.generator} {region}: {best[1]} ({best[0]:.2f})")
    counts = ", ".join(f"{m} in {k}" for m, k in sorted(wins.items(), key=lambda mk: -mk[1]))
    return [f"Lowest ROIR per cell (masks +2 px), of {cells}: {counts}; " + "; ".join(lines) + "."]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=1100, help="test seeds per generator")
    args = ap.parse_args()
    results, sections, t0 = [], [], time.perf_counter()
    for name in GENERATORS:
        res = run_roir(load_registered(name, args.device), n=args.n)
        write_outputs(res, HERE / "roir" / name)
        results.append(res)
        sections.append(markdown(res))
        print(sections[-1], flush=True)
    costs = []
    for resolution, device in [(256, "cpu")] + ([(1024, args.device)] if args.device.startswith("cuda") else []):
        g = random_stylegan2(resolution).to(device)
        costs.append(time_setup(g, g.default_layer, n_train=1000, progress=True))
    cost_text = setup_cost_markdown(costs)
    print(cost_text)
    out = HERE / "roir_table.md"
    head = NOTES.read_text() if NOTES.exists() else "# ROIR benchmark\n"
    text = (head.rstrip() + "\n\n" + "\n".join(summary(results)) + "\n\n"
            + f"## Setup cost at StyleGAN2 size\n\n{cost_text}\n\n"
            + "\n\n".join(f"## {res.generator}\n\n{sec}" for res, sec in zip(results, sections)) + "\n\n"
            + f"Measured on {device_label(args.device)} in {(time.perf_counter() - t0) / 60:.0f} minutes.\n")
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
