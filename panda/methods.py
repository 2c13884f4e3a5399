"""The methods the ROIR benchmark compares, in one registry (StyleGAN's ``register_metric`` is the model).

Each :class:`Method` declares its name, whether it is available for a generator (and why not), how it is
set up (timed by itself: PandA's time is its feature extraction plus fit) and how it proposes candidate
edits for a region on a set of faces. Adding a baseline means registering one method here; the protocol
(:mod:`panda.evaluation`) and the reports iterate over :data:`METHODS` and know no method by name.

How each is run (the choices the benchmark's table records):

- PandA: the ``n_parts`` parts with the highest lift in the region (:class:`panda.naming.PartRegions`), each with
  its most specific appearances, interleaved, up to the budget.
- PandA + mask: the same fit's appearances added to each face's own region mask on the layer's grid (what a user
  does by drawing the region), ranked for the region on the calibration faces' masks
  (:func:`panda.localisation.region_appearances`).
- GANSpace, SeFa: all their directions (80 principal components; one eigenvector per latent dimension), up to the
  budget.
- ReSeFa: per image, as its code runs: every face's own Jacobian and mask give its own directions (signs aligned with
  the directions of the calibration faces' mean Gram matrices, since an eigenvector's sign is arbitrary); the trace
  regulariser is swept (``resefa_taus``, 0 = off, its code's default) and chosen on the calibration faces like any
  other candidate.
- LowRankGAN: from the mean Gram matrices of ``n_jacobian`` calibration faces, with its code's settings (lambda
  1/60). Its code runs per image too, but its robust PCA (two ADMM solves of up to 10,000 steps) costs seconds per
  image and region: hours for a thousand test faces on a CPU.
- StyleSpace: channels ranked on ``n_jacobian`` calibration faces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import baselines
from .editing import Edit, edit, region_delta, synthesize_offset
from .features import FeatureSource
from .generators import GeneratorAdapter, Latents
from .landmarks import REGIONS, FaceSet
from .localisation import region_appearances
from .model import PandA
from .naming import PartRegions
from .regions import rasterise_masks
from .registry import Registry


@dataclass
class Candidate:
    """A direction a method proposes for a region.

    Attributes
    ----------
    label : str
        What it is, for the tables ('part 5 + appearance 3', 'PC 2'); the same direction has the same label on every
        face set.
    apply : callable
        ``apply(latents, alpha, rows) -> images`` (N, 3, H, W) in the generator's range; ``rows`` (a slice) says which
        faces of the set the candidate was proposed for ``latents`` are, for methods with one direction per image.
    """

    label: str
    apply: Callable[[Latents, float, slice], torch.Tensor]


@dataclass
class BenchContext:
    """What every method may use to set itself up and propose edits.

    Attributes
    ----------
    generator : GeneratorAdapter
    calib : FaceSet
        Calibration faces with their region masks (disjoint from the test faces).
    budget : int
        Directions a method may propose per region.
    regions : PartRegions or None
        Where PandA's parts sit (measured on the calibration faces).
    model : PandA or None
        A fitted PandA to use instead of fitting one (its extraction and fit time count as its setup).
    n_train, rank_parts, seed : int
        PandA's training samples, parts (None: the generator's choice) and random start, when it is fitted here.
    ganspace_samples : int
        GANSpace's PCA samples.
    n_jacobian : int
        Calibration faces LowRankGAN and StyleSpace compute their directions from.
    n_parts : int
        PandA's parts tried per region.
    resefa_taus : tuple of float
        ReSeFa's trace regulariser weights to choose from.
    progress : bool or None
        Progress bars (None: where stderr is a terminal).
    cache : dict
        What a method computes once per region and uses for both its calibration and its test proposals (keyed by
        the method's name and the region), so that the test faces' per-image cost is theirs alone.
    """

    generator: GeneratorAdapter
    calib: FaceSet
    budget: int = 100
    regions: PartRegions | None = None
    model: PandA | None = None
    n_train: int = 5000
    rank_parts: int | None = None
    seed: int = 0
    ganspace_samples: int = 10_000
    n_jacobian: int = 16
    n_parts: int = 3
    resefa_taus: tuple[float, ...] = (0.0, 1e-3)
    progress: bool | None = False
    cache: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A local-editing method as the benchmark sees it.

    Attributes
    ----------
    name : str
    unavailable : callable
        ``unavailable(generator) -> str or None``: why it cannot run on this generator, or None when it can.
    setup : callable
        ``setup(ctx) -> (state, seconds)``: the method's training, and how long it took.
    propose : callable
        ``propose(state, ctx, region, faces) -> [Candidate]``: at most ``ctx.budget`` candidates for ``faces``. The
        protocol adds the time it takes on the calibration faces to the setup time (region-specific training, e.g.
        LowRankGAN's RPCA), and reports its time on the test faces per image.
    per_image : bool
        Its directions are computed for each face (its cost on the test faces is reported per image).
    settings : callable or None
        ``settings(options) -> str``: how it was run, for the table's settings line, from the run's options (the
        keys of :attr:`panda.evaluation.BenchResult.options`: budget, layer, rank_parts, n_train, n_parts,
        n_jacobian, ganspace_samples, resefa_taus); None: nothing to say.
    """

    name: str
    unavailable: Callable[[GeneratorAdapter], str | None]
    setup: Callable[[BenchContext], tuple[Any, float]]
    propose: Callable[[Any, BenchContext, str, FaceSet], list[Candidate]]
    per_image: bool = False
    settings: Callable[[dict], str] | None = None


METHODS: Registry = Registry("method")


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS`; the tables list methods in registration order."""
    return METHODS.add(method.name, method)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _always(_generator: GeneratorAdapter) -> None:
    return None


def _latent_candidates(generator: GeneratorAdapter, directions: torch.Tensor, budget: int, what: str,
                       space: str = "z") -> list[Candidate]:
    return [Candidate(f"{what} {i}" + (" (W)" if space == "w" else ""),
                      lambda lat, a, rows, d=directions[i]: baselines.LatentEdit(d, space)(generator, lat, a))
            for i in range(min(budget, len(directions)))]


# ---------------------------------------------------------------------------------------------- PandA
def _panda_setup(ctx: BenchContext) -> tuple[PandA, float]:
    model = ctx.model
    if model is None:
        g = ctx.generator
        source = FeatureSource(g, g.default_layer, range(ctx.n_train), progress=ctx.progress)
        rank = g.rank_parts_for(g.default_layer) if ctx.rank_parts is None else ctx.rank_parts
        model = PandA(rank_parts=rank, random_state=ctx.seed).fit(source)
        ctx.model = model
    return model, model.extract_time_ + model.fit_time_  # feature extraction included, as for GANSpace


def _panda_propose(model: PandA, ctx: BenchContext, region: str, faces: FaceSet) -> list[Candidate]:
    parts = ctx.regions.best_parts(region, ctx.n_parts)
    ranked = [model.top_appearances(k, model.n_appearances, by="specific") for k in parts]
    pairs = [(k, r[i]) for i in range(model.n_appearances) for k, r in zip(parts, ranked)][:ctx.budget]
    return [Candidate(f"{model.part_label(k)} + appearance {j}",
                      lambda lat, a, rows, k=k, j=j: edit(model, ctx.generator, lat, [Edit(k, j, a)]))
            for k, j in pairs]


def _panda_settings(o: dict) -> str:
    return f"at {o['layer']} with R_S = {o['rank_parts']}, {o['n_train']} training samples"


register_method(Method("PandA", _always, _panda_setup, _panda_propose,
                       settings=lambda o: f"{_panda_settings(o)}, its {o['n_parts']} parts with the highest lift in "
                                          f"the region"))


def _panda_mask_propose(model: PandA, ctx: BenchContext, region: str, faces: FaceSet) -> list[Candidate]:
    grid = model.layer_shape_[1:]
    cells = rasterise_masks(faces.masks[region], grid)  # each face's own mask on the layer's grid
    key = ("PandA + mask", region)
    if key not in ctx.cache:  # ranked on the calibration faces: once per region, not again for the test faces
        ctx.cache[key] = region_appearances(model, ctx.generator, ctx.calib.latents,
                                            rasterise_masks(ctx.calib.masks[region], grid), ctx.budget)
    ranked = ctx.cache[key]

    def apply(lat: Latents, a: float, rows: slice, j: int) -> torch.Tensor:
        deltas = torch.stack([region_delta(model, j, r, a) for r in cells[rows]])
        return synthesize_offset(ctx.generator, model.layer_, lat, deltas)

    return [Candidate(f"appearance {j} on the face's mask", lambda lat, a, rows, j=j: apply(lat, a, rows, j))
            for j in ranked]


# PandA's appearances added to each face's own region mask (what `panda edit --region` and a painted region do):
# the parts are not used, the same fit is (its setup is PandA's); like ReSeFa, it uses each face's mask.
register_method(Method("PandA + mask", _always, _panda_setup, _panda_mask_propose, per_image=True,
                       settings=lambda o: f"with the appearances of the fit {_panda_settings(o)}, on each face's "
                                          f"own mask"))


# ------------------------------------------------------------------------------------ GANSpace, SeFa
# On a StyleGAN both work in W (as their authors run them there); on other generators in z, with what the
# generator's spec names (GANSpace's early layer, SeFa's latent-facing weight).
def _spec_field(field: str, what: str) -> Callable[[GeneratorAdapter], str | None]:
    def unavailable(g: GeneratorAdapter) -> str | None:
        if g.has_w or (g.spec is not None and getattr(g.spec, field) is not None):
            return None
        return f"needs {what}"
    return unavailable


def _ganspace_setup(ctx: BenchContext) -> tuple[tuple[torch.Tensor, str], float]:
    g = ctx.generator
    if g.has_w:
        return _timed(lambda: (baselines.ganspace_w(g, n_samples=ctx.ganspace_samples), "w"))
    return _timed(lambda: (baselines.ganspace(g, g.spec.ganspace_layer, n_samples=ctx.ganspace_samples), "z"))


def _sefa_setup(ctx: BenchContext) -> tuple[tuple[torch.Tensor, str], float]:
    g = ctx.generator
    if g.has_w:
        return _timed(lambda: (baselines.sefa(baselines.style_weight(g)), "w"))
    return _timed(lambda: (baselines.sefa(g.spec.sefa_weight(g.module)), "z"))


def _directions(what: str):
    def propose(state: tuple[torch.Tensor, str], ctx: BenchContext, region: str, faces: FaceSet) -> list[Candidate]:
        dirs, space = state
        return _latent_candidates(ctx.generator, dirs, ctx.budget, what, space)
    return propose


register_method(Method("GANSpace", _spec_field("ganspace_layer", "an early layer named in the generator's spec"),
                       _ganspace_setup, _directions("PC"), settings=lambda o: f"on {o['ganspace_samples']} samples"))
register_method(Method("SeFa", _spec_field("sefa_weight", "the latent-facing weight named in the generator's spec"),
                       _sefa_setup, _directions("direction")))


# -------------------------------------------------------------------------------------- StyleSpace
def _stylegan_only(g: GeneratorAdapter) -> str | None:
    return None if baselines.style_layers(g) else "needs a StyleGAN generator"


@dataclass
class _StyleState:
    std: dict[str, torch.Tensor]
    channels: list[tuple[str, int]]
    maps: torch.Tensor  # (channels, n_jacobian, H, W)


def _stylespace_setup(ctx: BenchContext) -> tuple[_StyleState, float]:
    def run() -> _StyleState:
        std = baselines.style_std(ctx.generator, ctx.calib.latents)
        channels, maps = baselines.style_gradients(ctx.generator, ctx.calib.latents[:ctx.n_jacobian])
        return _StyleState(std, channels, maps)
    return _timed(run)


def _stylespace_propose(state: _StyleState, ctx: BenchContext, region: str, faces: FaceSet) -> list[Candidate]:
    scores = baselines.region_overlap(state.maps, ctx.calib.masks[region][:ctx.n_jacobian])
    out = []
    for idx in torch.argsort(scores, descending=True)[:ctx.budget].tolist():
        layer, c = state.channels[idx]
        unit = torch.zeros_like(state.std[layer])
        unit[c] = state.std[layer][c]

        def apply(lat: Latents, a: float, rows: slice, layer=layer, unit=unit) -> torch.Tensor:
            with baselines.style_offsets(ctx.generator, {layer: a * unit}):
                return ctx.generator.synthesize(lat)

        out.append(Candidate(f"{layer.removeprefix('synthesis.').removesuffix('.affine')} channel {c}", apply))
    return out


def _calibrated_on(o: dict) -> str:
    return f"from {o['n_jacobian']} calibration faces"


register_method(Method("StyleSpace", _stylegan_only, _stylespace_setup, _stylespace_propose, settings=_calibrated_on))


# ---------------------------------------------------------------------------- LowRankGAN, ReSeFa
@dataclass
class _Pooled:
    """LowRankGAN's Jacobians of the calibration faces, and its directions per region (the same on every face set)."""

    jacs: list[torch.Tensor]
    directions: dict[str, torch.Tensor]


def _lowrankgan_setup(ctx: BenchContext) -> tuple[_Pooled, float]:
    return _timed(lambda: _Pooled(baselines.jacobians(ctx.generator, ctx.calib.latents[:ctx.n_jacobian]), {}))


def _lowrankgan_propose(state: _Pooled, ctx: BenchContext, region: str, faces: FaceSet) -> list[Candidate]:
    if region not in state.directions:
        inside, outside = baselines.region_grams(state.jacs, ctx.calib.masks[region][:ctx.n_jacobian])
        state.directions[region] = baselines.lowrankgan(inside, outside)
    return _latent_candidates(ctx.generator, state.directions[region], ctx.budget, "direction")


@dataclass
class _PerImage:
    """ReSeFa's per-image Gram matrices, per face set (computed once for all regions) and its directions."""

    grams: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]]
    directions: dict[tuple[int, str], dict[float, torch.Tensor]]


def _resefa_setup(ctx: BenchContext) -> tuple[_PerImage, float]:
    state = _PerImage({}, {})
    return state, _timed(lambda: _grams(state, ctx, ctx.calib))[1]


def _grams(state: _PerImage, ctx: BenchContext, faces: FaceSet) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if id(faces) not in state.grams:
        masks = {r: faces.masks[r] for r in REGIONS}
        state.grams[id(faces)] = baselines.per_image_grams(ctx.generator, faces.latents, masks, progress=ctx.progress)
    return state.grams[id(faces)]


def _resefa_propose(state: _PerImage, ctx: BenchContext, region: str, faces: FaceSet) -> list[Candidate]:
    key = (id(faces), region)
    if key not in state.directions:
        inside, outside = _grams(state, ctx, faces)[region]
        ref_in, ref_out = _grams(state, ctx, ctx.calib)[region]
        state.directions[key] = {}
        for tau in ctx.resefa_taus:
            own = baselines.resefa(inside, outside, tau)  # (N, d, d): each face's directions, best first
            ref = baselines.resefa(ref_in.mean(0), ref_out.mean(0), tau)  # (d, d): the calibration faces' mean
            sign = torch.sign((own * ref[None]).sum(-1, keepdim=True))
            state.directions[key][tau] = own * torch.where(sign == 0, torch.ones_like(sign), sign)
    n_dirs = state.directions[key][ctx.resefa_taus[0]].shape[1]
    out = []
    for i in range(n_dirs):
        for tau in ctx.resefa_taus:
            dirs = state.directions[key][tau][:, i]  # (N, d), one per face

            def apply(lat: Latents, a: float, rows: slice, dirs=dirs) -> torch.Tensor:
                z = lat.z + a * dirs[rows].to(lat.z)
                return ctx.generator.synthesize(Latents(z, lat.labels))

            out.append(Candidate(f"direction {i} per image" + (f", tau {tau:g}" if tau else ""), apply))
    return out[:ctx.budget]


register_method(Method("LowRankGAN", _always, _lowrankgan_setup, _lowrankgan_propose, settings=_calibrated_on))
register_method(Method("ReSeFa", _always, _resefa_setup, _resefa_propose, per_image=True,
                       settings=lambda o: f"per image, tau chosen from {', '.join(f'{t:g}' for t in o['resefa_taus'])}"))
