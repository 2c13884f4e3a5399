"""The ``panda`` command line: one command per task (``panda COMMAND --help`` shows examples)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
import sys
from typing import Callable

import click

from .errors import PandaError


def parse_seeds(text: str) -> list[int]:
    """'0,1,4-6' -> [0, 1, 4, 5, 6] (StyleGAN3's --seeds syntax)."""
    seeds: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", piece)
        if not m:
            raise PandaError(f"cannot read seeds '{text}': write them like 0,1,4-6.")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise PandaError(f"seed range '{piece}' runs backwards: write it as {hi}-{lo}.")
        seeds.extend(range(lo, hi + 1))
    return seeds


def parse_floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise PandaError(f"cannot read numbers '{text}': write them like -2,-1,0,1,2.") from exc


def handle_errors(fn: Callable) -> Callable:
    """Print a PandaError as one line and exit 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PandaError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def device_option(fn):
    return click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda or cuda:N.")(fn)


def _load(factors: str, device: str, generator: str | None = None):
    """The factor file and the generator it was fitted on (checked)."""
    from .generators import load_generator
    from .model import PandA

    model = PandA.load(factors)
    gen = load_generator(generator or model.generator_name_, device)
    model.check_compatible(gen)
    return model, gen


def _seeds(seeds: str | None, seed: int, n: int) -> list[int]:
    return parse_seeds(seeds) if seeds else list(range(seed, seed + n))


def sample_options(n_images: int, out: str):
    """--seeds / --seed / --n-images (which samples to draw), --out and --device, for commands that draw pictures."""

    def apply(fn):
        for option in reversed([
            click.option("--seeds", default=None, help="Samples, e.g. 0-7 or 0,3,9 (overrides --seed/--n-images)."),
            click.option("--seed", type=int, default=0, help="First sample's seed."),
            click.option("--n-images", type=int, default=n_images, help="How many samples."),
            click.option("--out", "-o", default=out, help="Output folder."),
            click.option("--generator", "generator_name", default=None,
                         help="Generator to use; default: the one the factor file was fitted on."),
            device_option,
        ]):
            fn = option(fn)
        return fn

    return apply


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="panda")
def main() -> None:
    """panda: learn the parts and appearances in a GAN generator's feature maps, and edit images with them.

    \b
    Quick start:
      panda layers dcgan-celeba
      panda fit --generator dcgan-celeba --layer relu2 --out factors.safetensors
      panda parts factors.safetensors --out out/parts
      panda edit factors.safetensors --part 6 --appearance 5 --out out/edit
      panda demo
    """


@main.command()
@click.argument("generator", default="dcgan-celeba")
@device_option
@click.option("--seed", default=0, help="Seed of the probe sample that measures the shapes.")
@handle_errors
def layers(generator: str, device: str, seed: int) -> None:
    """List GENERATOR's hookable layers with their C x H x W shapes.

    \b
    Example:  panda layers dcgan-digiface
    Generators: dcgan-celeba (default), dcgan-digiface, dcgan-eyes.
    """
    from .generators import load_generator

    gen = load_generator(generator, device)
    click.echo(f"{gen.name}: {gen.description}")
    for name, (c, h, w) in gen.layer_shapes().items():
        mark = "  (default)" if name == gen.default_layer else ""
        click.echo(f"  {name:<12} {c:>5} x {h:>3} x {w:<3}{mark}")


@main.command()
@click.option("--generator", "generator_name", default="dcgan-celeba", help="Built-in generator (see `panda layers`).")
@click.option("--layer", default=None, help="Layer to factorise; default: the generator's default layer.")
@click.option("--rank-appearance", "-rc", type=int, default=None, help="R_C appearances; default: all C channels.")
@click.option("--rank-parts", "-rs", type=int, default=12, help="R_S parts.")
@click.option("--n-samples", "-n", type=int, default=5000, help="Training samples (seeds SEED .. SEED+N-1).")
@click.option("--seed", type=int, default=0, help="First training seed; also seeds the random start of the parts.")
@click.option("--max-iter", type=int, default=30, help="At most this many alternating iterations.")
@click.option("--tol", type=float, default=1e-4, help="Stop when the error falls by less than this (relative).")
@click.option("--batch-size", type=int, default=256, help="Generator batch size.")
@click.option("--memory-gb", type=float, default=2.0, help="Feature maps kept in memory; above it they are re-generated each pass.")
@click.option("--out", "-o", default="factors.safetensors", help="Factor file to write (safetensors + JSON metadata).")
@device_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@handle_errors
def fit(generator_name, layer, rank_appearance, rank_parts, n_samples, seed, max_iter, tol, batch_size, memory_gb, out, device, quiet):
    """Learn parts and appearances at a layer and write them to a factor file.

    \b
    Example:  panda fit --generator dcgan-digiface --layer main.5 -rs 12 -n 5000 --out digiface.safetensors
    """
    from .generators import load_generator
    from .model import PandA

    gen = load_generator(generator_name, device)
    model = PandA(rank_appearance, rank_parts, max_iter=max_iter, tol=tol, random_state=seed, batch_size=batch_size,
                  memory_budget=int(memory_gb * (1 << 30)), verbose=not quiet)
    model.fit(gen, layer, n_samples=n_samples, seed=seed)
    path = model.save(out)
    click.echo(f"{model}\n  features {model.extract_time_:.2f} s, fit {model.fit_time_:.2f} s, {model.n_iter_} iteration(s), "
               f"{model.n_passes_} pass(es); train error {model.train_error_:.4f}, held-out {model.heldout_error_:.4f}\n"
               f"  written to {path}")


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@sample_options(n_images=8, out="out/parts")
@handle_errors
def parts(factors, seeds, seed, n_images, out, generator_name, device):
    """Draw the parts of FACTORS as heat maps over sample images (parts.png).

    \b
    Example:  panda parts factors.safetensors --seeds 0-7 --out out/parts
    """
    from . import viz

    model, gen = _load(factors, device, generator_name)
    seed_list = _seeds(seeds, seed, n_images)
    folder = viz.check_writable(out)
    path = viz.save_png(viz.parts_figure(model, gen, seed_list), folder / "parts.png")
    click.echo(f"wrote {path}")


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--part", "-k", type=int, default=None, help="Part k to edit.")
@click.option("--appearance", "-j", type=int, default=None, help="Appearance j to add; default: the part's top appearance by energy.")
@click.option("--alpha", "-a", type=float, default=1.0, help="Strength, in units of the layer's typical activation norm.")
@click.option("--edit", "edits", multiple=True, help="PART,APPEARANCE,ALPHA; repeat to combine edits (no sweep then).")
@click.option("--sweep/--no-sweep", default=True, help="With one edit: columns -2x, -1x, 0, +1x, +2x alpha.")
@sample_options(n_images=6, out="out/edit")
@handle_errors
def edit(factors, part, appearance, alpha, edits, sweep, seeds, seed, n_images, out, generator_name, device):
    """Edit samples locally: add appearance j to part k (edit grid PNG).

    \b
    Examples:
      panda edit factors.safetensors --part 6 --appearance 5 --alpha 1.5
      panda edit factors.safetensors --edit 6,5,1.5 --edit 9,1,-1 --seeds 0-3
    """
    from . import viz
    from .editing import DEFAULT_ALPHAS, Edit, check_edits

    model, gen = _load(factors, device, generator_name)
    seed_list = _seeds(seeds, seed, n_images)
    if edits:
        if part is not None or appearance is not None:
            raise PandaError("give either --edit PART,APPEARANCE,ALPHA (repeatable) or --part/--appearance/--alpha, not both.")
        edit_list = check_edits(model, [Edit.parse(e) for e in edits])
    else:
        if part is None:
            raise PandaError("say which part to edit: --part K (`panda parts` shows them), or --edit PART,APPEARANCE,ALPHA.")
        model.check_part(part)
        j = model.top_appearances(part, 1)[0] if appearance is None else model.check_appearance(appearance)
        edit_list = check_edits(model, [Edit(part, j, alpha)])
    folder = viz.check_writable(out)
    if len(edit_list) == 1 and sweep:
        e = edit_list[0]
        alphas = [f * e.alpha for f in DEFAULT_ALPHAS]
        image, share = viz.sweep_figure(model, gen, seed_list, e.part, e.appearance, alphas)
        path = viz.save_png(image, folder / f"edit_part{e.part}_app{e.appearance}.png")
        click.echo(f"wrote {path} ({100 * share:.0f}% of the pixel change inside the part)")
    else:
        path = viz.save_png(viz.edits_figure(model, gen, seed_list, edit_list), folder / "edit.png")
        click.echo(f"wrote {path}")


def parse_shift(text: str) -> tuple[int, int]:
    try:
        dy, dx = (int(v) for v in text.split(","))
        return dy, dx
    except ValueError as exc:
        raise PandaError(f"cannot read shift '{text}': write it as DY,DX in layer positions, e.g. 0,2.") from exc


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--part", "-k", type=int, required=True, help="Part k to refine and edit.")
@click.option("--appearance", "-j", type=int, default=None, help="Appearance for the edit; default: the part's top one by energy.")
@click.option("--alpha", "-a", type=float, default=2.0, help="Edit strength.")
@click.option("--steps", type=int, default=100, help="Refinement steps per image.")
@click.option("--radius", type=int, default=1, help="Positions a part may move beyond its start's support.")
@click.option("--search", type=int, default=2,
              help="Start from the global parts translated by up to this many positions, whichever fits the image best (0: no search).")
@click.option("--shift", default="0,0",
              help="Translate the features by DY,DX layer positions first (periodically), to try refinement on misaligned data.")
@sample_options(n_images=6, out="out/refine")
@handle_errors
def refine(factors, part, appearance, alpha, steps, radius, search, shift, seeds, seed, n_images, out, generator_name, device):
    """Fit sample-specific parts for each image and compare them and their edits with the global parts.

    \b
    Example:  panda refine factors.safetensors --part 2 --shift 0,2 --seeds 0-5
    """
    from . import viz
    from .editing import check_alpha
    from .refinement import check_refine_args

    model, gen = _load(factors, device, generator_name)
    model.check_part(part)
    j = model.top_appearances(part, 1)[0] if appearance is None else model.check_appearance(appearance)
    check_alpha(alpha)
    dy, dx = parse_shift(shift)
    check_refine_args(model.layer_shape_[1:], steps, radius, (dy, dx), search)  # all before anything is written
    seed_list = _seeds(seeds, seed, n_images)
    folder = viz.check_writable(out)
    image, figures = viz.refine_figure(model, gen, seed_list, part, j, alpha, (dy, dx), steps, radius, search)
    path = viz.save_png(image, folder / f"refine_part{part}.png")
    click.echo(f"wrote {path}\n  reconstruction error: global {figures['error_global']:.4f}, refined {figures['error_refined']:.4f}\n"
               f"  median ROIR of the edit (lower is better): global {figures['roir_global']:.3f}, refined {figures['roir_refined']:.3f}\n"
               f"  images whose refinement started from the shift ({dy},{dx}): {figures['shift_found']:.0%}")


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--part", "-k", type=int, default=None, help="Remove what is in part k.")
@click.option("--mask", type=click.Path(dir_okay=False), default=None, help="Or a PNG whose white pixels mark the region.")
@click.option("--region", type=click.Choice(["eyes", "nose", "mouth", "forehead"]), default=None,
              help="Or a face region found in each image by MediaPipe FaceMesh (eyes: glasses; forehead: hair over it).")
@click.option("--dilate", type=int, default=5, help="With --region: grow the region by this many pixels.")
@click.option("--alpha", "-a", type=float, default=1.5, help="Strength of the background appearance.")
@click.option("--background", "-b", default="auto",
              help="'auto': the appearance that best fills this region with its surroundings on these images "
                   "(also writes the runners-up side by side); 'global': the one chosen when fitting; or an "
                   "appearance index, '-J' for its opposite sign.")
@sample_options(n_images=6, out="out/remove")
@handle_errors
def remove(factors, part, mask, region, dilate, alpha, background, seeds, seed, n_images, out, generator_name, device):
    """Context-aware object removal: fill a part, a mask or a face region with a background appearance.

    \b
    Examples:
      panda remove digiface.safetensors --region eyes --seeds 1,5   (glasses)
      panda remove factors.safetensors --part 8 --background global
      panda remove factors.safetensors --mask hat.png --background 3 --alpha 2
    """
    import torch

    from . import viz
    from .editing import check_alpha
    from .removal import parse_background, rasterise_mask, region_for

    model, gen = _load(factors, device, generator_name)
    if sum(v is not None for v in (part, mask, region)) != 1:
        raise PandaError("say what to remove: exactly one of --part K, --mask FILE.PNG or --region eyes|nose|mouth|forehead.")
    check_alpha(alpha)
    background, sign = parse_background(model, background)
    seed_list = _seeds(seeds, seed, n_images)
    masks = None
    if region is not None:
        if dilate < 0:
            raise PandaError(f"--dilate must be >= 0, got {dilate}.")
        from .landmarks import FaceMeshMasker

        images = gen.to_unit(gen.synthesize(gen.sample(seed_list))).cpu()
        found = FaceMeshMasker(dilate=dilate)(images, regions=(region,))
        missing = [s for s, ok in zip(seed_list, found.found.tolist()) if not ok]
        if missing:
            raise PandaError(f"FaceMesh found no face in seeds {missing}: leave them out of --seeds.")
        masks = found.masks[region]
        grid_regions = torch.stack([rasterise_mask(m.float().numpy(), model.layer_shape_[1:]) for m in masks])
        label = region
    else:
        grid_regions = region_for(model, part, mask)
        label = model.part_label(part) if part is not None else "mask"
    folder = viz.check_writable(out)
    image, figures = viz.remove_figure(model, gen, seed_list, grid_regions, alpha, background, label, masks, sign)
    name = f"remove_part{part}" if part is not None else (f"remove_{region}" if region else "remove_mask")
    path = viz.save_png(image, folder / f"{name}.png")
    click.echo(f"wrote {path}\n  background appearance {figures['background']} ({figures['sign']:+g}); colour distance from "
               f"the region to its surroundings: {figures['distance_before']:.4f} before, {figures['distance_after']:.4f} after")
    if "search" in figures:  # auto: show the runners-up, the pick is a colour criterion and may not look best
        sheet = viz.candidates_figure(model, gen, seed_list[:4], grid_regions[:4] if grid_regions.dim() == 3 else grid_regions,
                                      figures["search"], alpha, masks=None if masks is None else masks[:4], label=label)
        sheet_path = viz.save_png(sheet, folder / f"{name}_candidates.png")
        others = ", ".join(f"{'+' if s > 0 else '-'}{j} ({100 * g:.0f}%)" for j, s, g in figures["search"].ranked(6)[1:])
        click.echo(f"wrote {sheet_path}\n  runners-up (share of the way to the surroundings' colour): {others};\n"
                   f"  if one of them looks more like removal, pass it: --background J (or -J for the opposite sign)")


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--appearance", "-j", type=int, default=None, help="Show where appearance j is, across samples.")
@click.option("--top", type=int, default=None, help="Or: the K strongest concepts of one image (the first seed).")
@sample_options(n_images=8, out="out/localize")
@handle_errors
def localize(factors, appearance, top, seeds, seed, n_images, out, generator_name, device):
    """Concept localisation: where each appearance is (A^T Z), as heat maps over the images.

    \b
    Examples:
      panda localize factors.safetensors --appearance 3 --seeds 0-7
      panda localize factors.safetensors --top 6 --seed 12
    """
    from . import viz

    model, gen = _load(factors, device, generator_name)
    if (appearance is None) == (top is None):
        raise PandaError("give either --appearance J (one concept, many images) or --top K (one image, K concepts).")
    seed_list = _seeds(seeds, seed, n_images)
    if appearance is not None:
        model.check_appearance(appearance)
        folder = viz.check_writable(out)
        path = viz.save_png(viz.localize_figure(model, gen, seed_list, appearance), folder / f"localize_app{appearance}.png")
    else:
        if not 1 <= top <= model.n_appearances:
            raise PandaError(f"--top {top} must be in 1..{model.n_appearances}.")
        folder = viz.check_writable(out)
        path = viz.save_png(viz.localize_top_figure(model, gen, seed_list[0], top), folder / f"localize_top_seed{seed_list[0]}.png")
    click.echo(f"wrote {path}")


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", help="Address to listen on (127.0.0.1: this machine only).")
@click.option("--port", type=int, default=8000, help="Port to listen on.")
@click.option("--generator", "generator_name", default=None, help="Generator; default: the one the factor file was fitted on.")
@click.option("--seed", type=int, default=0, help="The sample the page opens on.")
@device_option
@handle_errors
def serve(factors, host, port, generator_name, seed, device):
    """Explore FACTORS in the browser: sliders for part, appearance and alpha; live edits, maps, removal.

    \b
    Example:  panda serve out/demo/factors.safetensors --port 8000   (then open http://127.0.0.1:8000/)
    """
    from .serve import serve as run_server

    if not 0 < port < 65536:
        raise PandaError(f"port {port} is not a valid port: use 1..65535.")
    run_server(factors, host, port, device, generator_name, seed)


@main.command()
@click.option("--generator", "generator_name", default="dcgan-celeba", help="Built-in generator.")
@click.option("--layer", default=None, help="Layer; default: the generator's default layer.")
@click.option("--rank-parts", "-rs", type=int, default=12, help="R_S parts.")
@click.option("--n-samples", "-n", type=int, default=5000, help="Training samples.")
@click.option("--seed", type=int, default=0, help="First training seed and random start.")
@click.option("--out", "-o", default="out/demo", help="Output folder (index.html and PNGs).")
@device_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@handle_errors
def demo(generator_name, layer, rank_parts, n_samples, seed, out, device, quiet):
    """Fit on a face generator and write parts, top edits per part and an index.html to OUT.

    \b
    Example:  panda demo --out out/demo   (then open out/demo/index.html)
    """
    from .demo import run_demo

    index = run_demo(generator_name, layer, rank_parts, n_samples, seed, out, device, progress=not quiet)
    click.echo(f"open {index}")


@main.command("name-parts")
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--n", "n", type=int, default=64, help="Faces to measure the overlaps on.")
@click.option("--seed", type=int, default=20_000_000, help="First seed of those faces.")
@device_option
@handle_errors
def name_parts_cmd(factors, n, seed, device):
    """Name FACTORS' parts after the face regions (eyes, nose, mouth) they overlap most, and save the names
    into the file; every picture then shows them. Regions come from MediaPipe FaceMesh, not from PandA.

    \b
    Example:  panda name-parts out/demo/factors.safetensors
    """
    from .bench import name_model_parts

    if n < 1:
        raise PandaError(f"--n must be >= 1, got {n}.")
    model, gen = _load(factors, device)
    names = name_model_parts(model, gen, n, seed)
    model.save(factors)
    click.echo("; ".join(f"part {k}: {v}" for k, v in sorted(names.items())) + f"\nsaved into {factors}")


@main.group()
def bench() -> None:
    """Benchmarks that compare panda with other methods."""


@bench.command("roir")
@click.option("--generator", "generator_name", default="dcgan-celeba", help="Built-in face generator.")
@click.option("--n", "n", type=int, default=1000, help="Test seeds to try (those both landmark models accept are kept).")
@click.option("--n-calib", type=int, default=64, help="Calibration seeds (disjoint from the test seeds).")
@click.option("--budget", type=int, default=8, help="Directions each method may propose per region (x 2 signs).")
@click.option("--target", type=float, default=0.05, help="Matched mean absolute pixel change inside the region ([0, 1] images).")
@click.option("--n-train", type=int, default=5000, help="PandA's training samples.")
@click.option("--ganspace-samples", type=int, default=10_000, help="GANSpace's PCA samples.")
@click.option("--n-jacobian", type=int, default=5, help="Calibration samples LowRankGAN and ReSeFa compute their directions from.")
@click.option("--seed", type=int, default=0, help="Random start of PandA's parts.")
@click.option("--out", "-o", default="out/bench", help="Output folder (roir.md, roir.csv, roir.png, one grid per region).")
@device_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@handle_errors
def bench_roir(generator_name, n, n_calib, budget, target, n_train, ganspace_samples, n_jacobian, seed, out, device, quiet):
    """ROIR of local edits (eyes, nose, mouth) for PandA, GANSpace, SeFa, LowRankGAN, ReSeFa (StyleSpace: n/a).

    \b
    Example:  panda bench roir --generator dcgan-celeba --n 1000 --out out/bench/celeba
    """
    from . import viz
    from .bench import markdown, run_roir, write_outputs
    from .generators import load_generator
    from .model import PandA

    for name, value in (("n", n), ("n-calib", n_calib), ("budget", budget), ("n-train", n_train),
                        ("ganspace-samples", ganspace_samples), ("n-jacobian", n_jacobian)):
        if value < 1:
            raise PandaError(f"--{name} must be >= 1, got {value}.")
    if not 0 < target < 1:
        raise PandaError(f"--target must be in (0, 1), got {target}.")
    viz.check_writable(out)
    gen = load_generator(generator_name, device)
    model = PandA(rank_parts=12, background_samples=0, n_heldout=0, random_state=seed, verbose=not quiet).fit(gen, n_samples=n_train)
    result, edits = run_roir(generator_name, n, n_calib, budget, target, n_train, n_jacobian, ganspace_samples,
                             device=device, progress=not quiet, model=model)
    paths = write_outputs(result, edits, Path(out), model)
    click.echo(markdown(result))
    click.echo("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":  # pragma: no cover
    main()
