"""Sample size: how many samples does a fit need?

For each face generator at its default layer and R_S (and at R_S = 12), a reference fit on 20,000 samples, then fits
on N = 250 .. 10,000 other samples (disjoint from the reference's). Each is scored on 1,024 held-out samples and
compared with the reference (:func:`panda.comparison.compare`): its parts matched one to one by the cosine
similarity of their maps, and the overlap of the leading appearances' subspaces.

    python benchmarks/sample_size.py          # about 2 minutes on 2 CPU cores; writes benchmarks/sample_size.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import device_label, write_report

from panda.comparison import compare
from panda.features import FeatureSource
from panda.generators import load_registered
from panda.model import PandA

GENERATORS = ("dcgan-celeba", "dcgan-digiface")
N_REFERENCE, N_HELDOUT = 20_000, 1024
SIZES = (250, 500, 1000, 2000, 5000, 10_000)
FIRST = 1_000_000  # the compared fits' seeds start here, far from the reference's 0..N_REFERENCE-1
NOTES = """## Notes

- **Held-out error**: within 0.003 of the reference's at every N from 250 on. At an 8 x 8 layer the parts are few
  numbers (S x R_S = 64 x R_S) fitted to an S x S statistic that a few hundred samples already estimate well.
- **Parts**: at R_S = 12 every part matches the reference's (0.9 or more) from 1,000 samples on (from 500 on
  dcgan-digiface); at R_S = 24 on dcgan-digiface from 5,000 on (19-22 of 24 on 500-2,000). At R_S = 40 on dcgan-celeba
  no N reproduces all of the reference's parts (19-37 of 40), and fits on fewer samples reach a lower held-out error than the reference (10,000: -0.0027): the
  several nearly equal solutions of `benchmarks/stability.md`. There, which solution a fit lands on matters more than
  N.
- **Appearances**: the 8 leading ones overlap the reference's by 0.93 or more from 250 samples on.
- `panda fit` defaults to 5,000 samples: more than the error needs at these layers, about what the parts need.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    args = ap.parse_args()
    rows = []
    start = time.perf_counter()
    for name in GENERATORS:
        g = load_registered(name, args.device)
        layer = g.default_layer
        heldout = FeatureSource.heldout(g, layer, N_HELDOUT)
        for rank in sorted({12, g.rank_parts_for(layer)}):
            reference = PandA(rank_parts=rank).fit(FeatureSource(g, layer, range(N_REFERENCE)))
            ref_error = reference.score(heldout)
            for n in SIZES + (N_REFERENCE,):
                if n == N_REFERENCE:
                    model, label = reference, f"{n:,} (the reference)"
                else:
                    model, label = PandA(rank_parts=rank).fit(FeatureSource(g, layer, range(FIRST, FIRST + n))), f"{n:,}"
                    model.score(heldout)
                c = compare(reference, model)
                overlap = dict(zip(c.ks, c.overlap))
                rows.append([name, layer, str(rank), label, f"{model.heldout_error_:.4f}",
                             f"{model.heldout_error_ - ref_error:+.4f}", f"{sum(c.matched) / len(c.matched):.2f}",
                             f"{sum(s >= 0.9 for s in c.matched)} of {rank}", f"{overlap[8]:.3f}", f"{overlap[32]:.3f}"])
                print(" | ".join(rows[-1]), flush=True)
    intro = (f"Made by `python benchmarks/sample_size.py` on {device_label(args.device)} in "
             f"{time.perf_counter() - start:.0f} s. PandA (R_C = C) at each generator's default layer, on N samples "
             f"(seeds from {FIRST:,}), against a reference fit on {N_REFERENCE:,} (seeds 0..{N_REFERENCE - 1:,}); "
             f"held-out error on {N_HELDOUT:,} other samples and its difference from the reference's. Parts: the "
             "matched pairs' mean cosine similarity to the reference's and how many reach 0.9. Appearances: the "
             "overlap of the 8 and 32 leading ones with the reference's (1: the same subspace).")
    write_report(args.out, "Sample size: how many samples a fit needs", intro,
                 ["generator", "layer", "R_S", "N", "held-out error", "vs reference", "parts: mean similarity",
                  ">= 0.9", "appearances: top 8", "top 32"], rows, NOTES)


if __name__ == "__main__":
    main()
