"""The ROIR benchmark's protocol: every registered method (:mod:`panda.methods`) against every registered
metric (:mod:`panda.metrics`), on region masks from independent landmark models (:mod:`panda.landmarks`).

Protocol (every method gets the same budget of choices):

1. Seeds: PandA and GANSpace train on ``[0, n_train)``; calibration seeds start at 20,000,000 and test
   seeds at 10,000,000, disjoint from each other and from training. Samples are kept where FaceMesh finds
   a face, ONet (on FaceMesh's face box) gives probability > 0.9, and every region mask is non-empty.
2. Each method proposes up to ``budget`` directions per region (:mod:`panda.methods` says how each chooses them);
   each is tried with both signs.
3. Matched magnitude: for every candidate, alpha is scaled (secant steps) until the mean absolute pixel
   change inside the region, over the calibration samples, equals ``target`` (images in [0, 1]).
4. Region specificity: the change is split over disjoint face cells (eyes, nose, mouth, rest of the face,
   background) and a candidate is *eligible* only when the region's RMS change, pooled over the calibration faces,
   is the largest of all cells: an edit of another region that also covers the target is not an edit of the target.
   A method with no eligible candidate gets "none" for the region, not its least-bad edit.
5. Among the eligible candidates, the one with the lowest mean ROIR on the calibration samples is the method's edit;
   every registered metric (mean +- std) is then reported on the test samples, each face with its own masks, at
   every mask dilation in ``dilations`` (the first is the landmark masks'; the others grow them).

The result is data (:class:`BenchResult`); :mod:`panda.tables` and :mod:`panda.figures` draw it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .errors import PandaError
from .generators import GeneratorAdapter, Latents
from .landmarks import REGIONS, FaceMeshMasker, FaceSet, face_cells, face_set, load_onet
from .maps import grow
from .methods import METHODS, BenchContext, Candidate, Method
from .metrics import METRICS, Cells, cell_rms, inside_change, roir
from .model import PandA
from .naming import CALIB_SEED_START, PartRegions, part_regions
from .progress import progress_bar

log = logging.getLogger(__name__)

TEST_SEED_START = 10_000_000


@dataclass
class BenchRow:
    """One method on one region.

    Attributes
    ----------
    method, region : str
    available : bool
        False when the method cannot run on this generator (then ``label`` says why and the numbers are NaN).
    chosen : bool
        False when no candidate was specific to the region on the calibration faces ("none"; numbers NaN).
    label : str
        The edit chosen on the calibration faces, or why there is none.
    alpha : float
        Its strength.
    change : float
        Mean absolute pixel change inside the region on the test faces (the matched magnitude).
    scores : dict of int to dict of str to (float, float, int)
        Mask dilation (pixels) -> metric name -> (mean, std, number of test faces with a finite value).
    split : dict of str to float
        Cell (:data:`panda.landmarks.CELLS`) -> RMS pixel change there, pooled over the test faces (first dilation).
    tried, eligible : int
        Candidates (x signs) calibrated, and how many were specific to the region.
    calib_roir : float
        The chosen edit's mean ROIR on the calibration faces.
    """

    method: str
    region: str
    available: bool
    label: str
    chosen: bool = True
    alpha: float = math.nan
    change: float = math.nan
    scores: dict[int, dict[str, tuple[float, float, int]]] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)
    tried: int = 0
    eligible: int = 0
    calib_roir: float = math.nan

    def score(self, metric: str, dilation: int | None = None) -> tuple[float, float, int]:
        """(mean, std, n) of ``metric`` at ``dilation`` (default the first); NaNs when there is no edit."""
        if not self.scores:
            return math.nan, math.nan, 0
        return self.scores[next(iter(self.scores)) if dilation is None else dilation][metric]


@dataclass
class BenchResult:
    """What :func:`run_roir` returns.

    Attributes
    ----------
    generator : str
    n_tried, n_test, n_calib : int
        Test seeds tried, kept; calibration faces kept.
    target : float
        The matched mean absolute pixel change inside the region.
    dilations : tuple of int
        Mask dilations (pixels at image resolution) the metrics are reported at; the first selects the edits.
    setup_s : dict of str to float
        Each available method's setup time (its training and its per-region solves on the calibration faces), seconds.
    per_image_s : dict of str to float
        For methods that work per image: their cost per test face (Jacobian and solves), seconds.
    rows : list of BenchRow
    check : dict
        Landmark cross-check shares (ONet's points inside FaceMesh's masks).
    part_regions : PartRegions or None
        Where PandA's parts sit on the calibration faces.
    faces : FaceSet
        The test faces.
    edits : dict
        {region: {method: edited test images (N, 3, H, W) in [0, 1]}}, for pictures (chosen edits only).
    model : PandA
        The PandA model used.
    options : dict
        The protocol's settings (budget, n_parts, n_jacobian, resefa_taus, ...), for the tables, and "settings":
        {method: how it was run} from each compared method's own ``Method.settings``.
    """

    generator: str
    n_tried: int
    n_test: int
    n_calib: int
    target: float
    dilations: tuple[int, ...]
    setup_s: dict[str, float]
    per_image_s: dict[str, float]
    rows: list[BenchRow]
    check: dict
    part_regions: PartRegions | None
    faces: FaceSet
    edits: dict
    model: PandA
    options: dict = field(default_factory=dict)

    def row(self, method: str, region: str) -> BenchRow:
        return next(r for r in self.rows if r.method == method and r.region == region)

    @property
    def methods(self) -> list[str]:
        """The methods compared, in registration order (all registered ones unless the run named some)."""
        return list(dict.fromkeys(r.method for r in self.rows))


@dataclass
class Calibrated:
    """A candidate at matched magnitude on the calibration faces: its alpha, inside change, mean ROIR and the RMS
    change in each cell (pooled over faces)."""

    alpha: float
    change: float
    roir: float
    rms: dict[str, float]

    def specific_to(self, region: str) -> bool:
        """The region's RMS change is the largest of all (non-empty) cells."""
        return all(self.rms[region] > v for c, v in self.rms.items() if c != region and not math.isnan(v))


def render(cand: Candidate, generator: GeneratorAdapter, latents: Latents, alpha: float, chunk: int = 256) -> torch.Tensor:
    """``cand`` applied to every latent (the face set it was proposed for), in chunks: (N, 3, H, W) in [0, 1], CPU."""
    with torch.no_grad():
        return torch.cat([generator.to_unit(cand.apply(latents[i:i + chunk], alpha, slice(i, i + chunk))).cpu()
                          for i in range(0, len(latents), chunk)])


def pooled_rms(original: torch.Tensor, edited: torch.Tensor, cells: dict[str, torch.Tensor]) -> dict[str, float]:
    """RMS change per cell, pooled over faces (the root of the faces' mean squared change in the cell)."""
    return {c: float((v[torch.isfinite(v)] ** 2).mean().sqrt()) if torch.isfinite(v).any() else math.nan
            for c, v in cell_rms(original, edited, cells).items()}


def calibrate(cand: Candidate, generator: GeneratorAdapter, faces: FaceSet, region: str, sign: float, target: float,
              steps: int = 2, max_alpha: float = 50.0, start: float = 1.0) -> Calibrated:
    """Scale alpha (from ``sign * start``) until the mean inside change on ``faces`` is ``target``; ``steps`` secant
    steps (the change is close to linear in alpha: two suffice to land within a few percent)."""
    masks = faces.masks[region]
    alpha = sign * start
    for _ in range(steps):
        change = float(inside_change(faces.images, render(cand, generator, faces.latents, alpha), masks).mean())
        alpha = alpha * 4 if change <= 1e-9 else alpha * target / change
        alpha = max(-max_alpha, min(max_alpha, alpha))
    x1 = render(cand, generator, faces.latents, alpha)
    change = float(inside_change(faces.images, x1, masks).mean())
    r = roir(faces.images, x1, masks.float())
    score = float(r[torch.isfinite(r)].mean()) if torch.isfinite(r).any() else math.inf
    return Calibrated(alpha, change, score, pooled_rms(faces.images, x1, face_cells(faces.masks, region)))


def _masks_at(faces: FaceSet, grow_by: int) -> dict[str, torch.Tensor]:
    """The face set's masks with every region grown by ``grow_by`` pixels (the face oval as it is)."""
    return {r: (grow(m, grow_by) if r in REGIONS and grow_by > 0 else m) for r, m in faces.masks.items()}


def _scores(original: torch.Tensor, edited: torch.Tensor, cells: Cells) -> dict[str, tuple[float, float, int]]:
    out = {}
    for name, metric in METRICS.items():
        v = metric.fn(original, edited, cells)
        v = v[torch.isfinite(v)]
        out[name] = (float(v.mean()), float(v.std()), int(v.numel())) if v.numel() else (math.nan, math.nan, 0)
    return out


def check_methods(methods: Sequence[str]) -> list[str]:
    """The registered methods named (each once, in the order given); an unknown name, or none, is refused."""
    chosen = list(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise PandaError(f"unknown method(s) {', '.join(map(repr, unknown)) or 'none given'}: registered are "
                         f"{', '.join(METHODS)} (register your own with panda.methods.register_method, e.g. in a file "
                         f"`panda bench roir --methods-from FILE.py` runs).")
    return chosen


def run_roir(generator: GeneratorAdapter, n: int = 1000, n_calib: int = 64, budget: int = 100, target: float = 0.05,
             n_train: int = 5000, n_jacobian: int = 16, ganspace_samples: int = 10_000, rank_parts: int | None = None,
             seed: int = 0, progress: bool | None = None, model: PandA | None = None, masker=None,
             cross_check: bool = True, dilations: tuple[int, ...] = (2, 4), n_parts: int = 3,
             resefa_taus: tuple[float, ...] = (0.0, 1e-3), methods: Sequence[str] | None = None) -> BenchResult:
    """Run the protocol (module docstring) for every registered method.

    Parameters
    ----------
    generator : GeneratorAdapter
        A face generator.
    n, n_calib : int
        Test and calibration seeds to try.
    budget : int
        Directions each method may propose per region (x 2 signs).
    model : PandA, optional
        Fitted factors to use (their extraction and fit time count as PandA's setup); default: fit them here.
    masker : callable, optional
        ``masker(images, regions) -> RegionMasks``; default MediaPipe FaceMesh dilated by ``dilations[0]``.
        :class:`panda.landmarks.BoxMasker` runs the pipeline on generators that draw no faces.
    cross_check : bool
        Keep only faces MTCNN's ONet also accepts (needs a face generator).
    dilations : tuple of int
        Mask dilations (pixels) to report; the first is the masker's and selects the edits, the others grow it.
    n_parts, resefa_taus, n_jacobian
        See :class:`panda.methods.BenchContext`.
    methods : sequence of str, optional
        Compare only these registered methods (e.g. PandA and one of your own, registered with
        :func:`panda.methods.register_method`); default all.

    Returns
    -------
    BenchResult
    """
    chosen = list(METHODS) if methods is None else check_methods(methods)
    if not dilations or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in dilations) \
            or list(dilations) != sorted(set(dilations)):
        raise PandaError(f"dilations={dilations!r}: give increasing whole numbers of pixels >= 0, e.g. (2, 4).")
    masker, onet = masker or FaceMeshMasker(dilate=dilations[0]), load_onet() if cross_check else None
    calib = face_set(generator, CALIB_SEED_START, n_calib, masker, onet)
    test = face_set(generator, TEST_SEED_START, n, masker, onet)
    if len(calib.seeds) < 2 or len(test.seeds) < 2:
        raise PandaError(f"too few faces passed both landmark models ({len(calib.seeds)} calibration, {len(test.seeds)} "
                         f"test): try more seeds.")
    ctx = BenchContext(generator, calib, budget, None, model, n_train, rank_parts, seed, ganspace_samples,
                       min(n_jacobian, len(calib.seeds)), n_parts, tuple(resefa_taus), progress)
    available = {name: METHODS[name] for name in chosen if METHODS[name].unavailable(generator) is None}
    states, setup, per_image = {}, {}, {}
    log.info("%d calibration and %d test faces; setting up %s", len(calib.seeds), len(test.seeds), ", ".join(available))
    for name, method in available.items():
        states[name], setup[name] = method.setup(ctx)
        log.info("%s set up in %.1f s", name, setup[name])
    if ctx.model is not None:  # PandA proposes the parts that sit most on each region
        ctx.regions = part_regions(ctx.model, calib)
        ctx.model.part_names_ = ctx.regions.names()  # shown in its pictures
    test_masks = {d: _masks_at(test, d - dilations[0]) for d in dilations}

    rows, edits = [], {}
    for region in progress_bar(REGIONS, progress=progress, desc="regions"):
        edits[region] = {}
        log.info("region %s", region)
        for name, method in ((name, METHODS[name]) for name in chosen):
            if name not in available:
                rows.append(BenchRow(name, region, False, f"n/a ({method.unavailable(generator)})"))
                continue
            cands, seconds = _propose(method, states[name], ctx, region, calib)
            setup[name] += seconds
            best, tried, eligible = None, 0, 0
            for cand in progress_bar(cands, progress=progress, desc=f"{name} {region}", unit="candidate"):
                plus = calibrate(cand, generator, calib, region, 1.0, target)
                minus = calibrate(cand, generator, calib, region, -1.0, target, steps=1, start=abs(plus.alpha))
                for cal in (plus, minus):
                    tried += 1
                    if cal.specific_to(region):
                        eligible += 1
                        if best is None or cal.roir < best[0].roir:
                            best = (cal, cand.label)
            if best is None:
                rows.append(BenchRow(name, region, True, f"none ({tried} tried, none changes the {region} most)",
                                     chosen=False, tried=tried))
                continue
            cal, label = best
            test_cands, seconds = _propose(method, states[name], ctx, region, test)
            if method.per_image:
                per_image[name] = per_image.get(name, 0.0) + seconds / len(test.seeds)
            cand = next(c for c in test_cands if c.label == label)
            x1 = render(cand, generator, test.latents, cal.alpha)
            cells = {d: face_cells(m, region) for d, m in test_masks.items()}
            scores = {d: _scores(test.images, x1, Cells(region, c)) for d, c in cells.items()}
            split = pooled_rms(test.images, x1, cells[dilations[0]])
            rows.append(BenchRow(name, region, True, label, True, cal.alpha,
                                 float(inside_change(test.images, x1, test.masks[region]).mean()), scores, split,
                                 tried, eligible, cal.roir))
            edits[region][name] = x1
    check = {k: v for k, v in test.check.items() if k != "points"}
    options = {"budget": budget, "n_parts": n_parts, "n_jacobian": ctx.n_jacobian, "resefa_taus": tuple(resefa_taus),
               "n_train": n_train, "rank_parts": ctx.model.n_parts if ctx.model is not None else rank_parts,
               "layer": ctx.model.layer_ if ctx.model is not None else None, "ganspace_samples": ganspace_samples}
    # each compared method says how it was run, in its own words (a method of the user's too)
    options["settings"] = {name: METHODS[name].settings(options) for name in chosen
                           if name in available and METHODS[name].settings is not None}
    return BenchResult(generator.name, test.n_tried, len(test.seeds), len(calib.seeds), target, tuple(dilations), setup,
                       per_image, rows, check, ctx.regions, test, edits, ctx.model, options)


def _propose(method: Method, state, ctx: BenchContext, region: str, faces: FaceSet) -> tuple[list[Candidate], float]:
    t = time.perf_counter()
    cands = method.propose(state, ctx, region, faces)
    return cands, time.perf_counter() - t
