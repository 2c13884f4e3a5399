"""The ``panda`` command line: one command per task (``panda COMMAND --help`` shows examples).

One error boundary (:class:`PandaGroup`) turns every library error and every bad option value into one
line on stderr and exit code 2. Values are parsed by click parameter types (seeds ``0,1,4-6``, shifts,
edits, finite floats, counts as ``click.IntRange``); generator choices come from the registry.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import runpy
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import click
import torch

from .comparison import align as align_fits, aligned_order, compare as compare_fits
from .demo import run_demo, write_report
from .drawing import grid, save_gif, save_images, save_png, scale_for, to_pil
from .editing import (DEFAULT_ALPHAS, Edit, check_alpha, check_edits, edit as edit_images, measured_region_sweep,
                      measured_sweep, part_profile, region_sweep)
from .errors import PandaError
from .evaluation import check_methods, run_roir
from .setup_cost import time_setup
from .figures import (candidates_figure, comparison_figure, edits_figure, localize_figure, localize_top_figure,
                      parts_figure, ranks_figure, ranks_plot, refine_figure, remove_figure, retrieval_figure,
                      sample_label, sweep_animation, sweep_figure, transfer_figure)
from .fileio import as_arrays, atomic_write, backup, check_output_file, check_writable, file_label, save_arrays
from .features import FeatureSource, default_memory_budget
from .factorisation import check_ranks, check_statistics_memory, mixing_matrices
from .fitting import fit_factors
from .checkpoints import FORMATS, NOISE_MODES, load_generator, random_stylegan2
from .generators import DEFAULT_GENERATOR, GENERATORS, Latents, is_registered, resolve_device
from .landmarks import REMOVAL_REGIONS, BoxMasker, FaceMeshMasker, face_set, load_onet
from .methods import METHODS
from .latents import check_latent_path, load_latents
from .localisation import appearance_maps, localisation
from .model import PandA
from .naming import CALIB_SEED_START, name_model_parts
from .progress import log_stages, progress_bar
from .projection import load_image, project, save_latent
from .refinement import MIN_TRANSLATION_GAIN, check_refine_args, compare_refinement, refine as refine_images
from .regions import calibrated_appearance, face_regions, region_for
from .retrieval import ends as retrieval_ends, retrieve as retrieve_samples
from .removal import candidate_fills, parse_background, remove as remove_region, removal, search_background
from .transfer import MIN_PART_SHARE, transfer as transfer_regions
from .selection import DEFAULT_RANKS, MAX_RANKS, check_rank_list, default_ranks, rank_sweep
from .serve import serve as run_server
from .tables import comparison_markdown, layers_markdown, markdown, ranks_markdown, setup_cost_markdown, write_outputs

log = logging.getLogger(__name__)


def _bars(quiet: bool) -> bool:
    """Progress for a command: nothing with -q; bars on a terminal; elsewhere (a log file or a pipe, which would
    collect every redraw of every bar, as the library's own default ``progress=None`` decides) one timestamped
    line per stage of the computation (:func:`panda.progress.log_stages`). True where bars show."""
    if quiet or sys.stderr.isatty():
        log_stages(None)
        return not quiet
    log_stages(lambda line: click.echo(line, err=True))
    return False


#: The most seeds one command draws (a typo like 0-4294967295 must not exhaust memory).
MAX_SEEDS = 100_000


def _numbers(text: str, what: str, example: str, most: int, below: int | None = None) -> list[int]:
    """'0,1,4-6' -> [0, 1, 4, 5, 6]: whole numbers and ranges, at most ``most`` of them, each below ``below``."""
    out: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", piece)
        if not m:
            raise PandaError(f"cannot read {what} '{text}': write them like {example}.")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise PandaError(f"range '{piece}' of {what} runs backwards: write it as {hi}-{lo}.")
        if below is not None and hi >= below:
            raise PandaError(f"{hi} is out of range: {what} are in [0, {below}).")
        if len(out) + hi - lo + 1 > most:
            raise PandaError(f"'{text}' asks for more than {most} {what}: give fewer.")
        out.extend(range(lo, hi + 1))
    return out


def parse_seeds(text: str) -> list[int]:
    """'0,1,4-6' -> [0, 1, 4, 5, 6] (StyleGAN3's --seeds syntax), seeds in [0, 2**32)."""
    return _numbers(text, "seeds", "0,1,4-6", MAX_SEEDS, 2**32)


def parse_ranks(text: str) -> list[int]:
    """'8,16,24' or '4-12' -> R_S values, at most :data:`panda.selection.MAX_RANKS` of them."""
    return _numbers(text, "ranks", "8,16,24 or 4-12", MAX_RANKS)


class _Parsed(click.ParamType):
    """A click type from a parsing function that raises PandaError."""

    def __init__(self, name: str, parse) -> None:
        self.name, self._parse = name, parse

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except PandaError as exc:
            self.fail(str(exc), param, ctx)


def _shift(text: str) -> tuple[int, int]:
    try:
        dy, dx = (int(v) for v in text.split(","))
        return dy, dx
    except ValueError as exc:
        raise PandaError(f"cannot read shift '{text}': write it as DY,DX in layer positions, e.g. 0,2.") from exc


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise PandaError(f"'{text}' is not a number.") from exc
    if not math.isfinite(value):
        raise PandaError(f"{text} is not a finite number.")
    return value


SEEDS = _Parsed("seeds", parse_seeds)
RANKS = _Parsed("ranks", parse_ranks)
SHIFT = _Parsed("dy,dx", _shift)
EDIT = _Parsed("part,appearance,alpha", Edit.parse)
FINITE = _Parsed("float", _finite)
COUNT = click.IntRange(min=1)
class GeneratorRef(click.ParamType):
    """A registered generator's name or a checkpoint's path (checked when it is loaded, with one clear error)."""

    name = "name-or-path"

    def shell_complete(self, ctx, param, incomplete):
        return [click.shell_completion.CompletionItem(n) for n in GENERATORS if n.startswith(incomplete)]


GENERATOR = GeneratorRef()
GENERATOR_HELP = ("Generator: a registered one (" + "; ".join(f"{name}: {spec.description}" for name, spec in GENERATORS.items())
                  + ") or a checkpoint file (" + "; ".join(f.description for f in FORMATS.values()) + ").")


GENERATORS_FROM = click.option(
    "--generators-from", "generators_from", type=click.Path(dir_okay=False), multiple=True,
    help="Run this Python file of yours first: it registers your own generators with panda.register_generator "
         "(examples/my_generator.py), which --generator then names. Its code runs: give only your own files.")
QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars (in a log file: no stage lines).")


#: --class ANY_CLASS: each seed draws its class (the default, unless a factor file's seeds drew one).
ANY_CLASS = "any"


def _class(class_: str | None, fitted: str | None = None) -> str | None:
    """--class as given (an index or a name), None for each seed's own (ANY_CLASS), or where not given the class a
    factor file's seeds drew (``fitted``), as its truncation and noise."""
    return fitted if class_ is None else None if class_ == ANY_CLASS else class_


def generator_options(default: str | None):
    """--generator NAME_OR_PATH, --trunc, --noise-mode, --class, --trust-pickle, --generators-from; with ``default``
    None the factor file's generator (and its truncation and noise mode) is used unless given."""
    from_file = " Default: the one the factor file was fitted on." if default is None else ""
    options = [
        click.option("--generator", "generator_name", type=GENERATOR, default=default, help=GENERATOR_HELP + from_file),
        click.option("--trunc", "truncation_psi", type=FINITE, default=None,
                     help="StyleGAN truncation psi (1: none). Default: 1, or the factor file's."),
        click.option("--noise-mode", type=click.Choice(NOISE_MODES), default=None,
                     help="StyleGAN noise: const (reproducible), random or none. Default: const, or the factor file's."),
        click.option("--class", "class_", default=None,
                     help="Conditional generators: the class every seed draws, an index or a name; 'any': drawn per "
                          "seed. Default: drawn per seed, or the class a factor file's seeds drew."),
        click.option("--trust-pickle", is_flag=True,
                     help="Unpickle an NVlabs pickle with your own clone of the reference code, running what it holds "
                          "(only for files you trust; panda's default loader runs nothing from the file)."),
        GENERATORS_FROM,
    ]

    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def _given_params(exclude: Sequence[str] = ()) -> list[click.Parameter]:
    """The current command's options given on its command line (not defaults), but those named in ``exclude``."""
    ctx = click.get_current_context()
    return [p for p in ctx.command.params if p.name not in exclude
            and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]


def _as_arguments(params: Sequence[click.Parameter]) -> list[str]:
    """Options as command-line arguments that give them again (the longest flag of each, with its values)."""
    values, out = click.get_current_context().params, []
    for p in params:
        flag = max(p.opts, key=len)
        if getattr(p, "is_flag", False):
            out.append(flag)
            continue
        for value in (values[p.name] if p.multiple else [values[p.name]]):
            out += [flag, str(value)]
    return out


def _generator(device: str, generator_name: str, truncation_psi: float | None = None, noise_mode: str | None = None,
               class_: str | None = None, trust_pickle: bool = False, generators_from: tuple = ()):
    """The generator a command that fits (fit, layers, demo, bench) names, with its options."""
    _register_generators(generators_from)
    return load_generator(generator_name, device, 1.0 if truncation_psi is None else truncation_psi,
                          noise_mode or "const", trust_pickle, _class(class_))


class PandaGroup(click.Group):
    """The one error boundary: a PandaError or a click usage error becomes one line on stderr and exit code 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except PandaError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except click.ClickException as exc:  # bad option values, unknown options, missing arguments
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def device_option(fn):
    return click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda or cuda:N.")(fn)


def _load(factors: str, device: str, generator_name: str | None = None, truncation_psi: float | None = None,
          noise_mode: str | None = None, class_: str | None = None, trust_pickle: bool = False,
          generators_from: tuple = ()) -> tuple[PandA, object]:
    """The factor file and the generator it was fitted on (checked); truncation, noise and class default to the
    file's."""
    model = PandA.load(factors)
    return model, _generator_of(model, factors, device, generator_name, truncation_psi, noise_mode, class_,
                                trust_pickle, generators_from)


def _generator_of(model: PandA, factors: str, device: str, generator_name: str | None = None,
                  truncation_psi: float | None = None, noise_mode: str | None = None, class_: str | None = None,
                  trust_pickle: bool = False, generators_from: tuple = ()):
    """The generator ``model`` (read from ``factors``) was fitted on, checked against it; truncation, noise and class
    default to the file's."""
    _register_generators(generators_from)
    src = model.generator_source_
    if not model.has_generator:
        raise PandaError(f"'{factors}' was fitted on {model.generator_label()}, not on a generator: the command line "
                         f"draws images, so it needs factors fitted on one; use the Python API (coefficients, localize) "
                         f"on such maps.")
    if generator_name is None:
        if src.get("format") == "registered" and not is_registered(model.generator_name_):
            raise PandaError(f"this factor file was fitted on {model.generator_label()}, which is not registered here: "
                             f"give the file that registers it (--generators-from FILE.py), or install the package "
                             f"that does.")
        if src.get("format") != "registered":
            raise PandaError(f"this factor file was fitted on {model.generator_label()}: give it with --generator PATH.")
        generator_name = model.generator_name_
    psi = src.get("truncation_psi", 1.0) if truncation_psi is None else truncation_psi
    gen = load_generator(generator_name, device, psi, noise_mode or src.get("noise_mode", "const"), trust_pickle,
                         _class(class_, src.get("class")))
    model.check_compatible(gen)
    return gen


def _samples(gen, seeds: list[int] | None, seed: int, n: int, latent: str | None) -> tuple[object, list]:
    """What a command draws, and the labels its pictures give them: seeds, or the latents of a file (``--latent``:
    your own, or one `panda project` wrote), labelled 'latent i'."""
    if latent is not None:
        latents = load_latents(latent, gen)
        if len(latents) > MAX_SEEDS:
            raise PandaError(f"'{latent}' holds {len(latents)} latents: give at most {MAX_SEEDS} at a time.")
        return latents, [f"latent {i}" for i in range(len(latents))]
    seed_list = seeds if seeds else list(range(seed, seed + n))
    return seed_list, seed_list


#: Strengths in an edit's animation (--gif): -2x to +2x alpha.
GIF_STEPS = 17

SAVE_IMAGES = click.option("--save-images", is_flag=True,
                           help="Also write each result image alone, at the generator's resolution (images/*.png).")

REFINE = click.option("--refine", "refine_first", is_flag=True,
                      help="With --part: each image's own parts (refined as `panda refine` does: the global parts' "
                           "best translation, then 100 steps) instead of the global ones, for images whose content is "
                           "off by whole cells of the layer's grid (on aligned images it can move a small part off "
                           "its region: look at the picture).")


#: The most samples a figure of `edit`, `remove`, `refine` or `transfer` (its targets) shows, a row each; with more,
#: the pictures and arrays hold these and --save-images writes every sample's result, computed CHUNK samples at a
#: time (10,000 latents edited for an evaluation must not be held in memory at once, nor drawn as a picture 10,000
#: rows tall).
FIGURE_ROWS = 16
CHUNK = 64


def _shown(samples, labels: list, streams: bool = True, rest: str | None = None) -> tuple[object, list]:
    """The samples and labels a figure shows (the first FIGURE_ROWS), saying so when there are more; ``streams``:
    the command writes the rest with --save-images; ``rest``: what it does with them instead."""
    if len(labels) > FIGURE_ROWS:
        rest = rest or ("--save-images writes all of them" if streams
                        else "the others are not used (edit, remove, refine and transfer write every sample's "
                             "result with --save-images)")
        click.echo(f"the pictures and arrays show the first {FIGURE_ROWS} of {len(labels)} samples; {rest}", err=True)
    return samples[:FIGURE_ROWS], labels[:FIGURE_ROWS]


def _export_all(folder, samples, labels: list, what: str, produce, progress: bool, chunk: int = 0,
                files=None) -> None:
    """--save-images for every sample, ``chunk`` (default CHUNK) at a time: ``produce(samples, labels)`` -> images
    (n, 3, H, W) in [0, 1], each written to ``folder/images`` (created there) as WHAT_LABEL.png (:func:`panda.fileio.file_label`),
    or as ``files(labels)`` names them (several images a sample: a transfer's, one per source). ``progress``: as
    :func:`_bars` decided; where no bar shows, a stage line per chunk."""
    count, chunk = 0, chunk or CHUNK
    # a bar over the samples: with ``files``, each gives several images
    with progress_bar(total=len(labels), desc=f"{what} images", unit="sample" if files else "img", progress=progress) as bar:
        for start in range(0, len(labels), chunk):
            some, names = samples[start:start + chunk], labels[start:start + chunk]
            try:
                images = produce(some, names)
            except PandaError as exc:  # e.g. no face found in one of a later chunk's images
                raise PandaError(f"{exc} ({count} image(s) were written to {folder / 'images'} before this.)") from exc
            paths = save_images(images, folder / "images",
                                files(names) if files else [f"{what}_{file_label(label)}" for label in names])
            count += len(paths)
            bar.update(len(names))
            log.info("%s images: %d of %d samples written", what, start + len(names), len(labels))
    click.echo(f"wrote {count} image(s) to {folder / 'images'}")


def _arrays(png: Path, data, labels: list) -> None:
    """--save-arrays: the data behind the picture ``png``, beside it as .npz (``np.load`` reads it, no pickle), with
    the samples' labels (seeds, or 'latent i')."""
    path = save_arrays(png.with_suffix(".npz"), {**as_arrays(data), "labels": [str(label) for label in labels]})
    click.echo(f"wrote {path} (numpy.load)")


def _region(model: PandA, gen, samples, seed_list: list, part: int | None, mask: str | None, region: str | None,
            dilate: int, option: str = "--seeds", refine_first: bool = False,
            named: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor | None, str, torch.Tensor | None]:
    """What --part, --mask or --region marks: (the region on the layer's grid, (H, W), or (N, H, W) for a face region
    found in each image or a part refined for each (``refine_first``); the face region's masks at image resolution
    (N, H', W') or None; a label for pictures; the images FaceMesh looked at, (N, 3, H', W') in [0, 1], or None).
    ``option`` names where the samples came from, for the message when FaceMesh finds no face in one. ``named``:
    several parts a name picked, as :func:`_part_or_union` gives them."""
    if named is not None:
        return named[0], None, named[1], None
    if refine_first:
        _check_refine(part, mask, region)
        return _own_profiles(model, gen, samples, part), None, f"{model.part_label(part)}, refined", None
    if region is None:
        return region_for(model, part, mask), None, model.part_label(part) if part is not None else "mask", None
    faces = face_regions(model, gen, gen.latents(samples), region, dilate)
    missing = [s for s, ok in zip(seed_list, faces.found.tolist()) if not ok]
    if missing:
        raise PandaError(f"FaceMesh found no face in seeds {missing}: leave them out of {option}.")
    return faces.grid, faces.masks, region, faces.images


def _check_refine(part, mask, region) -> None:
    """--refine refines parts: refused with a mask or a face region (each image's own already)."""
    if part is None or mask is not None or region is not None:
        raise PandaError("--refine refines parts: give --part (a mask or a face region is each image's own already).")


def _own_parts(model: PandA, gen, samples) -> torch.Tensor:
    """Each sample's own parts (N, S, R_S), refined as `panda refine` does by default."""
    return refine_images(model, gen, samples)[1].parts


def _same_samples(a, b) -> bool:
    """Whether two sample lists (seeds, or :class:`Latents`) are the same samples in the same order."""
    if isinstance(a, Latents) and isinstance(b, Latents):
        return all((x is None and y is None) or (x is not None and y is not None and x.shape == y.shape
                                                 and torch.equal(x, y))
                   for x, y in ((a.z, b.z), (a.labels, b.labels), (a.ws, b.ws)))
    return not isinstance(a, Latents) and not isinstance(b, Latents) and list(a) == list(b)


class _LastSamples:
    """``compute(samples, *args)``, remembered for the last samples it was called with: a sweep with --gif measures
    the samples shown twice, and --save-images draws them again when they are all the samples (its chunk is then
    the figure's samples, whose edits, regions, refinements or transfers are at hand)."""

    def __init__(self, compute) -> None:
        self.compute, self.samples, self.value = compute, None, None

    def __call__(self, samples, *args):
        if self.samples is None or not _same_samples(self.samples, samples):
            self.samples, self.value = samples, self.compute(samples, *args)
        return self.value


def _own_profiles(model: PandA, gen, samples, part: int) -> torch.Tensor:
    """Part ``part`` as each sample's own parts have it, (N, H, W) in [0, 1]: the map an edit or removal fills."""
    model.check_part(part)
    return torch.stack([part_profile(model, part, p) for p in _own_parts(model, gen, samples)])


def training_options(n_samples: int):
    """What a fitting command (fit, ranks) trains on and how: --n-samples, --seed, --latent, --n-init, --reseed,
    --max-iter, --tol, --batch-size, --memory-gb (read by :class:`_TrainingData`)."""

    def apply(fn):
        for option in reversed([
            click.option("--n-samples", "-n", type=click.IntRange(1, 10_000_000), default=n_samples,
                         help="Training samples (seeds SEED .. SEED+N-1)."),
            click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0,
                         help="First training seed; also seeds the random start of the parts."),
            click.option("--latent", type=click.Path(dir_okay=False), default=None,
                         help="Fit on your own latents instead of seeds (all of them; formats as for `panda edit "
                              "--latent`). The held-out error is still measured on the generator's own samples."),
            click.option("--n-init", type=COUNT, default=4,
                         help="Random starts of the parts, the best kept. More find a better solution where a rank has "
                              "several nearly equal ones (dcgan-celeba at R_S = 40: 16 lower the error from 0.152 to "
                              "0.148, and one changed sample no longer moves the parts; benchmarks/stability.md)."),
            click.option("--reseed", type=click.IntRange(min=0), default=0,
                         help="Then up to this many rounds that move the weakest parts to where the fit is worst, each "
                              "kept while it lowers the error. At R_S of 24 and more mostly a lower error than 16 "
                              "random starts, in less time (benchmarks/reseed.md). Default 0: none."),
            click.option("--max-iter", type=COUNT, default=30, help="At most this many alternating iterations."),
            click.option("--tol", type=FINITE, default=1e-4, help="Stop when the error falls by less than this (relative)."),
            click.option("--batch-size", type=COUNT, default=None,
                         help="Generator batch size; default: from the image size (256 at 64 px, 16 at 256 px)."),
            click.option("--memory-gb", type=FINITE, default=None,
                         help="Feature maps kept in memory, GiB; above it they are re-generated each pass. Default: a "
                              "quarter of the memory of the device that holds them (the GPU's with --device cuda), at "
                              "most 16."),
        ]):
            fn = option(fn)
        return fn

    return apply


def sample_options(n_images: int, out: str):
    """--seeds / --seed / --n-images (which samples to draw), --latent, --save-arrays, --out, --generator,
    --device and --quiet."""

    def apply(fn):
        for option in reversed([
            click.option("--seeds", type=SEEDS, default=None, help="Samples, e.g. 0-7 or 0,3,9 (overrides --seed/--n-images)."),
            click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, help="First sample's seed."),
            click.option("--n-images", type=click.IntRange(1, MAX_SEEDS), default=n_images, help="How many samples."),
            click.option("--latent", type=click.Path(dir_okay=False), default=None,
                         help="Latents instead of seeds: .npy of z (N, latent_dim), .npz/.safetensors with z or ws (W, W+) "
                              "and labels, or the file `panda project` wrote (your own photo)."),
            click.option("--save-arrays", is_flag=True,
                         help="Also write the data behind each picture beside it, NAME.npz (numpy.load, no pickle): "
                              "images in [0, 1], maps, masks, the samples' labels."),
            click.option("--out", "-o", default=out, help="Output folder."),
            generator_options(None),
            device_option,
            QUIET,
        ]):
            fn = option(fn)
        return fn

    return apply


@click.group(cls=PandaGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="panda")
def main() -> None:
    """panda: learn the parts and appearances in a GAN generator's feature maps, and edit images with them.

    \b
    Quick start:
      panda layers dcgan-celeba
      panda ranks --generator dcgan-celeba --layer relu2 --faces 64
      panda fit --generator dcgan-celeba --layer relu2 --out factors.safetensors
      panda info factors.safetensors --parts
      panda parts factors.safetensors --out out/parts
      panda edit factors.safetensors --part 6 --appearance 5 --out out/edit
      panda transfer factors.safetensors --part 6 --sources 100-104
      panda report factors.safetensors --out out/report   (every picture, with an index.html)
      panda demo
    """


@main.command(epilog=GENERATOR_HELP)
@click.argument("generator", type=GENERATOR, default=DEFAULT_GENERATOR, metavar="NAME_OR_PATH")
@device_option
@click.option("--seed", default=0, help="Seed of the probe sample that measures the shapes.")
@click.option("--trust-pickle", is_flag=True, help="Unpickle an NVlabs pickle with your own clone of the reference code.")
@click.option("--all", "show_all", is_flag=True, help="Every hookable output, RGB outputs and sub-layers included.")
@GENERATORS_FROM
def layers(generator: str, device: str, seed: int, trust_pickle: bool, show_all: bool, generators_from: tuple) -> None:
    """List the hookable layers of a generator (a registered name or a checkpoint file) with their C x H x W shapes.

    \b
    Examples:
      panda layers dcgan-digiface
      panda layers ffhq.pkl
    """
    _register_generators(generators_from)
    gen = load_generator(generator, device, trust_pickle=trust_pickle)
    click.echo(f"{gen.name}: {gen.description}")
    shapes = gen.layer_shapes() if show_all else gen.feature_layers()
    width = max(12, *(len(n) for n in shapes))
    for name, (c, h, w) in shapes.items():
        mark = "  (default)" if name == gen.default_layer else ""
        click.echo(f"  {name:<{width}} {c:>5} x {h:>3} x {w:<3}{mark}")
    hidden = len(gen.layer_shapes()) - len(shapes)
    if hidden:
        click.echo(f"  ({hidden} more with --all: RGB outputs, and sub-layers of the layers above. Modules that return "
                   f"several tensors, such as a StyleGAN2 block's (x, img), cannot be edited whole: use their convolutions.)")


@main.command()
@generator_options(DEFAULT_GENERATOR)
@click.option("--layer", default=None, help="Layer to factorise; default: the generator's default layer.")
@click.option("--rank-appearance", "-rc", type=COUNT, default=None, help="R_C appearances; default: all C channels.")
@click.option("--rank-parts", "-rs", type=COUNT, default=None,
              help="R_S parts; default: the generator's choice at its default layer (dcgan-celeba 40, dcgan-digiface 24: "
                   "see benchmarks/semantic_parts.md), else 12.")
@training_options(n_samples=5000)
@click.option("--background-samples", type=click.IntRange(min=0), default=8,
              help="Samples the background appearance (object removal) is searched on; 0 skips the search.")
@click.option("--mixing", is_flag=True,
              help="Also fit an appearance mixing W: reconstruction A W A^T Z P P^T, the authors' code's model class "
                   "(lower error; R_C more S x S matrices of memory). Edits and heat maps keep the orthonormal A.")
@click.option("--mixing-directions", type=COUNT, default=None,
              help="With --mixing: refit this many of W's eigenvalues on their own (the directions of most energy), "
                   "the rest sharing one; fewer cost less time and memory (one S x S matrix each). Default: all R_C.")
@click.option("--align-to", "align_to", type=click.Path(dir_okay=False), default=None,
              help="Number the parts after this earlier fit of the same layer (as `panda compare --align` does): part k "
                   "is the partner of its part k, so that part numbers in your scripts keep their meaning.")
@click.option("--keep-names", is_flag=True,
              help="With --align-to: a part takes the name (`panda name-parts`) of its partner in that fit where "
                   "their maps are at least 0.9 similar, so that `--part mouth` still finds it.")
@click.option("--out", "-o", default="factors.safetensors", help="Factor file to write (safetensors + JSON metadata).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (otherwise an existing file stops the command).")
@device_option
@QUIET
def fit(layer, rank_appearance, rank_parts, n_samples, seed, latent, n_init, reseed, max_iter, tol, batch_size, memory_gb,
        background_samples, mixing, mixing_directions, align_to, keep_names, out, overwrite, device, quiet, **gen):
    """Learn parts and appearances at a layer and write them to a factor file.

    \b
    Example:  panda fit --generator dcgan-digiface --layer main.5 -rs 12 -n 5000 --out digiface.safetensors
    """
    check_output_file(out, overwrite)  # before minutes of fitting, not after
    if keep_names and align_to is None:
        raise PandaError("--keep-names takes the names of the fit given by --align-to: add --align-to REF.")
    generator = _generator(device, **gen)
    data = _TrainingData(generator, layer, n_samples, seed, latent, batch_size, memory_gb)
    layer, latents, n_samples, (c, h, w) = data.layer, data.latents, data.n_samples, data.shape
    rank_parts = generator.rank_parts_for(layer) if rank_parts is None else rank_parts
    # ranks too large stop here, in one line, before anything is printed or generated
    rank_c = c if rank_appearance is None else rank_appearance
    check_ranks(rank_c, rank_parts, c, h * w)
    if mixing_directions is not None and not mixing:  # in the CLI's own words; the API says the same in check_params
        raise PandaError("--mixing-directions applies to a fit with --mixing: add --mixing, or leave it out.")
    check_statistics_memory((h, w), generator.device, f"layer {layer!r}",
                            mixing_matrices(rank_c, mixing_directions) if mixing else None)
    reference = None if align_to is None else PandA.load(align_to)
    if reference is not None and tuple(reference.layer_shape_) != (c, h, w):
        raise PandaError(f"--align-to {align_to} is a fit of layer {reference.layer_} "
                         f"({'x'.join(map(str, reference.layer_shape_))}), not of {layer} ({c}x{h}x{w}): give a fit "
                         "of the same layer.")
    data.announce()
    start = time.perf_counter()
    model = fit_factors(generator, layer, rank_appearance, rank_parts, n_samples, seed, max_iter, tol, data.batch,
                        data.budget,
                        background_samples=background_samples, progress=_bars(quiet), mixing=mixing,
                        mixing_directions=mixing_directions, latents=latents, n_init=n_init, reseed=reseed)
    rest = time.perf_counter() - start - model.extract_time_ - model.fit_time_
    aligned = ""
    if reference is not None:
        model, result = align_fits(reference, model, keep_names)
        aligned = (f"\n  parts numbered after {Path(align_to).name}'s: {sum(x >= 0.9 for x in result.matched)} of "
                   f"{len(result.pairs)} partners at similarity 0.9 or more"
                   + (f"; names kept: {_names(model) or 'none'}" if keep_names else ""))
    path = model.save(out)
    background = ("held-out score" if model.background_ is None else
                  f"background appearance {'+' if model.background_sign_ > 0 else '-'}{model.background_} "
                  f"({100 * model.background_gain_:.0f}% of the way); held-out score and background search")
    click.echo(f"{model}\n  features {model.extract_time_:.2f} s, fit {model.fit_time_:.2f} s, {model.n_iter_} iteration(s), "
               f"{model.n_passes_} pass(es); train error {model.train_error_:.4f}, held-out {model.heldout_error_:.4f}\n"
               f"  {background} {rest:.1f} s{aligned}\n"
               f"  written to {path}")


class _TrainingData:
    """What a fitting command trains on: the layer, seeds or latents, batch size and memory budget, all checked
    before any sample is generated."""

    def __init__(self, generator, layer: str | None, n_samples: int, seed: int, latent: str | None,
                 batch_size: int | None, memory_gb: float | None) -> None:
        if memory_gb is not None and memory_gb < 0:
            raise PandaError(f"--memory-gb must be >= 0, got {memory_gb}.")
        self.latents, self.others = None, None  # others: the samples `ranks --stability` fits again on
        if latent is not None:
            if click.get_current_context().get_parameter_source("n_samples") != click.core.ParameterSource.DEFAULT:
                raise PandaError("give either --n-samples (seeds) or --latent FILE (all its latents), not both.")
            self.latents = load_latents(latent, generator)
            n_samples = len(self.latents)
        self.generator, self.n_samples, self.seed = generator, n_samples, seed
        self.batch = batch_size or generator.default_batch
        self.budget = default_memory_budget(generator.device) if memory_gb is None else int(memory_gb * (1 << 30))
        self.layer = layer or generator.default_layer
        generator.layer_module(self.layer)  # an unknown layer stops here, listing the valid ones
        self.shape = generator.layer_shapes()[self.layer]

    @property
    def nbytes(self) -> int:
        c, h, w = self.shape
        return self.n_samples * c * h * w * 4

    def announce(self) -> None:
        """One line on stderr: the batch size, and whether the features are kept or re-generated each pass."""
        need, budget = self.nbytes, self.budget
        click.echo(f"generator batch {self.batch}; features {need / 2**30:.2f} GiB, "
                   + ("kept in memory" if need <= budget else
                      f"over the {budget / 2**30:.1f} GiB budget: re-generated each pass"), err=True)

    def at(self, layer: str) -> "_TrainingData":
        """The same samples at another layer (checked; a latent file is not read again)."""
        other = copy.copy(self)
        self.generator.layer_module(layer)  # an unknown layer stops here, listing the valid ones
        other.layer, other.shape = layer, self.generator.layer_shapes()[layer]
        return other

    def source(self, progress: bool) -> FeatureSource:
        data = range(self.seed, self.seed + self.n_samples) if self.latents is None else self.latents
        return FeatureSource(self.generator, self.layer, data, self.batch, self.budget, progress)

    def split_for_stability(self, announce: bool) -> "_TrainingData":
        """`ranks --stability`: these samples and as many others to fit again on. Seeds: the training seeds as they
        are, the others the seeds after them. Latents: a file holds no others, so the first half trains (the
        returned data) and the second half is the other set; ``announce`` says so on stderr."""
        split = copy.copy(self)
        if self.latents is None:
            split.others = range(self.seed + self.n_samples, self.seed + 2 * self.n_samples)
            return split
        if self.n_samples < 2:
            raise PandaError(f"--stability with --latent fits the first half of the latents and again the second "
                             f"half: the file holds {self.n_samples} latent; give at least 2 (hundreds, for a "
                             f"meaningful fit), or leave --stability out.")
        half = self.n_samples // 2
        split.latents, split.others, split.n_samples = self.latents[:half], self.latents[half:], half
        if announce:
            click.echo(f"--stability with --latent: each rank is fitted on latents 0-{half - 1} and again on latents "
                       f"{half}-{self.n_samples - 1} of the file (the tables' sample count is {half:,}).", err=True)
        return split

    def other_source(self, progress: bool) -> FeatureSource:
        """The other samples of :meth:`split_for_stability`, at this layer."""
        return FeatureSource(self.generator, self.layer, self.others, self.batch, self.budget, progress)


@main.command()
@generator_options(DEFAULT_GENERATOR)
@click.option("--layer", "layers", multiple=True,
              help="Layer to factorise; repeat to compare layers (each in its own folder, and layers.md). Default: the "
                   "generator's default layer.")
@click.option("--ranks", "-rs", "ranks", type=RANKS, default=None,
              help="R_S values to fit, e.g. 8,16,24 or 4-12; default: "
                   + ", ".join(map(str, DEFAULT_RANKS)) + " (those up to the layer's H*W).")
@click.option("--rank-appearance", "-rc", type=COUNT, default=None, help="R_C appearances, the same for every fit; default: all C channels.")
@training_options(n_samples=2000)
@click.option("--heldout", type=click.IntRange(min=0), default=256, help="Held-out samples each fit is scored on (0: none).")
@click.option("--faces", type=click.IntRange(min=0), default=0,
              help="Also measure each fit's parts against FaceMesh's eyes, nose and mouth on this many faces "
                   "(face generators; 64 is plenty) and name the smallest R_S that gives each its own part.")
@click.option("--stability", is_flag=True,
              help="Also fit every rank on as many other samples (seeds after the training ones; with --latent, the "
                   "file's second half, the first half training), from other random starts, and count the parts that "
                   "come back (`panda compare`): twice the time.")
@click.option("--n-images", type=click.IntRange(1, 16), default=4, help="Samples drawn in ranks.png.")
@click.option("--save-factors", is_flag=True,
              help="Also write each fit as OUT/rs{R_S}.safetensors, with its held-out score, the background search of "
                   "`panda fit` (a few seconds each) and, with --faces, its parts named as `panda name-parts` does.")
@click.option("--save-arrays", is_flag=True,
              help="Also write ranks.npz: the ranks, errors, fit seconds, each fit's parts and, with --faces, purities.")
@click.option("--out", "-o", default="out/ranks", help="Output folder.")
@device_option
@QUIET
def ranks(ranks, layers, rank_appearance, n_samples, seed, latent, n_init, reseed, heldout, faces, stability, max_iter, tol,
          batch_size, memory_gb, n_images, save_factors, save_arrays, out, device, quiet, **gen):
    """How many parts (and which layer)? Fit a layer at several R_S on one shared pass of statistics; compare their
    held-out errors and parts (ranks.png, errors.png, ranks.md). With several --layer, each layer's in its own folder
    and a summary (layers.md).

    \b
    Examples:
      panda ranks --generator dcgan-celeba --layer relu2 -rs 8,16,24,32,40 --faces 64
      panda ranks --generator dcgan-digiface --layer main.5 --layer main.8 --faces 64 --stability
    """
    generator = _generator(device, **gen)
    layers = list(dict.fromkeys(layers)) or [None]
    first = _TrainingData(generator, layers[0], n_samples, seed, latent, batch_size, memory_gb)
    plans = []  # (training data, ranks): every layer and rank checked before anything is fitted
    for layer in layers:
        data = first if layer in (None, first.layer) else first.at(layer)
        try:
            checked = check_rank_list(default_ranks(data.shape) if ranks is None else ranks, data.shape,
                                      rank_appearance)
        except PandaError as exc:
            raise PandaError(f"layer {data.layer}: {exc}" if len(layers) > 1 else str(exc)) from None
        plans.append((data, checked))
    if stability:
        # after the ranks are checked, before anything is generated: every layer's data shares the split
        plans = [(data.split_for_stability(announce=i == 0), checked) for i, (data, checked) in enumerate(plans)]
    root = check_writable(out)
    folders = [root if len(plans) == 1 else root / file_label(data.layer) for data, _ in plans]
    if save_factors:
        for folder, (_, checked) in zip(folders, plans):
            for r in checked:
                check_output_file(folder / f"rs{r}.safetensors", True)
    bars = _bars(quiet)
    face_data = None
    if faces:
        # the faces `panda name-parts` names parts on: a saved fit's names are those it would give
        face_data = face_set(generator, CALIB_SEED_START, faces, FaceMeshMasker(), load_onet())
        if len(face_data.seeds) == 0:
            raise PandaError(f"FaceMesh found no face in {faces} samples of '{generator.name}': --faces needs a face "
                             f"generator; leave it out.")
    summary = []
    for folder, (data, checked) in zip(folders, plans):
        t = time.perf_counter()
        sweep = _rank_sweep_of(generator, data, checked, heldout, face_data, stability, rank_appearance, n_init,
                               reseed, max_iter, tol, bars)
        _write_ranks(generator, data, sweep, check_writable(folder), heldout, n_images, save_arrays, save_factors, bars)
        summary.append((data, sweep, time.perf_counter() - t))
    if len(plans) > 1:
        text = layers_markdown([(d.layer, d.shape, s, seconds) for d, s, seconds in summary], generator.name,
                               plans[0][0].n_samples)
        click.echo(text)
        click.echo(f"wrote {atomic_write(root / 'layers.md', text)}")


def _rank_sweep_of(generator, data: _TrainingData, ranks: list[int], heldout: int, faces, stability: bool,
                   rank_appearance, n_init: int, reseed: int, max_iter: int, tol: float, bars: bool):
    """`panda ranks` at one layer: its held-out samples, and with --stability as many other samples."""
    data.announce()
    held = None if heldout == 0 else FeatureSource.heldout(generator, data.layer, heldout, batch_size=data.batch)
    other = data.other_source(bars) if stability else None
    return rank_sweep(data.source(bars), ranks, held, faces, other, rank_appearance, data.seed, max_iter, tol, n_init,
                      progress=bars, reseed=reseed)


def _write_ranks(generator, data: _TrainingData, sweep, folder: Path, heldout: int, n_images: int, save_arrays: bool,
                 save_factors: bool, bars: bool) -> None:
    """One layer's sweep as `panda ranks` writes it: ranks.png, errors.png, ranks.md (also printed), and on request
    ranks.npz and each fit's factor file."""
    if data.latents is None:
        shown = labels = list(range(data.seed, data.seed + n_images))
    else:
        shown, labels = data.latents[:n_images], [f"latent {i}" for i in range(min(n_images, data.n_samples))]
    png = save_png(ranks_figure(sweep, generator.render(shown), labels), folder / "ranks.png")
    text = ranks_markdown(sweep, generator.name, data.layer, data.n_samples, heldout)
    click.echo(text)
    for path in (png, save_png(ranks_plot(sweep), folder / "errors.png"), atomic_write(folder / "ranks.md", text)):
        click.echo(f"wrote {path}")
    if save_arrays:
        _arrays(png, sweep.as_arrays(), labels)
    if save_factors:
        for i, (r, model) in enumerate(zip(sweep.ranks, sweep.models)):
            if sweep.regions is not None:
                model.part_names_ = sweep.regions[i].names()
            search_background(model, generator, 8, progress=bars)
            click.echo(f"wrote {model.save(folder / f'rs{r}.safetensors')}")


@main.command()
@click.argument("first", type=click.Path(dir_okay=False))
@click.argument("second", type=click.Path(dir_okay=False))
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, help="The sample the parts are drawn over.")
@click.option("--save-arrays", is_flag=True,
              help="Also write compare.npz: the parts' similarity matrix, the matched pairs and the appearances' overlap.")
@click.option("--align", "aligned", type=click.Path(dir_okay=False), default=None,
              help="Also write SECOND with its parts renumbered after FIRST's (part k: the partner of FIRST's part k; "
                   "unmatched ones last) to this factor file: the same fit, so that part numbers keep their meaning "
                   "after a refit.")
@click.option("--keep-names", is_flag=True,
              help="With --align: a part takes the name (`panda name-parts`) of its partner in FIRST where their maps "
                   "are at least 0.9 similar.")
@click.option("--overwrite", is_flag=True, help="Replace the --align file if it exists.")
@click.option("--out", "-o", default="out/compare", help="Output folder.")
@generator_options(None)
@device_option
def compare(first, second, seed, save_arrays, aligned, keep_names, overwrite, out, device, **gen):
    """Two fits of one layer side by side: their parts matched one to one by the similarity of their maps, and how
    much their leading appearances share (compare.png, compare.md). Are the parts stable across seeds, sample sets,
    ranks or --mixing?

    \b
    Examples:
      panda fit --seed 1 --out other.safetensors && panda compare factors.safetensors other.safetensors
      panda compare factors.safetensors other.safetensors --align other_aligned.safetensors
    """
    if aligned is not None:
        check_output_file(aligned, overwrite)
    elif keep_names:
        raise PandaError("--keep-names names the fit that --align writes: add --align OUT.")
    a, b = PandA.load(first), PandA.load(second)
    result = compare_fits(a, b)  # refuses fits of different layer shapes before anything is drawn
    image = None
    if a.has_generator:
        image = _generator_of(a, first, device, **gen).render([seed])[0]
    folder = check_writable(out)
    names = (Path(first).name, Path(second).name)
    if names[0] == names[1]:
        names = (str(first), str(second))
    path = save_png(comparison_figure(a, b, result, image, names), folder / "compare.png")
    text = comparison_markdown(result, a, b, names)
    click.echo(text)
    click.echo(f"wrote {path}\nwrote {atomic_write(folder / 'compare.md', text)}")
    if save_arrays:
        _arrays(path, {"similarity": result.similarity, "pairs": torch.tensor(result.pairs), "ks": torch.tensor(result.ks),
                       "overlap": torch.tensor(result.overlap)}, [names[0], names[1]])
    if aligned is not None:
        order = aligned_order(result)
        moved = sum(new != old for new, old in enumerate(order))
        renumbered, _ = align_fits(a, b, keep_names, result)
        click.echo(f"{names[1]}'s parts renumbered after {names[0]}'s ({moved} of {len(order)} moved"
                   + (f"; names kept: {_names(renumbered) or 'none'}" if keep_names else "")
                   + f"): wrote {renumbered.save(aligned)}")


def _names(model: PandA) -> str:
    """'3 eyes, 7 mouth': a fit's part names, '' where it has none."""
    return ", ".join(f"{k} {v}" for k, v in sorted(model.part_names_.items()))


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--parts", "show_parts", is_flag=True,
              help="Also a line per part: its name, its area (share of positions where its map, min-max rescaled as "
                   "edits use it, is above 0.5) and its top appearances (ranked as the explorer ranks them).")
@click.option("--json", "as_json", is_flag=True, help="The file's whole metadata as JSON, for scripts.")
def info(factors, show_parts, as_json):
    """What a factor file holds: generator, layer, ranks, data, errors, timings, background fill, part names.

    \b
    Examples:
      panda info factors.safetensors
      panda info factors.safetensors --parts
      panda info factors.safetensors --json | jq .heldout_error
    """
    model = PandA.load(factors)
    meta = model.metadata()
    if as_json:
        click.echo(json.dumps({"file": str(factors)} | meta, indent=2))
        return
    src = model.generator_source_
    extra = ", ".join(f"{what} {src[key]}" for key, what in (("truncation_psi", "truncation psi"),
                                                             ("noise_mode", "noise mode"), ("class", "seeds of class"))
                      if key in src)
    c, h, w = model.layer_shape_
    heldout = ("not scored" if math.isnan(model.heldout_error_)
               else f"held-out {model.heldout_error_:.4f} ({model.n_heldout_} samples)")
    background = ("none searched (fit with --background-samples > 0 to store one)" if model.background_ is None else
                  f"appearance {'+' if model.background_sign_ > 0 else '-'}{model.background_}"
                  + ("" if math.isnan(model.background_gain_) else
                     f", {100 * model.background_gain_:.0f}% of the way to the surroundings' colour when searched"))
    names = _names(model) or "none (`panda name-parts` names them)"
    rows = [("fitted on", model.generator_label() + (f", {extra}" if extra else "")),
            ("layer", f"{model.layer_} ({c} x {h} x {w})"),
            ("ranks", f"R_C = {model.n_appearances} appearances, R_S = {model.n_parts} parts; appearance mixing W: "
                      + ("none" if model.mixing_ is None else "fitted, " + (
                          "all directions" if model.mixing_directions is None
                          else f"{model.mixing_directions} directions of their own"))),
            ("data", f"{model.n_samples_} " + {"seeds": f"samples from seed {model.seed_}", "latents": "given latents",
                                                "features": "feature maps"}[model.data_]
                     + f"; {model.n_passes_} passes, {model.n_iter_} iteration(s) of at most {model.max_iter} (tol "
                       f"{model.tol:g}), {model.n_init} random starts of the parts"
                     + (f", up to {model.reseed} re-seeding rounds" if model.reseed else "")
                     + f" (random state {model.random_state})"),
            ("error", f"training {model.train_error_:.4f}, {heldout}"),
            ("time", f"features {model.extract_time_:.2f} s, fit {model.fit_time_:.2f} s"),
            ("background", background), ("part names", names)]
    click.echo(f"{factors}: panda factors (panda {meta['panda_version']}, file format {meta['format_version']})")
    for key, text in rows:
        click.echo(f"  {key:<11} {text}")
    if show_parts:
        for k in range(model.n_parts):
            top = " ".join(map(str, model.top_appearances(k, 5, by="specific")))
            # the area an edit's measurement calls the part's (its min-max rescaled map > 0.5: edit.png's caption)
            area = float((part_profile(model, k) > 0.5).float().mean())
            click.echo(f"  {model.part_label(k):<18} area {100 * area:3.0f}%   top appearances {top}")


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@sample_options(n_images=8, out="out/parts")
def parts(factors, seeds, seed, n_images, latent, save_arrays, out, device, quiet, **gen):
    """Draw the parts of FACTORS as heat maps over sample images (parts.png).

    \b
    Example:  panda parts factors.safetensors --seeds 0-7 --out out/parts
    """
    del quiet  # nothing here shows progress; -q is taken as by every command that draws samples
    model, gen = _load(factors, device, **gen)
    samples, seed_list = _shown(*_samples(gen, seeds, seed, n_images, latent), streams=False)
    folder = check_writable(out)
    images = gen.render(samples)
    path = save_png(parts_figure(model, images, seed_list), folder / "parts.png")
    click.echo(f"wrote {path}")
    if save_arrays:
        _arrays(path, {"images": images, "parts": model.part_maps()}, seed_list)


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--part", "-k", default=None, metavar="K|NAME",
              help="Part k to edit, by index or by name (`panda name-parts`; a name several parts share: their union).")
@click.option("--mask", type=click.Path(dir_okay=False), default=None,
              help="Or edit your own region: a PNG whose white pixels mark it.")
@click.option("--region", type=click.Choice(REMOVAL_REGIONS), default=None,
              help="Or a face region found in each image by MediaPipe FaceMesh.")
@click.option("--dilate", type=click.IntRange(min=0), default=5, help="With --region: grow the region by this many pixels.")
@click.option("--appearance", "-j", type=int, default=None,
              help="Appearance j to add; default: the part's top appearance by energy (with --mask, --region or a "
                   "name several parts share: the appearance most particular to the region, on 32 calibration "
                   "samples).")
@click.option("--alpha", "-a", type=FINITE, default=1.0, help="Strength, in units of the layer's typical activation norm.")
@click.option("--edit", "edits", type=EDIT, multiple=True,
              help="PART,APPEARANCE,ALPHA (PART: an index, or the name of one part); repeat to combine edits (no sweep "
                   "then).")
@click.option("--sweep/--no-sweep", default=True, help="With one edit: columns -2x, -1x, 0, +1x, +2x alpha.")
@click.option("--gif", is_flag=True,
              help=f"With one edit: also an animated GIF of it growing from -2x to +2x alpha and back ({GIF_STEPS} "
                   f"strengths), the samples side by side.")
@REFINE
@SAVE_IMAGES
@sample_options(n_images=6, out="out/edit")
def edit(factors, part, mask, region, dilate, appearance, alpha, edits, sweep, gif, refine_first, save_images, seeds,
         seed, n_images, latent, save_arrays, out, device, quiet, **gen):
    """Edit samples locally: add appearance j to part k, or to your own region (edit grid PNG).

    \b
    Examples:
      panda edit factors.safetensors --part 6 --appearance 5 --alpha 1.5
      panda edit factors.safetensors --edit 6,5,1.5 --edit 9,1,-1 --seeds 0-3
      panda edit factors.safetensors --mask hat.png --appearance 3     (any region you draw)
      panda edit factors.safetensors --region mouth --seeds 0-5        (found in each image)
      panda edit factors.safetensors --part 6 --appearance 5 --refine  (each image's own part 6)
      panda edit factors.safetensors --part mouth --seeds 0-5          (the parts `panda name-parts` named)
    """
    bars = _bars(quiet)
    model, gen = _load(factors, device, **gen)
    samples, seed_list = _samples(gen, seeds, seed, n_images, latent)
    part, named = _part_or_union(model, part, refine_first)
    if mask is not None or region is not None or named is not None:
        if refine_first:
            _check_refine(part, mask, region)
        _edit_region(model, gen, samples, seed_list, part, mask, region, named, dilate, appearance, alpha, edits,
                     sweep, gif, save_images, save_arrays, out, bars)
        return
    if gif and (len(edits) > 1 or not sweep):
        raise PandaError("--gif animates one edit's sweep: give one --part (or one --edit), without --no-sweep.")
    if edits:
        if part is not None or appearance is not None:
            raise PandaError("give either --edit PART,APPEARANCE,ALPHA (repeatable) or --part/--appearance/--alpha, not both.")
        edit_list = check_edits(model, [e.named(model) for e in edits])
    else:
        if part is None:
            raise PandaError("say which part to edit: --part K (`panda parts` shows them), or --edit PART,APPEARANCE,ALPHA.")
        model.check_part(part)
        j = model.top_appearances(part, 1)[0] if appearance is None else model.check_appearance(appearance)
        edit_list = check_edits(model, [Edit(part, j, alpha)])
    folder = check_writable(out)

    refined = _LastSamples(lambda some: _own_parts(model, gen, some))

    def own(some):  # each sample's own parts with --refine, else the global ones
        return refined(some) if refine_first else None

    if len(edit_list) == 1 and sweep:
        e = edit_list[0]
        _write_sweep(model,
                     lambda some, _labels, alphas: measured_sweep(model, gen, some, e.part, e.appearance, alphas,
                                                                  parts=own(some)),
                     lambda some, _labels: gen.to_unit(edit_images(model, gen, some, [e], parts=own(some))).cpu(),
                     e.alpha, samples, seed_list,
                     folder / f"edit_part{e.part}_app{e.appearance}{'_refined' if refine_first else ''}.png", gif,
                     save_images, save_arrays, "the part", bars)
    else:
        shown, shown_labels = _shown(samples, seed_list)
        edited = gen.to_unit(edit_images(model, gen, shown, edit_list, parts=own(shown))).cpu()
        original = gen.render(shown)
        png = folder / ("edit_refined.png" if refine_first else "edit.png")
        path = save_png(edits_figure(model, original, edited, edit_list, shown_labels), png)
        click.echo(f"wrote {path}")
        if save_images:
            _export_all(folder, samples, seed_list, "edited",
                        lambda some, _labels: gen.to_unit(edit_images(model, gen, some, edit_list, parts=own(some))).cpu(),
                        bars)
        if save_arrays:  # edits: (E, 3) rows of part, appearance, alpha
            _arrays(path, {"original": original, "edited": edited,
                           "edits": [[e.part, e.appearance, e.alpha] for e in edit_list]}, shown_labels)


def _edit_region(model, gen, samples, seed_list, part, mask, region, named, dilate, appearance, alpha, edits, sweep,
                 gif, save_images, save_arrays, out, bars: bool) -> None:
    """`panda edit --mask/--region`, or --part NAME for several parts: one appearance added to a region, drawn as a
    sweep. ``named``: (the named parts' union (H, W), its label, the name) or None."""
    given = [flag for flag, value in (("--part", named or part), ("--edit", edits or None), ("--mask", mask),
                                      ("--region", region)) if value is not None]
    if len(given) > 1:
        raise PandaError(f"{' and '.join(given)} {'both' if len(given) == 2 else 'all'} say what to edit: give only "
                         f"one of --part K, --edit PART,APPEARANCE,ALPHA, --mask FILE.PNG or --region "
                         f"{'|'.join(REMOVAL_REGIONS)}.")
    if not sweep:
        raise PandaError(f"an edit of {'several parts' if named else 'a mask or face region'} is drawn as a sweep: "
                         f"leave out --no-sweep.")
    check_alpha(alpha)
    fixed = None  # (the region on the layer's grid, its label, its file name) where it is the same in every image
    if mask is not None:
        fixed = (region_for(model, mask=mask), "mask", "mask")  # read once, refused before anything is drawn
    elif named is not None:
        fixed = named
    if appearance is None:
        j, ranked_on = calibrated_appearance(model, gen, None if fixed is None else fixed[0], region, dilate)
        click.echo(f"appearance {j}: the most particular to the region on {ranked_on} calibration samples", err=True)
    else:
        j = model.check_appearance(appearance)
    folder = check_writable(out)

    found = _LastSamples(lambda some, labels: _region(model, gen, some, labels, None, None, region, dilate))

    def regions_of(some, labels):  # the mask or parts as given; a face region is found in each image of each chunk
        return (fixed[0], None, fixed[1], None) if fixed is not None else found(some, labels)

    def measure(some, labels, alphas):
        grid_regions, masks, label, images = regions_of(some, labels)  # a face region's images: rendered once
        return measured_region_sweep(model, gen, some, grid_regions, j, alphas, masks, label, images)

    def apply(some, labels):  # the edit alone, without the originals a measurement renders too
        return gen.to_unit(region_sweep(model, gen, some, regions_of(some, labels)[0], j, [alpha]))[:, 0].cpu()

    _write_sweep(model, measure, apply, alpha, samples, seed_list,
                 folder / f"edit_{region or fixed[2]}_app{j}.png", gif, save_images, save_arrays, "the region", bars)


def _write_sweep(model, measure, apply, alpha: float, samples, seed_list: list, png: Path, gif: bool,
                 save_images: bool, save_arrays: bool, where: str, bars: bool) -> None:
    """An edit's sweep figure (``measure(samples, labels, alphas) -> SweepResult``) of the samples shown
    (:func:`_shown`), and with --gif its animation, with --save-arrays its data; with --save-images every sample at
    the edit's own strength (``apply(samples, labels) -> images`` in [0, 1])."""
    shown, labels = _shown(samples, seed_list)
    result = measure(shown, labels, [f * alpha for f in DEFAULT_ALPHAS])
    path = save_png(sweep_figure(model, result, labels), png)
    if gif:
        strengths = torch.linspace(-2 * alpha, 2 * alpha, GIF_STEPS).tolist()
        click.echo(f"wrote {save_gif(sweep_animation(model, measure(shown, labels, strengths), labels), png.with_suffix('.gif'))}")
    click.echo(f"wrote {path} (appearance {result.appearance}; {100 * result.share:.0f}% of the pixel change inside "
               f"{where})")
    if save_images:  # each sample at the edit's own strength
        _export_all(png.parent, samples, seed_list, "edited", apply, bars)
    if save_arrays:
        _arrays(path, result, labels)


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--part", "-k", required=True, metavar="K|NAME", help="Part k to refine and edit, by index or by name (one part's).")
@click.option("--appearance", "-j", type=int, default=None, help="Appearance for the edit; default: the part's top one by energy.")
@click.option("--alpha", "-a", type=FINITE, default=2.0, help="Edit strength.")
@click.option("--steps", type=int, default=100, help="Refinement steps per image.")
@click.option("--radius", type=int, default=0,
              help="Positions a part may move beyond its (translated) start's support: 0 keeps each where it is, "
                   "more lets it reconstruct the image better and edit less locally (benchmarks/refine_locality.md).")
@click.option("--search", type=int, default=2,
              help="Start from the global parts translated by up to this many positions, whichever fits the image best (0: no search).")
@click.option("--min-gain", type=float, default=MIN_TRANSLATION_GAIN,
              help="Start from a translation only where it lowers the image's relative error by more than this (0: "
                   "the best translation however little it gains; on aligned images those move small parts off "
                   "their regions).")
@click.option("--shift", type=SHIFT, default="0,0",
              help="Translate the features by DY,DX layer positions first (periodically), to try refinement on misaligned data.")
@SAVE_IMAGES
@sample_options(n_images=6, out="out/refine")
def refine(factors, part, appearance, alpha, steps, radius, search, min_gain, shift, save_images, seeds, seed, n_images,
           latent, save_arrays, out, device, quiet, **gen):
    """Fit sample-specific parts for each image and compare them and their edits with the global parts.

    \b
    Example:  panda refine factors.safetensors --part 2 --shift 0,2 --seeds 0-5
    """
    bars = _bars(quiet)
    model, gen = _load(factors, device, **gen)
    part, _ = _part_or_union(model, part, refine_first=True)
    j = model.top_appearances(part, 1)[0] if appearance is None else model.check_appearance(appearance)
    check_alpha(alpha)
    check_refine_args(model.layer_shape_[1:], steps, radius, shift, search, min_gain)  # before anything is written
    every, every_label = _samples(gen, seeds, seed, n_images, latent)
    samples, seed_list = _shown(every, every_label)
    folder = check_writable(out)

    compared = _LastSamples(lambda some: compare_refinement(model, gen, some, part, j, alpha, shift, steps, radius,
                                                            search, min_gain=min_gain))
    cmp = compared(samples)
    path = save_png(refine_figure(model, cmp, seed_list, steps), folder / f"refine_part{part}.png")
    dy, dx = shift
    click.echo(f"wrote {path}\n  reconstruction error: global {cmp.error_global:.4f}, refined {cmp.error_refined:.4f}\n"
               f"  median ROIR of the edit (lower is better): global {cmp.roir_global:.3f}, refined {cmp.roir_refined:.3f}\n"
               f"  images whose refinement started from the shift ({dy},{dx}): {cmp.shift_found:.0%}")
    if save_images:  # every sample's edit with the global part and with its own, half a chunk of samples at a time
        def both(some, _labels):  # all shown: the figure's comparison
            c = compared(some)
            return torch.stack([c.with_global, c.with_refined], 1).flatten(0, 1)  # (2n, 3, H, W): each sample's pair

        _export_all(folder, every, every_label, "refine", both, bars, chunk=max(1, CHUNK // 2),
                    files=lambda names: [f"{kind}_{file_label(label)}" for label in names for kind in ("global", "refined")])
    if save_arrays:
        _arrays(path, cmp, seed_list)


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--part", "-k", default=None, metavar="K|NAME",
              help="Remove what is in part k, by index or by name (`panda name-parts`; a name several parts share: "
                   "their union).")
@click.option("--mask", type=click.Path(dir_okay=False), default=None, help="Or a PNG whose white pixels mark the region.")
@click.option("--region", type=click.Choice(REMOVAL_REGIONS), default=None,
              help="Or a face region found in each image by MediaPipe FaceMesh (eyes: glasses; forehead: hair over it).")
@click.option("--dilate", type=click.IntRange(min=0), default=5, help="With --region: grow the region by this many pixels.")
@click.option("--alpha", "-a", type=FINITE, default=1.5, help="Strength of the background appearance.")
@click.option("--background", "-b", default="auto",
              help="'auto': the appearance that best fills this region with its surroundings on these images "
                   "(also writes the runners-up side by side); 'global': the one chosen when fitting; or an "
                   "appearance index, '-J' for its opposite sign.")
@REFINE
@SAVE_IMAGES
@sample_options(n_images=6, out="out/remove")
def remove(factors, part, mask, region, dilate, alpha, background, refine_first, save_images, seeds, seed, n_images,
           latent, save_arrays, out, device, quiet, **gen):
    """Context-aware object removal: fill a part, a mask or a face region with a background appearance.

    \b
    Examples:
      panda remove digiface.safetensors --region eyes --seeds 1,5   (glasses)
      panda remove factors.safetensors --part 8 --background global
      panda remove factors.safetensors --part 8 --refine             (each image's own part 8)
      panda remove factors.safetensors --mask hat.png --background 3 --alpha 2
    """
    bars = _bars(quiet)
    model, gen = _load(factors, device, **gen)
    if sum(v is not None for v in (part, mask, region)) != 1:
        raise PandaError(f"say what to remove: exactly one of --part K, --mask FILE.PNG or --region {'|'.join(REMOVAL_REGIONS)}.")
    check_alpha(alpha)
    part, named = _part_or_union(model, part, refine_first)
    background, sign = parse_background(model, background)
    all_samples, all_labels = _samples(gen, seeds, seed, n_images, latent)
    samples, seed_list = _shown(all_samples, all_labels)
    regions_of = _LastSamples(lambda some, labels: _region(model, gen, some, labels, part, mask, region, dilate,
                                                           refine_first=refine_first, named=named))
    grid_regions, masks, label, images = regions_of(samples, seed_list)
    folder = check_writable(out)
    result = removal(model, gen, samples, grid_regions, alpha, background, masks, sign, images)
    name = (f"remove_{named[2]}" if named else f"remove_part{part}" if part is not None
            else f"remove_{region}" if region else "remove_mask")
    name += "_refined" if refine_first else ""
    path = save_png(remove_figure(result, seed_list, label), folder / f"{name}.png")
    if save_images:
        if len(all_labels) > len(seed_list) and result.search is not None:
            click.echo(f"  the fill chosen on the first {len(seed_list)} samples fills the region in all of them",
                       err=True)

        def removed(some, labels):  # a face region is found (a part refined) in each image of each chunk
            regions = regions_of(some, labels)[0]  # all shown: found once
            return gen.to_unit(remove_region(model, gen, some, regions, alpha, result.appearance, result.sign)).cpu()

        _export_all(folder, all_samples, all_labels, "removed", removed, bars)
    if save_arrays:
        _arrays(path, result, seed_list)
    click.echo(f"wrote {path}\n  background appearance {result.appearance} ({result.sign:+g}); colour distance from "
               f"the region to its surroundings: {result.distance_before:.4f} before, {result.distance_after:.4f} after")
    if result.distance_after >= result.distance_before:  # by its own measure this did not remove anything
        why = (f"none of the {len(result.search.table)} fills tried brings it closer" if result.search is not None
               else f"appearance {'+' if result.sign > 0 else '-'}{result.appearance} moves it away")
        click.echo(f"  note: {why} at alpha {alpha:g}: the region may already look like its surroundings, or want another "
                   f"--alpha; look at the pictures", err=True)
    if result.search is not None:  # auto: show the runners-up, the pick is a colour criterion and may not look best
        fills = candidate_fills(model, gen, samples[:4], result.regions[:4], result.search, alpha)
        sheet_path = save_png(candidates_figure(result, fills, seed_list[:4], label), folder / f"{name}_candidates.png")
        others = ", ".join(f"{'+' if s > 0 else '-'}{j} ({100 * g:.0f}%)" for j, s, g in result.search.ranked(6)[1:])
        click.echo(f"wrote {sheet_path}\n  runners-up (share of the way to the surroundings' colour): {others};\n"
                   f"  if one of them looks more like removal, pass it: --background J (or -J for the opposite sign)")


#: The most images one transfer table holds (its targets, at most FIGURE_ROWS, x sources): each is one generator pass,
#: and the table a picture; --save-images streams any number of targets.
MAX_TRANSFER_PAIRS = 400


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--part", "-k", "parts", multiple=True, metavar="K|NAME",
              help="A part to transfer, by index or by name (`panda name-parts`: all parts so named); repeat for several.")
@click.option("--mask", type=click.Path(dir_okay=False), default=None, help="Or a PNG whose white pixels mark the region.")
@click.option("--region", type=click.Choice(REMOVAL_REGIONS), default=None,
              help="Or a face region found in each image (target and source) by MediaPipe FaceMesh.")
@click.option("--dilate", type=click.IntRange(min=0), default=5, help="With --region: grow the region by this many pixels.")
@click.option("--sources", type=SEEDS, default="100-104", help="The images whose region is given to the others (seeds).")
@click.option("--source-latent", type=click.Path(dir_okay=False), default=None,
              help="Or the sources as a latent file (as --latent takes it).")
@click.option("--source-class", default=None,
              help="A conditional generator's class for the sources (index or name; --class sets the targets'), e.g. "
                   "blue eyes' irises given to brown ones.")
@click.option("--alpha", "-a", type=FINITE, default=1.0,
              help="1: the source's appearance in the region; 0: the target's own; between: a blend.")
@click.option("--appearance", "-j", "appearances", type=int, multiple=True,
              help="Transfer only this appearance (repeat for several); default all.")
@REFINE
@click.option("--min-share", type=click.FloatRange(0, 1), default=MIN_PART_SHARE,
              help="With --mask or --region: the parts that span it have at least this share of their mass inside it; "
                   "lower carries more of the source's layout, higher keeps the change closer to the region.")
@SAVE_IMAGES
@sample_options(n_images=4, out="out/transfer")
def transfer(factors, parts, mask, region, dilate, sources, source_latent, source_class, alpha, appearances, refine_first,
             min_share, save_images, seeds, seed, n_images, latent, save_arrays, out, device, quiet, **gen):
    """Appearance transfer: give each target what each source has in a region (its mouth, its eyes, ...), a table.

    \b
    Examples:
      panda transfer factors.safetensors --part mouth --seeds 0-3 --sources 100-104
      panda transfer factors.safetensors --region eyes --seeds 0-3 --sources 7,12
      panda transfer factors.safetensors --part 4 --part 7 --alpha 0.5      (half way)
      panda transfer factors.safetensors --mask hat.png --latent mine.npz --source-latent theirs.npz
    """
    bars = _bars(quiet)
    model, gen = _load(factors, device, **gen)
    if sum(v is not None for v in (parts or None, mask, region)) != 1:
        raise PandaError(f"say what to transfer: exactly one of --part K (repeatable; an index or a name), --mask "
                         f"FILE.PNG or --region {'|'.join(REMOVAL_REGIONS)}.")
    check_alpha(alpha)
    part_list = _part_list(model, parts) if parts else None
    for j in appearances:
        model.check_appearance(j)
    every, every_label = _samples(gen, seeds, seed, n_images, latent)
    targets, target_labels = _shown(every, every_label)  # the table; --save-images gives every target all sources
    if source_latent is not None:
        if source_class is not None:
            raise PandaError("--source-class draws the sources from seeds: a latent file brings its own labels.")
        source_samples, source_labels = _samples(gen, None, 0, 0, source_latent)
        source_labels = [f"source {s}" for s in source_labels]
    elif source_class is not None:
        index = gen.class_index_of(source_class)
        source_samples, source_labels = gen.sample(sources, class_index=index), [f"{s} ({gen.classes[index]})"
                                                                                 for s in sources]
    else:
        source_samples, source_labels = sources, sources
    if len(targets) * len(source_samples) > MAX_TRANSFER_PAIRS:
        raise PandaError(f"{len(targets)} targets x {len(source_samples)} sources is more than {MAX_TRANSFER_PAIRS} "
                         f"images for one table: give fewer (--seeds, --sources).")
    if refine_first:
        _check_refine(part_list, mask, region)
    shared: dict = {}  # what the sources give, found once
    per_target = None  # (targets, labels) -> what the targets give where it is their own: parts refined, faces found
    if part_list is not None:
        shared["parts"], name = part_list, "parts" + "_".join(map(str, part_list))
        if refine_first:
            shared["source_parts"] = _own_parts(model, gen, source_samples)
            name += "_refined"
            per_target = lambda some, _labels: {"target_parts": _own_parts(model, gen, some)}  # noqa: E731
    elif mask is not None:
        shared["region"], name = region_for(model, mask=mask), "mask"
    else:  # FaceMesh's region in each source and each target; the images it looked at are the originals
        source_region, source_masks, _, source_seen = _region(model, gen, source_samples, source_labels, None, None,
                                                              region, dilate, "--sources")
        shared.update(source_region=source_region, source_masks=source_masks, label=region)
        name = region

        def faces_of(some, labels) -> dict:
            found, masks, _, seen = _region(model, gen, some, labels, None, None, region, dilate, "--seeds")
            return {"region": found, "masks": masks, "originals": (seen, source_seen)}
        per_target = faces_of
    folder = check_writable(out)

    transferred = _LastSamples(lambda some, labels: transfer_regions(
        model, gen, some, source_samples, alpha=alpha, appearances=list(appearances) or None, min_share=min_share,
        **shared, **(per_target(some, labels) if per_target else {})))
    result = transferred(targets, target_labels)
    path = save_png(transfer_figure(model, result, target_labels, source_labels), folder / f"transfer_{name}.png")
    click.echo(f"wrote {path}\n  {result.label}: {100 * result.share:.0f}% of the pixel change inside the targets' "
               f"region; there {100 * result.closer:.0f}% closer to the source, pixel by pixel")
    if save_images:  # every target with every source, a chunk of about CHUNK images at a time
        _export_all(folder, every, every_label, "transfer",
                    lambda some, labels: transferred(some, labels).images.flatten(0, 1),  # all shown: the table's
                    bars, chunk=max(1, CHUNK // len(source_labels)),
                    files=lambda names: [f"transfer_{file_label(t)}_from_{file_label(s)}" for t in names
                                         for s in source_labels])
    if save_arrays:
        _arrays(path, result, target_labels)


def _part_list(model: PandA, parts) -> list[int]:
    """--part values, each an index or a name (`panda name-parts`: every part so named) -> part indices."""
    return [k for p in parts for k in ([model.check_part(int(p))] if p.lstrip("-").isdigit() else model.parts_named(p))]


def _parts_region(model: PandA, ks: list[int]) -> tuple[torch.Tensor, str]:
    """Several parts as one region: (the union of their maps, each rescaled to [0, 1], clipped at 1, (H, W); a
    label)."""
    return (torch.stack([region_for(model, part=k) for k in ks]).sum(0).clamp(max=1.0),
            ", ".join(model.part_label(k) for k in ks))


def _part_or_union(model: PandA, part: str | None, refine_first: bool) -> tuple[int | None, tuple | None]:
    """--part as `edit`, `remove` and `refine` take it, an index or a name: (the part, None) where it picks one
    part, (None, (the parts' union (H, W), its label, its name in file names)) where a name picks several;
    refinement (``refine_first``) needs one part."""
    if part is None:
        return None, None
    ks = _part_list(model, [part])
    if len(ks) == 1:
        return ks[0], None
    if refine_first:
        raise PandaError(f"'{part}' names parts {', '.join(map(str, ks))}, and refinement fits one part: give one of "
                         f"them (--part {ks[0]}).")
    click.echo(f"'{part}' names parts {', '.join(map(str, ks))}: their union is the region", err=True)
    # labelled by the name, which fits a picture's column; in file names without spaces or slashes
    return None, (_parts_region(model, ks)[0], part, file_label(part))


#: The most samples `panda retrieve` shows at each end of its ranking.
MAX_RETRIEVED = 16


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--appearance", "-j", type=int, required=True, help="Appearance j to look for.")
@click.option("--part", "-k", "parts", multiple=True, metavar="K|NAME",
              help="Score it in this part, by index or by name (all parts so named); repeat for several. Default: the "
                   "whole image.")
@click.option("--mask", type=click.Path(dir_okay=False), default=None, help="Or in the white pixels of this PNG.")
@click.option("--region", type=click.Choice(REMOVAL_REGIONS), default=None,
              help="Or in a face region found in each image by MediaPipe FaceMesh (every sample rendered and searched: "
                   "about 8 ms a sample on 2 CPU cores, 10 s for 1,000; samples without a face are not ranked).")
@click.option("--dilate", type=click.IntRange(min=0), default=5, help="With --region: grow the region by this many pixels.")
@click.option("--top", type=click.IntRange(1, MAX_RETRIEVED), default=8, help="Samples shown at each end.")
@sample_options(n_images=2000, out="out/retrieve")
def retrieve(factors, appearance, parts, mask, region, dilate, top, seeds, seed, n_images, latent, save_arrays, out,
             device, quiet, **gen):
    """Which samples hold the most (and the least) of appearance j in a part, a mask or the whole image: scores
    every sample (seeds or your latents, any number) and draws both ends.

    \b
    Examples:
      panda retrieve factors.safetensors -j 8 --part mouth --n-images 5000
      panda retrieve factors.safetensors -j 8 --region mouth --n-images 2000   (each face's own mouth, FaceMesh)
      panda retrieve factors.safetensors -j 3 --latent mine.npz --save-arrays    (a score for each of your latents)
    """
    model, gen = _load(factors, device, **gen)
    j = model.check_appearance(appearance)
    given = [option for option, value in (("--part", parts), ("--mask", mask), ("--region", region)) if value]
    if len(given) > 1:
        raise PandaError(f"score in one of --part, --mask or --region, not in {' and '.join(given)}.")
    face_region = region
    if parts:
        ks = _part_list(model, parts)
        (region, label), name = _parts_region(model, ks), "part" + "_".join(map(str, ks))
    elif mask is not None:
        region, label, name = region_for(model, mask=mask), "the mask", "mask"
    elif face_region is not None:
        region, label, name = None, f"each face's {face_region} (FaceMesh)", face_region
    else:
        region, label, name = None, "the whole image", "image"
    samples, labels = _samples(gen, seeds, seed, n_images, latent)
    if len(labels) < 2:
        raise PandaError("retrieval ranks samples: give at least 2 (--n-images, --seeds or --latent).")
    folder = check_writable(out)
    result = retrieve_samples(model, gen, samples, j, region, progress=_bars(quiet), face_region=face_region,
                              dilate=dilate)
    ranked = len(labels) if result.found is None else int(result.found.sum())
    if ranked < 2:
        raise PandaError(f"FaceMesh found the {face_region} in only {ranked} of {len(labels)} samples: give more.")
    most, least, most_loc, least_loc = retrieval_ends(model, gen, samples, result, min(top, ranked // 2))
    path = save_png(retrieval_figure(model, result, most_loc, least_loc, [labels[i] for i in most],
                                     [labels[i] for i in least], label, ranked),
                    folder / f"retrieve_a{j}_{name}.png")
    for what, idx in (("most", most), ("least", least)):
        click.echo(f"{what}: " + ", ".join(f"{labels[i]} ({float(result.scores[i]):+.2f})" for i in idx))
    if result.found is not None:
        click.echo(f"ranked the {ranked} of {len(labels)} samples in which FaceMesh found the {face_region}")
    click.echo(f"wrote {path}")
    if save_arrays:
        extra = {} if result.found is None else {"found": result.found}  # scores are NaN where not found
        _arrays(path, {"scores": result.scores, "region": result.region, "most": torch.tensor(most),
                       "least": torch.tensor(least), **extra}, labels)


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--appearance", "-j", type=int, default=None, help="Show where appearance j is, across samples.")
@click.option("--top", type=int, default=None, help="Or: the K strongest concepts of one image (the first seed).")
@sample_options(n_images=8, out="out/localize")
def localize(factors, appearance, top, seeds, seed, n_images, latent, save_arrays, out, device, quiet, **gen):
    """Concept localisation: where each appearance is (A^T Z), as heat maps over the images.

    \b
    Examples:
      panda localize factors.safetensors --appearance 3 --seeds 0-7
      panda localize factors.safetensors --top 6 --seed 12
      panda localize factors.safetensors -j 3 --n-images 1000 --save-arrays   (appearance 3's maps of all 1,000)
    """
    bars = _bars(quiet)
    model, gen = _load(factors, device, **gen)
    if (appearance is None) == (top is None):
        raise PandaError("give either --appearance J (one concept, many images) or --top K (one image, K concepts).")
    every, every_label = _samples(gen, seeds, seed, n_images, latent)
    samples, seed_list, extra = every, every_label, {}
    if appearance is not None:
        model.check_appearance(appearance)
        samples, seed_list = _shown(every, every_label, streams=False, rest=(
            f"--save-arrays writes appearance {appearance}'s maps of all of them (appearance_maps)" if save_arrays
            else f"the others are not used (--save-arrays would save appearance {appearance}'s maps of all of them)"))
        folder = check_writable(out)
        found = localisation(model, gen, samples)
        path = save_png(localize_figure(model, found, appearance, seed_list), folder / f"localize_app{appearance}.png")
        if save_arrays and len(every_label) > len(seed_list):  # (N, H, W) a_j^T Z_i of every sample, streamed
            extra = {"appearance_maps": appearance_maps(model, gen, every, appearance, progress=bars),
                     "appearance_labels": [str(label) for label in every_label]}
    else:
        if not 1 <= top <= model.n_appearances:
            raise PandaError(f"--top {top} must be in 1..{model.n_appearances}.")
        folder = check_writable(out)
        found = localisation(model, gen, samples[:1])
        path = save_png(localize_top_figure(model, found, top, seed_list[0]),
                        folder / f"localize_top_{file_label(sample_label(seed_list[0]))}.png")
        seed_list = seed_list[:1]
    click.echo(f"wrote {path}")
    if save_arrays:  # maps: (N, R_C, H, W), every appearance on the layer's grid (A^T Z), of the samples shown
        _arrays(path, {"images": found.images, "maps": found.maps, **extra}, seed_list)


@main.command("project")
@click.argument("photo", type=click.Path(dir_okay=False))
@generator_options(None)
@click.option("--space", type=click.Choice(["w", "w+", "z"]), default=None,
              help="StyleGANs: w (one latent for every layer) or w+ (one per layer: closer reconstructions; the "
                   "default); any generator: z (the default for those without a mapping network, e.g. the DCGANs).")
@click.option("--steps", type=COUNT, default=300, help="Optimisation steps.")
@click.option("--lr", type=FINITE, default=0.1, help="Peak learning rate (Adam).")
@click.option("--out", "-o", default="latent.safetensors",
              help="Latent file to write, with the photo and its reconstruction beside it as OUT_projection.png.")
@click.option("--overwrite", is_flag=True, help="Replace --out (and its picture) if they exist.")
@device_option
@QUIET
def project_cmd(photo, space, steps, lr, out, overwrite, device, quiet, **gen):
    """Find the latent that reproduces PHOTO, to edit it with --latent FILE: in W or W+ for a StyleGAN, in z for
    other generators (from the closest of 64 seeds; with a conditional one, give --class or let the closest seed's
    class be used).

    The loss is pixel MSE at full, half and quarter resolution (NVlabs' projector uses LPIPS, a perceptual network
    that cannot be had here); the PSNR of the reconstruction is printed.

    \b
    Examples:
      panda project me.jpg --generator ffhq.pkl --out me.safetensors
      panda edit ffhq_factors.safetensors --generator ffhq.pkl --latent me.safetensors --part 3
      panda project me.jpg --generator dcgan-celeba --out me.safetensors   (z; then panda edit ... --latent me.safetensors)
    """
    if gen["generator_name"] is None:
        raise PandaError("say which generator to project into: --generator NAME_OR_PATH.")
    out = check_latent_path(out)
    sheet_path = out.with_name(out.stem + "_projection.png")
    for written in (out, sheet_path):  # before the search, not after; never over the photo itself
        if Path(photo).resolve() == written.resolve():
            raise PandaError(f"--out {out} would write over the photo '{photo}': choose another name.")
        check_output_file(written, overwrite)
    generator = _generator(device, **gen)
    target = load_image(photo, generator.image_size)
    result = project(generator, target, space, steps, lr, progress=_bars(quiet))
    path = save_latent(result, generator, out)
    sheet = grid([[to_pil(result.image, scale_for(result.image[None])), to_pil(result.reconstruction, scale_for(result.image[None]))]],
                 None, ["photo", f"reconstruction\n{result.psnr:.1f} dB"],
                 title=f"projection into {result.space}, {steps} steps")
    png = save_png(sheet, sheet_path)
    click.echo(f"wrote {path} and {png}\n  PSNR {result.psnr:.2f} dB (pixel MSE {result.losses[-1]:.4f} at the last step)")


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", help="Address to listen on (127.0.0.1: this machine only).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, help="Port to listen on.")
@click.option("--allow-naming", is_flag=True,
              help="With --host beyond this machine: let the page name parts, writing into FACTORS (on 127.0.0.1 it "
                   "always may).")
@generator_options(None)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0,
              help="The sample the page opens on (with --latent: an index into the file's latents).")
@click.option("--latent", type=click.Path(dir_okay=False), default=None,
              help="Explore the latents of a file instead of seeds: your own (.npy of z, .npz/.safetensors with z "
                   "or ws and labels) or the one `panda project` wrote (your own photo).")
@device_option
def serve(factors, host, port, allow_naming, seed, latent, device, **gen):
    """Explore FACTORS in the browser: sliders for part, appearance and alpha; live edits, maps, removal. Parts
    named on the page are saved into FACTORS (the file as it was when the explorer opened: FACTORS.bak).

    \b
    Example:  panda serve out/demo/factors.safetensors --port 8000   (then open http://127.0.0.1:8000/)
    """
    model, generator = _load(factors, device, **gen)
    # the page shows its stack of edits as this command (panda edit ...), with the generator options given here
    command = shlex.join(["panda", "edit", factors]
                         + _as_arguments(_given_params(exclude=("factors", "host", "port", "allow_naming", "seed"))))
    run_server(model, generator, host, port, seed, load_latents(latent, generator) if latent else None, factors,
               command, allow_naming)


@main.command()
@generator_options(DEFAULT_GENERATOR)
@click.option("--layer", default=None, help="Layer; default: the generator's default layer.")
@click.option("--rank-parts", "-rs", type=COUNT, default=None,
              help="R_S parts; default: the generator's choice at its default layer (dcgan-celeba 40, dcgan-digiface 24: "
                   "see benchmarks/semantic_parts.md), else 12.")
@click.option("--n-samples", "-n", type=click.IntRange(1, 10_000_000), default=5000, help="Training samples.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, help="First training seed and random start.")
@click.option("--out", "-o", default="out/demo", help="Output folder (index.html and PNGs).")
@device_option
@QUIET
def demo(layer, rank_parts, n_samples, seed, out, device, quiet, **gen):
    """Fit on a face generator and write parts, top edits per part and an index.html to OUT.

    \b
    Example:  panda demo --out out/demo   (then open out/demo/index.html)
    """
    index = run_demo(_generator(device, **gen), layer, rank_parts, n_samples, seed, out, device, progress=_bars(quiet))
    click.echo(f"open {index}")


@main.command()
@click.argument("factors", type=click.Path(dir_okay=False))
@generator_options(None)
@click.option("--seeds", type=SEEDS, default=None,
              help="Samples drawn, e.g. 0-5 or 3,9,12 (at least 2); default: the 6 seeds after the training ones.")
@click.option("--latent", type=click.Path(dir_okay=False), default=None,
              help="Latents instead of seeds (the first 16): your own, or the photo `panda project` found.")
@click.option("--n-top", type=click.IntRange(1, 16), default=6, help="Top appearances shown for each part.")
@click.option("--ranks", is_flag=True,
              help="Add 'How many parts': the layer fitted again at several R_S on up to 2,000 of the training seeds, "
                   "with the parts that come back on others (as the demo; seconds on a DCGAN, longer on larger layers).")
@click.option("--out", "-o", default="out/report", help="Output folder (index.html, PNGs and a copy of the factors).")
@device_option
@QUIET
def report(factors, seeds, latent, n_top, ranks, out, device, quiet, **gen):
    """The demo's page for factors you already have: FACTORS' parts, each part's top edits, refinement, removal,
    transfer, localisation and retrieval, drawn on its generator, with an index.html in OUT. Face regions (FaceMesh)
    are drawn where a part is named after one (panda name-parts).

    \b
    Examples:
      panda report ffhq.safetensors --generator ffhq.pkl --out out/ffhq   (then open out/ffhq/index.html)
      panda report out/demo/factors.safetensors --seeds 0-5 --out out/report
      panda report ffhq.safetensors --generator ffhq.pkl --latent me.safetensors   (your photo, panda project)
    """
    model, generator = _load(factors, device, **gen)
    latents = load_latents(latent, generator) if latent else None
    index = write_report(model, generator, out, seeds, progress=_bars(quiet), n_top=n_top, ranks=ranks, latents=latents)
    click.echo(f"open {index}")


@main.command("name-parts")
@click.argument("factors", type=click.Path(dir_okay=False))
@click.option("--n", "n", type=COUNT, default=64, help="Faces to measure where the parts sit on.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=CALIB_SEED_START, help="First seed of those faces.")
@click.option("--name", "given", multiple=True, metavar="PART=NAME",
              help="Name a part yourself, on any generator (--name 3=iris; repeat; PART= removes its name); the other "
                   "parts keep theirs, and FaceMesh is not run.")
@generator_options(None)
@device_option
def name_parts_cmd(factors, n, seed, given, device, **gen):
    """Name FACTORS' parts after the face region (eyes, nose, mouth) each sits on most densely, or as you say
    (--name), and save the names into the file; every picture then shows them, and --part takes them. A part denser
    on the rest of the face or the background than on any region stays unnamed; names given by hand (--name, the
    explorer) are kept, eyes, nose or mouth too. Regions come from MediaPipe FaceMesh, not from PandA.

    \b
    Examples:
      panda name-parts out/demo/factors.safetensors
      panda name-parts eyes.safetensors --name 2=iris --name 5=iris --name 7=pupil   (then --part iris)
    """
    if given:
        unused = [max(p.opts, key=len) for p in _given_params(exclude=("factors", "given"))]
        if unused:
            raise PandaError(f"--name runs no generator, so {', '.join(unused)} would do nothing: leave "
                             f"{'them' if len(unused) > 1 else 'it'} out (they are for naming after FaceMesh).")
        model = PandA.load(factors)  # no generator: names are the user's
        for text in given:
            part, sep, name = text.partition("=")
            if not sep or not part.strip().lstrip("-").isdigit():
                raise PandaError(f"--name {text!r}: write it as PART=NAME, e.g. 3=iris (PART= removes the name).")
            model.name_part(int(part), name.strip() or None)
        names = model.part_names_
    else:
        model, generator = _load(factors, device, **gen)
        names = name_model_parts(model, generator, n, seed)
    copy = backup(factors)
    model.save(factors)
    named = "; ".join(f"part {k}: {v}" for k, v in sorted(names.items())) or (
        "no part is named" if given else "no part sits most on a region")
    click.echo(named + f"\nsaved into {factors} (the file as it was: {copy})")


@main.group()
def bench() -> None:
    """Benchmarks that compare panda with other methods."""


@bench.command("roir")
@generator_options(DEFAULT_GENERATOR)
@click.option("--n", "n", type=COUNT, default=1000, help="Test seeds to try (those both landmark models accept are kept).")
@click.option("--n-calib", type=COUNT, default=64, help="Calibration seeds (disjoint from the test seeds).")
@click.option("--budget", type=COUNT, default=100,
              help="Directions each method may propose per region (x 2 signs); 100 lets GANSpace and SeFa try all theirs.")
@click.option("--target", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              help="Matched mean absolute pixel change inside the region ([0, 1] images).")
@click.option("--n-train", type=COUNT, default=5000, help="PandA's training samples.")
@click.option("--rank-parts", "-rs", type=COUNT, default=None, help="PandA's R_S; default: the generator's choice.")
@click.option("--ganspace-samples", type=COUNT, default=10_000, help="GANSpace's PCA samples.")
@click.option("--n-jacobian", type=COUNT, default=16,
              help="Calibration faces LowRankGAN and StyleSpace compute their directions from (ReSeFa works per image).")
@click.option("--dilations", default="2,4", show_default=True,
              help="Mask dilations in pixels to report, increasing; the first selects the edits.")
@click.option("--n-parts", type=COUNT, default=3, help="PandA's parts tried per region (those sitting most on it).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, help="Random start of PandA's parts.")
@click.option("--regions", type=click.Choice(["facemesh", "boxes"]), default="facemesh",
              help="Region masks: MediaPipe FaceMesh on each face, cross-checked with ONet; or fixed boxes where an aligned "
                   "face has its eyes, nose and mouth (for generators that draw no faces, e.g. to test the pipeline).")
@click.option("--method", "methods", multiple=True,
              help="Compare only this registered method (repeat for several, e.g. --method PandA --method 'My method'); "
                   "default all.")
@click.option("--methods-from", "plugins", type=click.Path(dir_okay=False), multiple=True,
              help="Run this Python file of yours first: it registers methods of its own with "
                   "panda.methods.register_method (see examples/roir_my_method.py). Its code runs: give only your own files.")
@click.option("--out", "-o", default="out/bench", help="Output folder (roir.md, roir.csv, roir.png, one grid per region).")
@device_option
@QUIET
def bench_roir(n, n_calib, budget, target, n_train, rank_parts, ganspace_samples, n_jacobian, dilations, n_parts, seed, regions,
               methods, plugins, out, device, quiet, **gen):
    """ROIR of local edits (eyes, nose, mouth) for every registered method (PandA, GANSpace, SeFa, StyleSpace,
    LowRankGAN, ReSeFa; a method a generator cannot run is reported as n/a with the reason).

    \b
    Examples:
      panda bench roir --generator dcgan-celeba --n 1000 --out out/bench/celeba
      panda bench roir --generator ffhq.pkl --trunc 0.7 --n 1000 --out out/bench/ffhq
      panda bench roir --methods-from mine.py --method PandA --method Mine --n 200   (your method against PandA)
    """
    for plugin in plugins:
        _run_plugin(plugin, "--methods-from", METHODS, "panda.methods.register_method(Method(...))")
    chosen = check_methods(methods) if methods else None  # before the output folder is made
    check_writable(out)
    try:
        dil = tuple(int(d) for d in dilations.split(","))
    except ValueError:
        raise PandaError(f"--dilations {dilations!r}: give whole numbers of pixels separated by commas, e.g. 2,4.") from None
    boxes = regions == "boxes"
    result = run_roir(_generator(device, **gen), n, n_calib, budget, target, n_train, n_jacobian, ganspace_samples, rank_parts, seed=seed,
                      progress=_bars(quiet), masker=BoxMasker() if boxes else None, cross_check=not boxes, dilations=dil,
                      n_parts=n_parts, methods=chosen)
    paths = write_outputs(result, Path(out))
    click.echo(markdown(result))
    click.echo("wrote " + ", ".join(str(p) for p in paths))


def _run_plugin(path: str, option: str, registry, call: str) -> list[str]:
    """--methods-from, --generators-from: run the user's own Python file, which registers entries (``call``) into
    ``registry``; the names it added."""
    kind = registry.kind
    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        why = "is not a Python file (.py)" if file.is_file() else "does not exist"
        raise PandaError(f"{option} '{path}' {why}: give a Python file that registers {kind}s with "
                         f"{call.split('(')[0]}.")
    before = set(registry)
    try:
        runpy.run_path(str(file), run_name=f"panda_{kind}s")
    except PandaError:
        raise
    except ValueError as exc:
        if "registered twice" in str(exc):
            raise PandaError(f"'{path}': {exc}: give each {kind} a name of its own.") from exc
        raise PandaError(f"running '{path}' failed: {exc}") from exc
    except Exception as exc:  # the user's code: any failure is theirs to see, in one line with its type
        raise PandaError(f"running '{path}' failed: {type(exc).__name__}: {exc}") from exc
    added = [name for name in registry if name not in before]
    if not added:
        raise PandaError(f"'{path}' registered no {kind}: call {call} in it.")
    click.echo(f"{path}: registered {', '.join(added)}", err=True)
    return added


def _register_generators(files: tuple) -> None:
    """--generators-from: the user's files, each registering generators of its own."""
    for path in files:
        _run_plugin(path, "--generators-from", GENERATORS, "panda.register_generator(GeneratorSpec(...))")


@bench.command("setup-cost")
@click.option("--resolution", type=click.Choice(["256", "512", "1024"]), default="256",
              help="Image size of the random-weight StyleGAN2 (config-f widths, 512-d latent).")
@click.option("--layer", default=None, help="PandA's layer; default the 16x16 block's (the paper's choice).")
@click.option("--n-train", type=COUNT, default=1000, help="PandA's training samples.")
@click.option("--rank-parts", "-rs", type=COUNT, default=12, help="PandA's R_S.")
@click.option("--tangents", type=COUNT, default=32, help="Jacobian directions measured (scaled to the latent's 512).")
@click.option("--out", "-o", default=None, help="Also write the table to this markdown file.")
@device_option
@QUIET
def bench_setup_cost(resolution, layer, n_train, rank_parts, tangents, out, device, quiet):
    """Setup time of PandA, ReSeFa and LowRankGAN for one region on a StyleGAN2-size network (random weights).

    \b
    Examples:
      panda bench setup-cost                                 # 256 px on the CPU
      panda bench setup-cost --resolution 1024 --device cuda
    """
    if out is not None:
        check_output_file(out, overwrite=True)
    g = random_stylegan2(int(resolution)).to(resolve_device(device))
    cost = time_setup(g, layer or g.default_layer, n_train, rank_parts, tangents, progress=_bars(quiet))
    text = setup_cost_markdown([cost])
    if out is not None:
        atomic_write(out, text + "\n")
    click.echo(text)


if __name__ == "__main__":  # pragma: no cover
    main()
