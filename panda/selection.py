"""Choosing R_S: fits of one layer at several numbers of parts, on one shared pass of statistics.

The P-step's statistic ``M = sum_i Z_i^T A A^T Z_i`` does not depend on R_S, and with R_C = C (the default) not on A
either, so the first pass (:func:`panda.factorisation.data_stats`) serves every rank: each further fit costs its own
P-step and two passes (the A-step's scatters and the coefficients), over feature maps held in memory when they fit
the budget. Each fit is scored on held-out samples; on a face generator it can also be measured against FaceMesh's
regions (:func:`panda.naming.part_regions`), the criterion the bundled generators' default R_S was chosen by.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .comparison import align, compare
from .errors import PandaError
from .factorisation import check_ranks, check_statistics_memory, data_stats
from .features import FeatureArray, FeatureSource, as_features
from .landmarks import REGIONS, FaceSet
from .model import PandA
from .naming import PartRegions, part_regions
from .progress import progress_bar

log = logging.getLogger(__name__)

#: The smallest share of a part's mass inside its region for the region to count as having a part of its own
#: (the rule behind the bundled generators' default R_S: ``benchmarks/semantic_parts.md``).
SEMANTIC_PURITY = 0.2
#: The most ranks one sweep fits (a typo like 1-4096 must not start thousands of fits).
MAX_RANKS = 64
#: R_S tried when none are given, those that fit the layer's positions.
DEFAULT_RANKS = (4, 8, 12, 16, 24, 32, 40, 48)


@dataclass
class RankSweep:
    """What :func:`rank_sweep` returns.

    Attributes
    ----------
    ranks : list of int
        R_S of each fit, ascending.
    models : list of PandA
        The fits, one per rank (``train_error_``, ``heldout_error_``); each records the shared pass as its own
        (``n_passes_``, ``fit_time_``, ``extract_time_``), as the same fit on its own would.
    stats_time : float
        Seconds of the shared statistics pass, the generator's excluded.
    extract_time : float
        Seconds in the generator for the training samples, over all passes.
    regions : list of PartRegions or None
        Where each fit's parts fall on the faces (``faces`` given to :func:`rank_sweep`).
    n_faces : int
        Faces the regions were measured on (0 without).
    stability : list of list of float or None
        With ``other`` given to :func:`rank_sweep`: for each rank, the similarity of each of its parts to its match
        in the fit on the other samples (:func:`panda.comparison.compare`), most similar first.
    """

    ranks: list[int]
    models: list[PandA]
    stats_time: float
    extract_time: float
    regions: list[PartRegions] | None = None
    n_faces: int = 0
    stability: list[list[float]] | None = None

    @property
    def train_errors(self) -> list[float]:
        return [m.train_error_ for m in self.models]

    @property
    def heldout_errors(self) -> list[float]:
        """NaN where no held-out samples were given."""
        return [m.heldout_error_ for m in self.models]

    @property
    def fit_times(self) -> list[float]:
        return [m.fit_time_ for m in self.models]

    @property
    def scored_errors(self) -> list[float]:
        """The held-out errors where held-out samples were given, else the training errors: what the sweep's tables
        compare ranks by."""
        return self.train_errors if all(np.isnan(self.heldout_errors)) else self.heldout_errors

    def purities(self) -> dict[str, list[float]] | None:
        """Per region, each fit's best part's share of mass inside it (:meth:`PartRegions.summary`), counted only
        when that part is named after the region (else 0); None without faces."""
        if self.regions is None:
            return None
        out: dict[str, list[float]] = {r: [] for r in REGIONS}
        for pr in self.regions:
            s = pr.summary()
            for r in REGIONS:
                out[r].append(s[r]["share"] if s[r]["named"] else 0.0)
        return out

    def semantic_choice(self, purity: float = SEMANTIC_PURITY) -> int | None:
        """The smallest R_S at which the eyes, nose and mouth each have a part named after them with at least
        ``purity`` of its mass inside; None without faces or when no rank qualifies."""
        shares = self.purities()
        if shares is None:
            return None
        for i, rank in enumerate(self.ranks):
            if all(shares[r][i] >= purity for r in REGIONS):
                return rank
        return None

    def stable_parts(self, threshold: float = 0.9) -> list[int] | None:
        """For each rank, how many of its parts come back in the fit on other samples with at least ``threshold``
        similarity; None without that fit."""
        return None if self.stability is None else [sum(x >= threshold for x in s) for s in self.stability]

    def chained(self) -> list[PandA]:
        """The fits with their parts renumbered rank after rank: each one's after the previous (renumbered) one's
        (:func:`panda.comparison.align`), its new parts last. A region that every rank keeps has one number
        (one colour in ranks.png) from the first rank on, and the parts a larger rank adds show where it splits
        regions. The fits themselves are unchanged (:meth:`PandA.reorder_parts`)."""
        out = [self.models[0]]
        for m in self.models[1:]:
            out.append(align(out[-1], m)[0])
        return out

    def rows(self) -> list[dict]:
        """One dict per rank: R_S, errors, the error's fall per added part since the previous rank (held-out, or
        training where there are no held-out samples), fit seconds and, with faces, each region's purity; with
        stability, the parts back on other samples and their mean similarity."""
        shares, errors, back = self.purities(), self.scored_errors, self.stable_parts()
        out = []
        for i, (rank, m) in enumerate(zip(self.ranks, self.models)):
            row = {"rank_parts": rank, "train_error": m.train_error_, "heldout_error": m.heldout_error_,
                   "fall_per_part": (float("nan") if i == 0 else
                                     (errors[i - 1] - errors[i]) / (rank - self.ranks[i - 1])),
                   "fit_s": m.fit_time_}
            if shares is not None:
                row |= {f"{r}_purity": shares[r][i] for r in REGIONS}
            if self.stability is not None:
                row |= {"parts_back": back[i], "mean_similarity": float(np.mean(self.stability[i]))}
            out.append(row)
        return out

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The sweep as arrays (``--save-arrays``): ranks, errors, fit seconds, each fit's parts on the layer's grid
        (a (R_S, H, W) array per rank, ``parts_rs{R}``) and, with faces, the regions' purities."""
        out = {"ranks": np.array(self.ranks), "train_errors": np.array(self.train_errors),
               "heldout_errors": np.array(self.heldout_errors), "fit_s": np.array(self.fit_times)}
        out |= {f"parts_rs{r}": m.part_maps().numpy() for r, m in zip(self.ranks, self.models)}
        shares = self.purities()
        if shares is not None:
            out |= {f"{r}_purity": np.array(v) for r, v in shares.items()}
        if self.stability is not None:
            out |= {f"similarity_rs{r}": np.array(v) for r, v in zip(self.ranks, self.stability)}
        return out


def check_rank_list(ranks: Sequence[int], shape: tuple[int, int, int], rank_appearance: int | None = None) -> list[int]:
    """The ranks of a sweep, checked against the layer's (C, H, W) and sorted; a repeated rank is refused."""
    ranks = list(ranks)
    if not ranks:
        raise PandaError("no ranks to fit: give at least one R_S, e.g. 8,16,24.")
    if len(ranks) > MAX_RANKS:
        raise PandaError(f"{len(ranks)} ranks asked for, at most {MAX_RANKS} in one sweep: give fewer.")
    repeated = sorted({r for r in ranks if ranks.count(r) > 1})
    if repeated:
        raise PandaError(f"R_S {', '.join(map(str, repeated))} given twice: name each rank once.")
    c, h, w = shape
    for r in ranks:
        check_ranks(c if rank_appearance is None else rank_appearance, r, c, h * w)
    return sorted(ranks)


def default_ranks(shape: tuple[int, int, int]) -> list[int]:
    """:data:`DEFAULT_RANKS` that fit a layer of (C, H, W), with S itself when S is smaller than the last."""
    s = shape[1] * shape[2]
    ranks = [r for r in DEFAULT_RANKS if r <= s]
    return ranks if len(ranks) == len(DEFAULT_RANKS) else ranks + ([s] if s not in ranks else [])


def rank_sweep(
    source: "FeatureSource | FeatureArray | torch.Tensor | np.ndarray",
    ranks: Sequence[int],
    heldout: "FeatureSource | FeatureArray | torch.Tensor | np.ndarray | None" = None,
    faces: FaceSet | None = None,
    other: "FeatureSource | FeatureArray | torch.Tensor | np.ndarray | None" = None,
    rank_appearance: int | None = None,
    random_state: int = 0,
    max_iter: int = 30,
    tol: float = 1e-4,
    n_init: int = 4,
    progress: bool | None = False,
    reseed: int = 0,
) -> RankSweep:
    """Fit PandA on ``source`` at each R_S of ``ranks``, sharing one statistics pass, and score each fit.

    Parameters
    ----------
    source : FeatureSource, FeatureArray, torch.Tensor or numpy.ndarray
        The training data, as :meth:`PandA.fit` takes it; a generator's samples are best kept in memory (the
        source's ``memory_budget``): each rank reads them twice more.
    ranks : sequence of int
        R_S values, each in 1..S, none repeated.
    heldout : same kinds as ``source``, optional
        Samples never fitted on: each fit's ``score`` (its held-out relative error).
    faces : FaceSet, optional
        Faces of the same generator with FaceMesh's masks (:func:`panda.landmarks.face_set`): each fit's parts are
        measured on them (:attr:`RankSweep.regions`).
    other : same kinds as ``source``, optional
        Other samples of the same layer: every rank is fitted on them too (their own shared pass), from other random
        starts, and each fit's parts are matched with those of the fit on ``source`` (:attr:`RankSweep.stability`):
        which ranks give parts that come back.
    rank_appearance, random_state, max_iter, tol, n_init, reseed
        As :class:`PandA` takes them, the same for every rank.
    progress : bool or None
        A bar over the ranks (None: when stderr is a terminal); the source's own bar shows its passes.

    Returns
    -------
    RankSweep
    """
    source = as_features(source)
    c, h, w = source.shape
    ranks = check_rank_list(ranks, source.shape, rank_appearance)
    for r in ranks:  # every other hyper-parameter, before any sample is generated
        PandA(rank_appearance, r, max_iter, tol, random_state, n_init, reseed=reseed).validate(source.shape)
    check_statistics_memory((h, w), source.device, f"layer {source.layer!r}")
    if faces is not None and len(faces.seeds) == 0:  # before the fits, not after
        raise PandaError("no faces to measure the parts on: FaceMesh found none in these samples; leave faces "
                         "out for a generator that draws no faces.")
    heldout = None if heldout is None else as_features(heldout)
    extract0 = source.extract_time
    t0 = time.perf_counter()
    stats = data_stats(source, (h, w))
    shared_extract = source.extract_time - extract0
    stats_time = time.perf_counter() - t0 - shared_extract
    log.info("shared statistics of %d samples in %.1f s; fitting R_S = %s", stats.n, stats_time,
             ", ".join(map(str, ranks)))
    models = []
    bar = progress_bar(total=len(ranks), desc="ranks", unit="fit", progress=progress)
    for r in ranks:
        model = PandA(rank_appearance, r, max_iter, tol, random_state, n_init, verbose=False,
                      reseed=reseed).fit(source, stats=stats)
        # each fit records the shared pass as its own, as a fit on its own would: its file tells what it took
        model.n_passes_ += 1
        model.fit_time_ += stats_time
        model.extract_time_ += shared_extract
        if heldout is not None:
            model.score(heldout)
        models.append(model)
        bar.update(1)
        bar.set_postfix(rank=r, error=f"{model.heldout_error_ if heldout is not None else model.train_error_:.4f}")
        held = "" if heldout is None else f", held-out {model.heldout_error_:.4f}"  # none measured: not "nan"
        log.info("R_S = %d: training error %.4f%s, fit %.1f s", r, model.train_error_, held, model.fit_time_)
    bar.close()
    regions = None if faces is None else [part_regions(m, faces) for m in models]
    stability = None
    if other is not None:
        log.info("the same ranks on other samples, for the parts' stability")
        # other starts too (seeds random_state + n_init.., disjoint from this sweep's): parts that come back owe
        # nothing to either the samples or the starts
        twin = rank_sweep(other, ranks, rank_appearance=rank_appearance, random_state=random_state + n_init,
                          max_iter=max_iter, tol=tol, n_init=n_init, progress=progress, reseed=reseed)
        stability = [compare(m, t).matched for m, t in zip(models, twin.models)]
    return RankSweep(ranks, models, stats_time, source.extract_time - extract0, regions,
                     0 if faces is None else len(faces.seeds), stability)
