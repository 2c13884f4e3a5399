"""The ROIR benchmark's protocol: every registered method (:mod:`panda.methods`) against every registered
metric (:mod:`panda.metrics`), on region masks from independent landmark models (:mod:`panda.landmarks`).

Protocol (every method gets the same budget of choices):

1. Seeds: PandA and GANSpace train on ``[0, n_train)``; calibration seeds start at 20,000,000 and test
   seeds at 10,000,000, disjoint from each other and from training. Samples are kept where FaceMesh finds
   a face, ONet (on FaceMesh's face box) gives probability > 0.9, and every region mask is non-empty.
2. Each method proposes ``budget`` directions per region: PandA the top appearances (by coefficient
   energy) of the part that overlaps the region most (the part named after it); GANSpace and SeFa their
   first directions; LowRankGAN and ReSeFa their first directions for that region, computed from
   ``n_jacobian`` calibration samples and their masks. Each direction is tried with both signs.
3. Matched magnitude: for every candidate, alpha is scaled (secant steps) until the mean absolute pixel
   change inside the region, over the calibration samples, equals ``target`` (images in [0, 1]).
4. The candidate with the lowest mean ROIR on the calibration samples is the method's edit for the
   region; every registered metric (mean +- std) is then reported on the test samples, each with its own mask.

The result is data (:class:`BenchResult`); :mod:`panda.tables` and :mod:`panda.figures` draw it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .errors import PandaError
from .generators import GeneratorAdapter
from .landmarks import REGIONS, FaceMeshMasker, FaceSet, face_set, load_onet
from .methods import METHODS, BenchContext, Candidate, Method
from .metrics import METRICS, inside_change, roir
from .model import PandA
from .naming import CALIB_SEED_START, part_names, region_parts

TEST_SEED_START = 10_000_000


@dataclass
class BenchRow:
    """One method on one region.

    Attributes
    ----------
    method, region : str
    available : bool
        False when the method cannot run on this generator (then ``label`` says why and the numbers are NaN).
    label : str
        The edit chosen on the calibration faces, or why the method is not available.
    alpha : float
        Its strength.
    change : float
        Mean absolute pixel change inside the region on the test faces (the matched magnitude).
    scores : dict of str to (float, float, int)
        Metric name -> (mean, std, number of test faces with a finite value).
    """

    method: str
    region: str
    available: bool
    label: str
    alpha: float = math.nan
    change: float = math.nan
    scores: dict[str, tuple[float, float, int]] = field(default_factory=dict)


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
    setup_s : dict of str to float
        Each available method's setup time (its training), seconds.
    rows : list of BenchRow
    check : dict
        Landmark cross-check shares (ONet's points inside FaceMesh's masks).
    part_names : dict of int to str
        PandA's parts named after regions.
    faces : FaceSet
        The test faces.
    edits : dict
        {region: {method: edited test images (N, 3, H, W) in [0, 1]}}, for pictures.
    model : PandA
        The PandA model used.
    """

    generator: str
    n_tried: int
    n_test: int
    n_calib: int
    target: float
    setup_s: dict[str, float]
    rows: list[BenchRow]
    check: dict
    part_names: dict[int, str]
    faces: FaceSet
    edits: dict
    model: PandA

    def row(self, method: str, region: str) -> BenchRow:
        return next(r for r in self.rows if r.method == method and r.region == region)


def calibrate(cand: Candidate, generator: GeneratorAdapter, faces: FaceSet, masks: torch.Tensor, sign: float,
              target: float, steps: int = 4, max_alpha: float = 50.0) -> tuple[float, float, float]:
    """Scale alpha until the mean inside change on ``faces`` is ``target``; returns (alpha, change, mean ROIR)."""
    alpha, change, x1 = sign * 1.0, 0.0, None
    for _ in range(steps):
        x1 = generator.to_unit(cand.apply(faces.latents, alpha)).cpu()
        change = float(inside_change(faces.images, x1, masks).mean())
        if change <= 1e-9:
            alpha *= 4
        else:
            alpha *= target / change
        alpha = max(-max_alpha, min(max_alpha, alpha))
    x1 = generator.to_unit(cand.apply(faces.latents, alpha)).cpu()
    change = float(inside_change(faces.images, x1, masks).mean())
    r = roir(faces.images, x1, masks.float())
    return alpha, change, float(r[torch.isfinite(r)].mean()) if torch.isfinite(r).any() else math.inf


def _scores(original: torch.Tensor, edited: torch.Tensor, masks: torch.Tensor) -> dict[str, tuple[float, float, int]]:
    out = {}
    for name, metric in METRICS.items():
        v = metric.fn(original, edited, masks.float())
        v = v[torch.isfinite(v)]
        out[name] = (float(v.mean()), float(v.std()), int(v.numel())) if v.numel() else (math.nan, math.nan, 0)
    return out


def run_roir(generator: GeneratorAdapter, n: int = 1000, n_calib: int = 64, budget: int = 8, target: float = 0.05,
             n_train: int = 5000, n_jacobian: int = 5, ganspace_samples: int = 10_000, rank_parts: int = 12,
             seed: int = 0, progress: bool = True, model: PandA | None = None, masker=None,
             cross_check: bool = True) -> BenchResult:
    """Run the protocol (module docstring) for every registered method.

    Parameters
    ----------
    generator : GeneratorAdapter
        A face generator.
    n, n_calib : int
        Test and calibration seeds to try.
    model : PandA, optional
        Fitted factors to use (their extraction and fit time count as PandA's setup); default: fit them here.
    masker : callable, optional
        ``masker(images) -> RegionMasks``; default MediaPipe FaceMesh. :class:`panda.landmarks.BoxMasker` runs the
        pipeline on generators that draw no faces.
    cross_check : bool
        Keep only faces MTCNN's ONet also accepts (needs a face generator).

    Returns
    -------
    BenchResult
    """
    masker, onet = masker or FaceMeshMasker(), load_onet() if cross_check else None
    calib = face_set(generator, CALIB_SEED_START, n_calib, masker, onet)
    test = face_set(generator, TEST_SEED_START, n, masker, onet)
    if len(calib.seeds) < max(n_jacobian, 2) or len(test.seeds) < 2:
        raise PandaError(f"too few faces passed both landmark models ({len(calib.seeds)} calibration, {len(test.seeds)} "
                         f"test): try more seeds.")
    ctx = BenchContext(generator, calib, budget, None, model, n_train, rank_parts, seed, ganspace_samples, n_jacobian, progress)
    available = {name: m for name, m in METHODS.items() if m.unavailable(generator) is None}
    states, setup = {}, {}
    for name, method in available.items():
        states[name], setup[name] = method.setup(ctx)
    if ctx.model is not None:  # PandA proposes the top appearances of the part named after each region
        ctx.part_of = region_parts(ctx.model, calib)
        ctx.model.part_names_ = part_names(ctx.part_of)  # shown in its pictures

    rows, edits = [], {}
    for region in tqdm(REGIONS, desc="regions", disable=not progress, leave=False):
        edits[region] = {}
        for name, method in METHODS.items():
            if name not in available:
                rows.append(BenchRow(name, region, False, f"n/a ({method.unavailable(generator)})"))
                continue
            cands, seconds = _propose(method, states[name], ctx, region)
            setup[name] += seconds
            best = None
            for cand in cands:
                for sign in (1.0, -1.0):
                    alpha, change, score = calibrate(cand, generator, calib, calib.masks[region], sign, target)
                    if best is None or score < best[0]:
                        best = (score, cand, alpha)
            _, cand, alpha = best
            with torch.no_grad():
                x1 = torch.cat([generator.to_unit(cand.apply(test.latents[i:i + 256], alpha)).cpu()
                                for i in range(0, len(test.seeds), 256)])
            masks = test.masks[region]
            rows.append(BenchRow(name, region, True, cand.label, alpha, float(inside_change(test.images, x1, masks).mean()),
                                 _scores(test.images, x1, masks)))
            edits[region][name] = x1
    check = {k: v for k, v in test.check.items() if k != "points"}
    names = ctx.model.part_names_ if ctx.model is not None else {}
    return BenchResult(generator.name, test.n_tried, len(test.seeds), len(calib.seeds), target, setup, rows, check,
                       names, test, edits, ctx.model)


def _propose(method: Method, state, ctx: BenchContext, region: str) -> tuple[list[Candidate], float]:
    t = time.perf_counter()
    cands = method.propose(state, ctx, region)
    return cands, time.perf_counter() - t
