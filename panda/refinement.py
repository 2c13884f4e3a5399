"""Refinement: sample-specific parts P_i for images not aligned with the data the factors came from.

For one sample, with A fixed, the PandA objective ``||Z_i - A A^T Z_i P_i P_i^T||^2`` is the
global P-step restricted to that sample: the same projected-gradient solver on the S x S matrix
``M_i = Z_i^T A A^T Z_i / ||Z_i||^2`` (on its factor ``(A^T Z_i)^T`` where R_C <= S / 4), started from the global P.

Two things make the refined parts follow the image instead of merely reconstructing it better:

- Where to start: the global parts translated by the (dy, dx), |dy|, |dx| <= ``search``, that
  gives this sample the lowest objective. Misalignment is mostly a translation, and projected
  gradient from the untranslated parts does not find it: on one image, the gain from re-purposing
  the parts to reconstruct that image dwarfs the gain from moving them with the content (measured
  on dcgan-celeba relu2: refinement from the global parts moved part centroids by < 0.4 of a known
  shift; the search recovers the shift in most samples, see ``benchmarks/refine_locality.md``).
  A translation must lower the sample's relative error by more than ``min_gain`` (0.005): on
  aligned faces the best translation often gains less than that while it takes a small part off
  its region, and a real shift of a whole position mostly gains more.
- Where to go: solved to convergence on one image, the objective re-purposes a part for whatever
  reconstructs that image best, and the part loses its meaning (the authors avoid this only by
  taking 100 tiny steps). So each refined part is kept inside its (translated) start's support,
  dilated by ``radius`` positions: by default none (radius 0), so a part reshapes within where it
  already is; the translation moves it. With radius 1 the refined parts reconstruct better (relative
  error 0.36 against 0.39 on dcgan-celeba) but edit less locally: on every known-shift row of
  ``benchmarks/refine_locality.md`` the refined ROIR is lower with radius 0.

Translations are periodic (what leaves one side comes back on the other), both for the parts
searched over and for the :func:`shift_maps` used to make misaligned test data: then nothing is
invented at the border, and the exactly aligned parts (the translated global ones) are among the
candidates, so a test knows the right answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from .editing import Edit, edit_delta, part_profile, synthesize_offset
from .errors import PandaError, check_whole
from .factorisation import PsdFactor, factor_pays, parts_objective, psd_sqrt, reconstruct, solve_parts
from .features import capture
from .generators import GeneratorAdapter, Latents
from .maps import dilate, normalise, upsample
from .metrics import roir
from .model import PandA

#: The least fall in a sample's relative error for which refinement starts from translated parts rather than the
#: global ones (:func:`best_translation`): on aligned faces the best translation mostly gains less and moves small
#: parts off their regions; shifts of whole positions mostly gain more (benchmarks/refine_locality.md).
MIN_TRANSLATION_GAIN = 0.005


class Refined(NamedTuple):
    """What :func:`refine_parts` returns for N samples."""

    parts: torch.Tensor   # (N, S, R_S) sample-specific parts, non-negative
    shifts: torch.Tensor  # (N, 2) int: the translation (dy, dx) of the global parts each started from


def shift_maps(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate maps (..., H, W) by (dy, dx) positions, periodically: content that leaves one side
    comes back on the other, so nothing is lost or invented."""
    check_refine_args(tuple(x.shape[-2:]), shift=(dy, dx))
    return torch.roll(x, (dy, dx), (-2, -1))


def part_neighbourhood(parts: torch.Tensor, grid: tuple[int, int], radius: int = 1,
                       threshold: float = 0.25) -> torch.Tensor:
    """(S, R_S) bool: where each of ``parts`` (S, R_S) may go when refined: its support (the part's
    [0, 1]-rescaled map above ``threshold``) dilated by ``radius`` positions (a square neighbourhood)
    on the (H, W) ``grid``."""
    maps = normalise(parts.T.reshape(-1, *grid)) > threshold  # (R_S, H, W)
    grown = dilate(maps, radius)
    return grown.flatten(1).T


def check_refine_args(grid: tuple[int, int], steps: int = 100, radius: int | None = 0,
                      shift: tuple[int, int] = (0, 0), search: int = 0, min_gain: float = 0.0) -> None:
    """Refinement steps >= 0, radius >= 0 (or None), a shift and search range smaller than the (H, W) grid, and
    a finite min_gain >= 0."""
    if not math.isfinite(min_gain) or min_gain < 0:
        raise PandaError(f"min_gain={min_gain}: give a fall in relative error >= 0 (default "
                         f"{MIN_TRANSLATION_GAIN}; 0: the best translation however little it gains).")
    if check_whole(steps, "steps") < 0:
        raise PandaError(f"steps={steps}: give a number of refinement steps >= 0.")
    if radius is not None and check_whole(radius, "radius") < 0:
        raise PandaError(f"radius={radius}: give a neighbourhood radius >= 0 (or none).")
    (h, w), (dy, dx) = grid, (check_whole(shift[0], "shift"), check_whole(shift[1], "shift"))
    check_whole(search, "search")
    if abs(dy) >= h or abs(dx) >= w:
        raise PandaError(f"shift ({dy}, {dx}) is as large as the layer's {h}x{w} grid: use a smaller shift.")
    if not 0 <= search < min(h, w):
        raise PandaError(f"search={search}: give a translation range from 0 to {min(h, w) - 1} positions "
                         f"(the layer's grid is {h}x{w}).")


def _sample_matrices(a: torch.Tensor, zi: torch.Tensor, mixing: tuple[torch.Tensor, torch.Tensor] | None,
                     factored: bool) -> tuple[torch.Tensor | PsdFactor, torch.Tensor | PsdFactor | None]:
    """M_i = Z_i^T A A^T Z_i / ||Z_i||^2 (S, S) in the features' precision for one sample's features zi (C, S), and
    None; with a mixing, given as (W^(1/2), W), M_i = Z_i^T A W A^T Z_i and M2_i = Z_i^T A W^2 A^T Z_i, each /
    ||Z_i||^2.

    M_i has rank at most R_C: where R_C is well below S (``factored``: :func:`factor_pays`, a 32 x 32 or 64 x 64
    layer) it is kept as its factor (A^T Z_i)^T / ||Z_i|| (S, R_C), exact and free, and every product of the solve
    costs 2 R_C S instead of S^2.

    Why not float64: the solve's products are its cost, and the P-step sums its line search in float64 whatever the
    statistic's precision (:func:`solve_parts`), as the global fit does. On float32 features at a 64 x 64 layer
    (R_C = 512) float64 factors took 1.3-1.5x the time for parts equal to 1e-6 (benchmarks/stylegan_scale.md)."""
    x = a.T @ zi  # (R_C, S)
    scale = (zi.double() ** 2).sum().clamp_min(1e-30).rsqrt().to(x.dtype)  # the norm summed in float64
    rows = [x] if mixing is None else [mixing[0] @ x, mixing[1] @ x]
    if factored:
        out = [PsdFactor(r.T * scale) for r in rows]
    else:
        out = [(r.T @ r) * scale ** 2 for r in rows]
    return out[0], (out[1] if mixing is not None else None)


def _stacked(ms: list[torch.Tensor | PsdFactor]) -> torch.Tensor | PsdFactor:
    """K samples' statistics as one (K, S, S) tensor, or one factor (K, S, r)."""
    return PsdFactor(torch.stack([m.l for m in ms])) if isinstance(ms[0], PsdFactor) else torch.stack(ms)


def best_translation(m: torch.Tensor, parts: torch.Tensor, grid: tuple[int, int], search: int,
                     m2: torch.Tensor | None = None,
                     min_gain: float = MIN_TRANSLATION_GAIN) -> tuple[torch.Tensor, tuple[int, int]]:
    """The global ``parts`` (S, R_S) translated by the (dy, dx), |dy|, |dx| <= search, with the lowest
    objective on the sample matrix ``m`` (S, S) (and ``m2`` with a mixing); ties go to the smaller translation, and
    the untranslated parts stay unless the best translation lowers the objective (the sample's relative error, ``m``
    being normalised by ||Z_i||^2) by more than ``min_gain``. Returns (translated parts (S, R_S), (dy, dx))."""
    maps = parts.T.to(m.dtype).reshape(-1, *grid)
    moves = sorted(((dy, dx) for dy in range(-search, search + 1) for dx in range(-search, search + 1)),
                   key=lambda t: abs(t[0]) + abs(t[1]))
    best = None
    for t in moves:
        cand = shift_maps(maps, *t).flatten(1).T
        f = float(parts_objective(m, cand, m2))
        if t == (0, 0):
            still = (f, cand, t)
        if best is None or f < best[0]:
            best = (f, cand, t)
    if still[0] - best[0] <= min_gain:
        best = still
    return best[1], best[2]


def refine_parts(model: PandA, z: torch.Tensor, steps: int = 100, radius: int | None = 0,
                 search: int = 2, tol: float = 1e-9, min_gain: float = MIN_TRANSLATION_GAIN) -> Refined:
    """Sample-specific parts for each sample's feature maps.

    Parameters
    ----------
    z : torch.Tensor
        (N, C, H, W) feature maps at the model's layer.
    steps : int
        At most this many projected-gradient iterations (each is an S x S product per sample, or two S x R_C ones on
        M_i's factor; the samples are solved together, so each runs until all have converged or ``steps`` is
        reached).
    radius : int or None
        How many positions a part may move beyond its start's support (0: none; None: anywhere).
    search : int
        Start from the global parts translated by up to this many positions, whichever reconstructs the
        sample best (0: from the global parts as they are).
    tol : float
        Relative decrease under which the solve stops (once every sample of a batch is under it).
    min_gain : float
        Start from a translation only where it lowers the sample's relative error by more than this
        (:func:`best_translation`).

    Returns
    -------
    Refined
        Parts (N, S, R_S) and start shifts (N, 2).
    """
    grid = tuple(model.layer_shape_[1:])
    check_refine_args(grid, steps, radius, search=search, min_gain=min_gain)
    z = model._flat(z)
    a = model.appearances_.to(z)
    mixing = None if model.mixing_ is None else (psd_sqrt(model.mixing_).to(z), model.mixing_.to(z))
    start = model.parts_.to(z.device, torch.float64)
    s = grid[0] * grid[1]
    # images are solved together, one batched product per iteration (at 8 x 8 one image's iteration is a few dozen
    # tiny operations, so 64 images cost little more than one), in chunks of at most 256 MiB of statistics and 4 MiB
    # of parts: each iteration makes a few dozen passes over the parts, which past the caches cost more than the
    # operations batching saves (64 x 64 layer, 64 images: 145 ms an image in chunks of 10, 190-200 ms in one)
    factored = factor_pays(a.shape[1], s)  # each image's M_i kept as its (S, R_C) factor
    width = a.shape[1] if factored else s  # M_i's columns
    size = z.element_size()  # the statistics' and the parts' bytes per entry (float32 features: 4)
    chunk = max(1, min((256 << 20) // (size * s * width * (1 if mixing is None else 2)),
                       (4 << 20) // (size * s * model.parts_.shape[1])))
    parts, shifts = [], []
    for i0 in range(0, z.shape[0], chunk):
        ms, m2s, starts = [], [], []
        for zi in z[i0:i0 + chunk]:
            m, m2 = _sample_matrices(a, zi, mixing, factored)
            p, t = best_translation(m, start, grid, search, m2, min_gain)
            ms.append(m)
            m2s.append(m2)
            starts.append(p)
            shifts.append(t)
        p = torch.stack(starts)
        if steps > 0:
            support = None if radius is None else torch.stack([part_neighbourhood(q, grid, radius) for q in starts])
            p, _ = solve_parts(_stacked(ms), p, max_iter=steps, tol=tol, m2=None if mixing is None else _stacked(m2s),
                               support=None if support is None else support.to(p.device))
        parts.append(p.float())
    return Refined(torch.cat(parts), torch.tensor(shifts, dtype=torch.long).view(-1, 2))


def sample_errors(model: PandA, z: torch.Tensor, parts: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample relative error ||Z_i - A W A^T Z_i P P^T||^2 / ||Z_i||^2 (W = I without a mixing), (N,), with the
    global parts or per-sample parts (N, S, R_S)."""
    z = model._flat(z)
    r = z - reconstruct(z, model.appearances_, model.parts_ if parts is None else parts, model.mixing_)
    return (r ** 2).flatten(1).sum(1) / (z ** 2).flatten(1).sum(1)


def refine(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], steps: int = 100,
           shift: tuple[int, int] = (0, 0), radius: int | None = 0, search: int = 2,
           min_gain: float = MIN_TRANSLATION_GAIN) -> tuple[torch.Tensor, Refined]:
    """Capture the samples' features (optionally translated by ``shift`` = (dy, dx) positions, to make
    misaligned data) and refine (:func:`refine_parts`). Returns (feature maps (N, C, H, W), :class:`Refined`)."""
    model.check_compatible(generator)
    check_refine_args(tuple(model.layer_shape_[1:]), steps, radius, shift, search, min_gain)
    z = capture(generator, generator.latents(latents), model.layer_)
    if shift != (0, 0):
        z = shift_maps(z, *shift)
    return z, refine_parts(model, z, steps, radius, search, min_gain=min_gain)


@dataclass
class RefinementComparison:
    """One edit made with the global and with the refined parts, on samples whose features were shifted.

    Attributes
    ----------
    part, appearance, alpha : int, int, float
        The edit.
    shift : (int, int)
        The translation (dy, dx) applied to the features.
    refined : Refined
        The refined parts (N, S, R_S) and the shift each started from (N, 2).
    original, with_global, with_refined : torch.Tensor
        (N, 3, H', W') in [0, 1]: the shifted images, and the edit with each kind of part.
    region : torch.Tensor
        (H', W') in [0, 1]: the global part moved by ``shift``, where the edit should stay.
    error_global, error_refined : float
        Mean relative reconstruction error of the shifted features with each kind of part.
    roir_global, roir_refined : float
        Median ROIR of the edit against ``region`` > 0.5 (inf, an edit that changed nothing there, counts as worst).
    shift_found : float
        Share of samples whose refinement started from ``shift``.
    """

    part: int
    appearance: int
    alpha: float
    shift: tuple[int, int]
    refined: Refined
    original: torch.Tensor
    with_global: torch.Tensor
    with_refined: torch.Tensor
    region: torch.Tensor
    error_global: float
    error_refined: float
    roir_global: float
    roir_refined: float
    shift_found: float


def compare_refinement(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], part: int,
                       appearance: int, alpha: float, shift: tuple[int, int] = (0, 0), steps: int = 100,
                       radius: int | None = 0, search: int = 2,
                       refined: tuple[torch.Tensor, Refined] | None = None,
                       min_gain: float = MIN_TRANSLATION_GAIN) -> RefinementComparison:
    """Edit part ``part`` with appearance ``appearance`` using global and refined parts on features translated
    by ``shift``, and measure both.

    Parameters
    ----------
    refined : (torch.Tensor, Refined), optional
        :func:`refine`'s result for these latents and shift, if already computed (it does not depend on the
        part edited).

    Returns
    -------
    RefinementComparison
    """
    latents = generator.latents(latents)
    z, found = refine(model, generator, latents, steps, shift, radius, search, min_gain) if refined is None else refined
    found = Refined(*found)
    move = (lambda f: shift_maps(f, *shift)) if shift != (0, 0) else None
    e = [Edit(part, appearance, alpha)]
    zero = torch.zeros(1, *model.layer_shape_)

    def render(deltas: torch.Tensor) -> torch.Tensor:
        return generator.to_unit(synthesize_offset(generator, model.layer_, latents, deltas, transform=move)).cpu()

    original, with_global, with_refined = render(zero), render(edit_delta(model, e)[None]), render(edit_delta(model, e, found.parts))
    target = upsample(shift_maps(part_profile(model, part), *shift)[None], original.shape[-1])[0]
    inside = (target > 0.5).float()
    return RefinementComparison(
        part, appearance, alpha, tuple(shift), found, original, with_global, with_refined, target,
        float(sample_errors(model, z).mean()), float(sample_errors(model, z, found.parts).mean()),
        float(roir(original, with_global, inside).median()), float(roir(original, with_refined, inside).median()),
        float((found.shifts == torch.tensor(shift)).all(1).float().mean()),
    )
