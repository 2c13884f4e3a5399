"""A fit on few samples at a 64 x 64 layer, where the P-step runs on a low-rank factor of its statistic
(`factorisation.low_rank_statistic`), on the given device and on the CPU: time and training error of each.

    python benchmarks/small_n_check.py --device cuda      # part of benchmarks/device_check.sh fit
"""

from __future__ import annotations

import argparse

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
from common import timed

from panda.factorisation import panda_factorise
from panda.features import FeatureSource


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--generator", default="dcgan-digiface")
    ap.add_argument("--layer", default="main.12")
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    for device in dict.fromkeys([args.device, "cpu"]):
        g = panda.load_generator(args.generator, device)
        c, h, w = g.layer_shapes()[args.layer]
        source = FeatureSource(g, args.layer, range(args.n))
        for _ in source:  # features kept in memory: the timing is the fit's
            pass
        res, seconds = timed(lambda: panda_factorise(source, c, 12, grid=(h, w)), device)
        print(f"{device}: {args.generator} {args.layer} ({c}x{h}x{w}) N={args.n}: fit {seconds:.2f} s, "
              f"training error {res.errors[-1]:.5f} (M's rank <= N C = {args.n * c} of S = {h * w})")


if __name__ == "__main__":
    main()
