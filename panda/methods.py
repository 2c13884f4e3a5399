"""The methods the ROIR benchmark compares, in one registry (StyleGAN's ``register_metric`` is the model).

Each :class:`Method` declares its name, whether it is available for a generator (and why not), how it is
set up (timed by itself: PandA's time is its feature extraction plus fit) and how it proposes candidate
edits for a region. Adding a baseline means registering one method here; the protocol
(:mod:`panda.evaluation`) and the reports iterate over :data:`METHODS` and know no method by name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import baselines
from .editing import Edit, edit
from .features import FeatureSource
from .generators import GeneratorAdapter, Latents
from .landmarks import FaceSet
from .model import PandA
from .registry import Registry


@dataclass
class Candidate:
    """A direction a method proposes for a region.

    Attributes
    ----------
    label : str
        What it is, for the tables ('part 5 + appearance 3', 'PC 2').
    apply : callable
        ``apply(latents, alpha) -> images`` (N, 3, H, W) in the generator's range.
    """

    label: str
    apply: Callable[[Latents, float], torch.Tensor]


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
    part_of : dict of str to int
        PandA's part for each region (the part named after it).
    model : PandA or None
        A fitted PandA to use instead of fitting one (its extraction and fit time count as its setup).
    n_train, rank_parts, seed : int
        PandA's training samples, parts and random start, when it is fitted here.
    ganspace_samples : int
        GANSpace's PCA samples.
    n_jacobian : int
        Calibration faces LowRankGAN and ReSeFa compute their Jacobians on.
    progress : bool
    """

    generator: GeneratorAdapter
    calib: FaceSet
    budget: int = 8
    part_of: dict[str, int] | None = None
    model: PandA | None = None
    n_train: int = 5000
    rank_parts: int = 12
    seed: int = 0
    ganspace_samples: int = 10_000
    n_jacobian: int = 5
    progress: bool = False


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
        ``propose(state, ctx, region) -> [Candidate]``: at most ``ctx.budget`` candidates, best first. The
        protocol adds the time it takes to the setup time (region-specific training, e.g. LowRankGAN's RPCA).
    """

    name: str
    unavailable: Callable[[GeneratorAdapter], str | None]
    setup: Callable[[BenchContext], tuple[Any, float]]
    propose: Callable[[Any, BenchContext, str], list[Candidate]]


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


def _latent_candidates(generator: GeneratorAdapter, directions: torch.Tensor, budget: int, what: str) -> list[Candidate]:
    return [Candidate(f"{what} {i}", lambda lat, a, d=directions[i]: baselines.LatentEdit(d)(generator, lat, a))
            for i in range(min(budget, len(directions)))]


# ---------------------------------------------------------------------------------------------- PandA
def _panda_setup(ctx: BenchContext) -> tuple[PandA, float]:
    model = ctx.model
    if model is None:
        g = ctx.generator
        source = FeatureSource(g, g.default_layer, range(ctx.n_train), progress=ctx.progress)
        model = PandA(rank_parts=ctx.rank_parts, random_state=ctx.seed).fit(source)
        ctx.model = model
    return model, model.extract_time_ + model.fit_time_  # feature extraction included, as for GANSpace


def _panda_propose(model: PandA, ctx: BenchContext, region: str) -> list[Candidate]:
    k = ctx.part_of[region]
    return [Candidate(f"{model.part_label(k)} + appearance {j}", lambda lat, a, k=k, j=j: edit(model, ctx.generator, lat, [Edit(k, j, a)]))
            for j in model.top_appearances(k, ctx.budget)]


register_method(Method("PandA", _always, _panda_setup, _panda_propose))


# ------------------------------------------------------------------------------------ GANSpace, SeFa
# On a StyleGAN both work in W (as their authors run them there); on other generators in z, with what the
# generator's spec names (GANSpace's early layer, SeFa's latent-facing weight).
def _spec_field(field: str, what: str) -> Callable[[GeneratorAdapter], str | None]:
    def unavailable(g: GeneratorAdapter) -> str | None:
        if baselines.has_w(g) or (g.spec is not None and getattr(g.spec, field) is not None):
            return None
        return f"needs {what}"
    return unavailable


def _ganspace_setup(ctx: BenchContext) -> tuple[tuple[torch.Tensor, str], float]:
    g = ctx.generator
    if baselines.has_w(g):
        return _timed(lambda: (baselines.ganspace_w(g, n_samples=ctx.ganspace_samples), "w"))
    return _timed(lambda: (baselines.ganspace(g, g.spec.ganspace_layer, n_samples=ctx.ganspace_samples), "z"))


def _sefa_setup(ctx: BenchContext) -> tuple[tuple[torch.Tensor, str], float]:
    g = ctx.generator
    if baselines.has_w(g):
        return _timed(lambda: (baselines.sefa(baselines.style_weight(g)), "w"))
    return _timed(lambda: (baselines.sefa(g.spec.sefa_weight(g.module)), "z"))


def _directions(what: str):
    def propose(state: tuple[torch.Tensor, str], ctx: BenchContext, region: str) -> list[Candidate]:
        dirs, space = state
        return [Candidate(f"{what} {i}" + (" (W)" if space == "w" else ""),
                          lambda lat, a, d=dirs[i]: baselines.LatentEdit(d, space)(ctx.generator, lat, a))
                for i in range(min(ctx.budget, len(dirs)))]
    return propose


register_method(Method("GANSpace", _spec_field("ganspace_layer", "an early layer named in the generator's spec"),
                       _ganspace_setup, _directions("PC")))
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


def _stylespace_propose(state: _StyleState, ctx: BenchContext, region: str) -> list[Candidate]:
    scores = baselines.region_overlap(state.maps, ctx.calib.masks[region][:ctx.n_jacobian])
    out = []
    for idx in torch.argsort(scores, descending=True)[:ctx.budget].tolist():
        layer, c = state.channels[idx]
        unit = torch.zeros_like(state.std[layer])
        unit[c] = state.std[layer][c]

        def apply(lat: Latents, a: float, layer=layer, unit=unit) -> torch.Tensor:
            with baselines.style_offsets(ctx.generator, {layer: a * unit}):
                return ctx.generator.synthesize(lat)

        out.append(Candidate(f"{layer.removeprefix('synthesis.').removesuffix('.affine')} channel {c}", apply))
    return out


register_method(Method("StyleSpace", _stylegan_only, _stylespace_setup, _stylespace_propose))


# ---------------------------------------------------------------------------- LowRankGAN, ReSeFa
# Both use the same per-face Jacobians of calibration faces (computed once, in each one's setup time).
def _jacobian_setup(ctx: BenchContext) -> tuple[list[torch.Tensor], float]:
    return _timed(lambda: baselines.jacobians(ctx.generator, ctx.calib.latents[:ctx.n_jacobian]))


def _region_propose(solve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    def propose(jacs: list[torch.Tensor], ctx: BenchContext, region: str) -> list[Candidate]:
        inside, outside = baselines.region_grams(jacs, ctx.calib.masks[region][:ctx.n_jacobian])
        return _latent_candidates(ctx.generator, solve(inside, outside), ctx.budget, "direction")
    return propose


register_method(Method("LowRankGAN", _always, _jacobian_setup, _region_propose(baselines.lowrankgan)))
register_method(Method("ReSeFa", _always, _jacobian_setup, _region_propose(baselines.resefa)))
