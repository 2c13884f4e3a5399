"""What racing saves in the global background search, and whether it picks what trying every fill picks.

The search ``panda fit`` stores (``panda.removal.find_background``: every part, 8 calibration seeds) tries the 16
strongest appearances with both signs: 32 fills. Without racing each fill is measured on every sample; with racing
(the default) every fill is measured on the first ``RACE_SCREEN`` samples and only the best ``RACE_KEEP`` on the
rest. For each row this fits PandA (R_C = C, the generator's R_S, 2,000 samples) and runs the search both ways on
three sets of 8 seeds: the seconds, the picks, and the rank the exhaustive pick had after the screening samples;
then how far the global pick and each image's own best fill move parts' colour on new images.

    python benchmarks/background_search.py          # prints a Markdown table, writes benchmarks/background_search.md
    python benchmarks/background_search.py --rows dcgan-celeba --no-write
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch

from common import table, timed
from panda.fitting import fit_factors
from panda.removal import (BACKGROUND_SEED_START, RACE_KEEP, RACE_SCREEN, fill_distances, find_background,
                           removable_parts)

ROWS = "dcgan-celeba,dcgan-celeba:relu3,dcgan-digiface,dcgan-digiface:main.8,dcgan-eyes"
N_FIT, N_GLOBAL, N_SETS, N_NEW = 2000, 8, 3, 16
NEW_SEED_START = 2_100_000_000


def _pick(search) -> str:
    return f"{'+' if search.sign > 0 else '-'}{search.appearance} ({search.gain:.3f})"


def measure(name: str, layer: str | None = None) -> dict:
    torch.manual_seed(0)
    g = panda.load_generator(name)
    model = fit_factors(g, layer, n_samples=N_FIT, n_heldout=0, background_samples=0)
    out = {"row": f"{name} ({model.layer_}, R_S = {model.n_parts})", "full_s": [], "raced_s": [], "picks": [],
           "ranks": []}
    for t in range(N_SETS):
        seeds = range(BACKGROUND_SEED_START + t * N_GLOBAL, BACKGROUND_SEED_START + (t + 1) * N_GLOBAL)
        full, full_s = timed(lambda: find_background(model, g, seeds, race=False), "cpu")
        raced, raced_s = timed(lambda: find_background(model, g, seeds), "cpu")
        screen = find_background(model, g, seeds[:RACE_SCREEN], race=False)
        out["ranks"].append([(j, s) for j, s, _ in screen.ranked()].index((full.appearance, full.sign)))
        out["full_s"].append(full_s)
        out["raced_s"].append(raced_s)
        out["picks"].append(f"{_pick(full)} / {_pick(raced)}")
        if t == 0:
            pick = (raced.appearance, raced.sign)
    out["global"], out["own"] = new_images(model, g, pick)
    return out


def new_images(model, g, pick) -> tuple[float, float]:
    """On N_NEW seeds the search never saw, every part removed with the global ``pick`` and with each image's own best
    of the 32 fills (what ``remove --background auto`` and the explorer's default do): the mean over parts of the share
    of the way the part's colour moves towards its surroundings (1 - sum of distances after / before over images)."""
    latents = g.latents(range(NEW_SEED_START, NEW_SEED_START + N_NEW))
    original = g.render(latents)
    regions, marks = removable_parts(model, N_NEW, original.shape[-1])
    order = torch.argsort(model.appearance_energy_, descending=True)[:16].tolist()
    fills = [(j, s) for j in order for s in (1.0, -1.0)]
    found = fill_distances(model, g, latents, original, regions, marks, fills)
    before = found[pick][0]  # (parts, images), the same for every fill
    after = torch.stack([found[f][1] for f in fills])  # (fills, parts, images)
    share = lambda a: float((1 - a.sum(1) / before.sum(1)).mean())  # noqa: E731
    return share(found[pick][1]), share(after.min(0).values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=ROWS, help=f"generators, each with :LAYER for another than its default (default: {ROWS})")
    ap.add_argument("--no-write", action="store_true", help="print the table only, keep the .md file as it is")
    args = ap.parse_args()
    rows = [measure(*row.split(":", 1)) for row in args.rows.split(",")]
    header = ["generator (layer)", f"all fills on {N_GLOBAL} samples: s", "raced: s",
              "picks, all fills / raced: sign and appearance (gain)", f"exhaustive pick's rank after {RACE_SCREEN} samples",
              f"{N_NEW} new images: gain of the global pick / of each image's own best fill"]
    lines = table(header, [[r["row"], " / ".join(f"{x:.1f}" for x in r["full_s"]), " / ".join(f"{x:.1f}" for x in r["raced_s"]),
                            "; ".join(r["picks"]), ", ".join(map(str, r["ranks"])),
                            f"{r['global']:.3f} / {r['own']:.3f}"] for r in rows])
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        intro = (f"# Background search: racing against trying every fill\n\nMade by `python benchmarks/background_search.py` "
                 f"on {torch.get_num_threads()} CPU thread(s), torch {torch.__version__}, {platform.machine()}. The search "
                 f"tries 32 fills (16 appearances, both signs). Racing measures all of them on the first {RACE_SCREEN} "
                 f"samples and the best {RACE_KEEP} on the rest; a pick is written sign then appearance, its gain the "
                 f"mean share of the way its fill moves a region's colour towards the band around it (1: all the way). "
                 f"Three sets of {N_GLOBAL} calibration seeds per row, from {BACKGROUND_SEED_START} on (the first is the "
                 f"one `panda fit` uses). Rank 0: the exhaustive pick was already first after the screening samples; "
                 f"racing keeps it while its rank is below {RACE_KEEP}. Last column: on {N_NEW} seeds from {NEW_SEED_START} on, "
                 f"each part removed with the first set's raced pick, and with each image's own best fill "
                 f"(`panda remove --background auto`, the explorer's default).\n\n")
        out = Path(__file__).with_name("background_search.md")
        out.write_text(intro + text + "\n")
        print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
