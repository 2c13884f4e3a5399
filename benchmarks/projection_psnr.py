"""How close `panda project` gets: PSNR of the reconstruction of generated images whose true latent is known
(seeds 1000-1003), into W and W+ for StyleGANs at 64-256 px, into z for the bundled DCGANs (64 px).

    python benchmarks/projection_psnr.py                  # CPU -> projection_psnr.md
    python benchmarks/projection_psnr.py --device cuda --out benchmarks/projection_psnr_cuda.md

Generators: the genforce StyleGAN fixture (128 px) and panda's StyleGAN2 at 64 and 256 px with random weights and
narrow channels (random weights: the images are smooth colour fields, easier than faces; trained generators are
needed for figures that mean something about photos); the bundled DCGANs dcgan-celeba and dcgan-digiface (trained
faces; z from the closest 4 of 64 seeds, none of them the true one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch
from common import device_label, table, write_keeping_notes

from panda.generators import GeneratorAdapter
from panda.projection import project
from panda.stylegan2 import Generator

HERE = Path(__file__).resolve().parent
SEEDS = (1000, 1001, 1002, 1003)


def generators(device: str) -> dict:
    def random_sg2(res: int) -> GeneratorAdapter:
        torch.manual_seed(0)
        module = Generator(64, 0, 64, res, 3, channel_base=2048, channel_max=64, mapping_kwargs={"num_layers": 4}).eval()
        return GeneratorAdapter(module, f"sg2-{res}", 64, forward_fn=lambda m, z, c: m(z, c)).to(device)

    # name: (load, the spaces it is projected into)
    return {"StyleGAN (genforce fixture), 128 px": (lambda: panda.load_generator(HERE.parent / "tests/fixtures/stylegan_genforce.pth", device), ("w", "w+")),
            "StyleGAN2 (random, narrow), 64 px": (lambda: random_sg2(64), ("w", "w+")),
            "StyleGAN2 (random, narrow), 256 px": (lambda: random_sg2(256), ("w", "w+")),
            "dcgan-celeba (trained), 64 px": (lambda: panda.load_generator("dcgan-celeba", device), ("z",)),
            "dcgan-digiface (trained), 64 px": (lambda: panda.load_generator("dcgan-digiface", device), ("z",))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default=str(HERE / "projection_psnr.md"))
    args = ap.parse_args()
    rows = []
    for name, (load, spaces) in generators(args.device).items():
        g = load()
        for space in spaces:
            print(f"{name}, {space} ...", file=sys.stderr, flush=True)
            values, t = [], time.perf_counter()
            for s in SEEDS:
                values.append(project(g, g.render([s])[0], space=space, steps=args.steps).psnr)
            seconds = (time.perf_counter() - t) / len(SEEDS)
            rows.append([name, space, f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})", f"{seconds:.1f}"])
    lines = ["# Projection quality on generated images", "",
             f"Device: {device_label(args.device)}; torch {torch.__version__}; {args.steps} Adam steps, in W and W+ from "
             "the average w, in z from the 4 closest of seeds 0-63 side by side, kept at their norms; loss pixel MSE at "
             "full, half and quarter resolution (no perceptual network); seeds "
             f"{SEEDS[0]}-{SEEDS[-1]}, whose true latents the generators drew.", ""]
    lines += table(["generator", "space", "PSNR dB, mean (min-max)", "s per image"], rows)
    text = "\n".join(lines) + "\n"
    print(text)
    write_keeping_notes(args.out, text)


if __name__ == "__main__":
    main()
