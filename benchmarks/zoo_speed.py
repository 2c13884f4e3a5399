"""Cost of each generator family in panda: loading, feature extraction and fit at three layers, and an edit
against one forward pass (the generator's own cost), all in one process.

    python benchmarks/zoo_speed.py                      # the zoo's fixtures (tests/fixtures), CPU -> zoo_speed.md
    python benchmarks/zoo_speed.py --full --device cuda # random-weight full-size networks (StyleGAN2/3 1024 px,
                                                        # BigGAN 512 px), written to zoo_speed_<device>.md

Fixture-size networks are tiny (16-64 px, a few channels): their rows show panda's overhead per call rather than
the cost of a real network. ``--full`` builds panda's own implementations at full size with random weights
(weights do not change the cost); it is meant for a GPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch
from common import device_label, table, timed, write_keeping_notes


HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"


def three_layers(g, device: str) -> list[str]:
    """An early, the default and a late feature layer (4-D outputs with more than 3 channels), among those whose
    S x S statistics fit the device's free memory (a 1024 px network's 256 x 256 layers need 80 GiB: the fit refuses
    them, which would end the run)."""
    from panda.factorisation import available_memory, statistics_bytes
    free = available_memory(device)
    shapes = g.feature_layers()
    names = [name for name, (_, h, w) in shapes.items() if statistics_bytes(h * w) <= free]
    picks = [names[len(names) // 4], g.default_layer, names[(3 * len(names)) // 4]]
    return [name for name in dict.fromkeys(picks) if name in names]


def measure(name: str, load, n: int, device: str) -> list[dict]:
    from panda.editing import Edit, edit
    from panda.features import FeatureSource
    from panda.model import PandA

    g, load_s = timed(load, "cpu")
    g.to(device)
    one = g.sample([7])
    g.synthesize(one)  # warm-up
    _, forward_s = timed(lambda: g.synthesize(one), device, 5)
    rows = []
    for layer in three_layers(g, device):
        c, h, w = g.layer_shapes()[layer]
        source = FeatureSource(g, layer, range(n), batch_size=32, memory_budget=4 << 30)
        model, fit_total = timed(lambda: PandA(rank_parts=8).fit(source), device)
        _, edit_s = timed(lambda: edit(model, g, one, [Edit(0, model.top_appearances(0, 1)[0], 1.0)]), device, 5)
        rows.append({"generator": name, "layer": layer, "shape": f"{c}x{h}x{w}", "n": n, "load_s": load_s,
                     "extract_s": model.extract_time_, "fit_s": model.fit_time_, "forward_ms": 1000 * forward_s,
                     "edit_ms": 1000 * edit_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return rows


def fixture_generators() -> dict:

    return {
        "dcgan-celeba (64 px, trained)": lambda: panda.load_generator("dcgan-celeba"),
        "StyleGAN2 NVlabs pickle (32 px fixture)": lambda: panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl"),
        "StyleGAN2 rosinality (32 px fixture)": lambda: panda.load_generator(FIXTURES / "stylegan2_rosinality.pt"),
        "StyleGAN3-T NVlabs pickle (32 px fixture)": lambda: panda.load_generator(FIXTURES / "stylegan3_nvlabs.pkl"),
        "BigGAN-deep (64 px fixture)": lambda: panda.load_generator(FIXTURES / "biggan"),
    }


def full_generators(device: str) -> dict:
    """panda's networks at full size with random weights, saved to temporary checkpoints and loaded as a user would."""
    import json


    from panda.biggan import BigGAN
    from panda.stylegan2 import Generator as SG2
    from panda.stylegan3 import Generator as SG3

    tmp = Path(tempfile.mkdtemp(prefix="panda-zoo-"))

    def wrap(module, name, z_dim):
        from panda.checkpoints import default_layer
        from panda.generators import GeneratorAdapter
        return GeneratorAdapter(module, name, z_dim, weight_hash=name, default_layer=default_layer(module, 1024),
                                forward_fn=lambda m, z, c: m(z, c)).to(device)

    def biggan():
        config = dict(z_dim=128, channel_width=128, num_classes=1000, attention_layer_position=8, n_stats=51, eps=1e-4,
                      layers=[[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 8],
                              [False, 8, 4], [True, 4, 4], [False, 4, 2], [True, 2, 2], [False, 2, 1], [True, 1, 1]])
        folder = tmp / "biggan-512"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        torch.save(BigGAN(**config).state_dict(), folder / "pytorch_model.bin")
        return panda.load_generator(folder, device)

    return {
        "StyleGAN2 config-f 1024 px (random)": lambda: wrap(SG2(512, 0, 512, 1024, 3).eval(), "sg2-1024", 512),
        "StyleGAN3-T 1024 px (random)": lambda: wrap(SG3(512, 0, 512, 1024, 3).eval(), "sg3-1024", 512),
        "BigGAN-deep 512 px (random)": biggan,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full-size random-weight networks (meant for a GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-n", type=int, default=None, help="training samples per fit (default 512, or 256 with --full)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    n = args.n or (256 if args.full else 512)
    gens = full_generators(args.device) if args.full else fixture_generators()
    rows = []
    for name, load in gens.items():
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows += measure(name, load, n, args.device)
    device = device_label(args.device)
    lines = [f"# Generator zoo: cost per family ({'full size, random weights' if args.full else 'fixture size'})", "",
             f"Device: {device}; torch {torch.__version__}; {n} training samples per fit, R_C = C, R_S = 8. "
             "Load: reading and checking the file and building panda's network. Extract: the generator's forward passes "
             "up to the layer; fit: everything else (statistics, factorisation). Edit: one image at alpha 1, against one "
             "forward pass of the same image (median of 5).", ""]
    lines += table(["generator", "layer (C x H x W)", "load s", "extract s", "fit s", "forward ms", "edit ms (x forward)",
                    "peak RSS MB"],
                   [[r["generator"], f"{r['layer']} ({r['shape']})", f"{r['load_s']:.2f}", f"{r['extract_s']:.2f}",
                     f"{r['fit_s']:.2f}", f"{r['forward_ms']:.1f}", f"{r['edit_ms']:.1f} ({r['edit_ms'] / r['forward_ms']:.1f}x)",
                     f"{r['peak_rss_mb']:.0f}"] for r in rows])
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out) if args.out else HERE / ("zoo_speed.md" if not args.full else f"zoo_speed_{args.device.replace(':', '')}.md")
    write_keeping_notes(out, text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
