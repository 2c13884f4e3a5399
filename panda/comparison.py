"""Comparing two fits of one layer: are the parts and appearances stable across seeds, sample sets, ranks or
settings?

Parts are compared by the cosine similarity of their columns of P (non-negative maps over the grid: 1 is the same
map up to scale) and matched one to one so that the matched similarities sum to the most (:func:`match`, the
Hungarian method). Appearances are compared as subspaces: for the k first of each fit (ordered by the energy they
explain), ``||A_k^T B_k||_F^2 / k`` is 1 when both span the same k directions and k / C for unrelated ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import PandaError
from .model import PandA


def match(similarity: np.ndarray) -> list[tuple[int, int]]:
    """The one-to-one matching of rows to columns with the largest total similarity (Hungarian method,
    O(n^3)); with more rows than columns (or fewer) the extra ones stay unmatched.

    Parameters
    ----------
    similarity : numpy.ndarray
        (R, K) finite scores.

    Returns
    -------
    list of (int, int)
        (row, column) pairs, min(R, K) of them, by row.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or not np.isfinite(sim).all():
        raise PandaError("match needs a 2-d array of finite similarities.")
    flipped = sim.shape[0] > sim.shape[1]
    cost = -(sim.T if flipped else sim)  # rows <= columns from here on; the method minimises
    n, m = cost.shape
    # potentials u (rows), v (columns); owner[j]: the row matched to column j (1-based, 0: none); way: the path
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner, way = np.zeros(m + 1, dtype=int), np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        best, used = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=bool)
        while True:  # grow the alternating tree from row i until it reaches a free column
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < best[1:])
            best[1:][better], way[1:][better] = reduced[better], j0
            candidates = np.where(free, best[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            best[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # flip the path's matches
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pairs = [(int(owner[j]) - 1, j - 1) for j in range(1, m + 1) if owner[j]]
    pairs = [(c, r) for r, c in pairs] if flipped else pairs
    return sorted(pairs)


@dataclass
class Comparison:
    """What :func:`compare` returns.

    Attributes
    ----------
    similarity : torch.Tensor
        (R_S of the first, R_S of the second): cosine similarity of every pair of parts.
    pairs : list of (int, int)
        The matched parts (first fit's, second fit's), most similar first.
    ks : list of int
        Numbers of leading appearances compared.
    overlap : list of float
        For each k of ``ks``: ``||A_k^T B_k||_F^2 / k``, 1 for the same subspace.
    chance : list of float
        For each k: k / C, the overlap of two unrelated random subspaces (in expectation).
    """

    similarity: torch.Tensor
    pairs: list[tuple[int, int]]
    ks: list[int]
    overlap: list[float]
    chance: list[float]

    @property
    def matched(self) -> list[float]:
        """The similarity of each matched pair, in ``pairs``' order."""
        return [float(self.similarity[a, b]) for a, b in self.pairs]

    def unmatched(self) -> tuple[list[int], list[int]]:
        """Parts of the first and of the second fit left without a partner (the fits have different R_S)."""
        first, second = {a for a, _ in self.pairs}, {b for _, b in self.pairs}
        return ([k for k in range(self.similarity.shape[0]) if k not in first],
                [k for k in range(self.similarity.shape[1]) if k not in second])


def _leading(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def compare(first: PandA, second: PandA) -> Comparison:
    """Match the parts of two fits of the same layer shape and compare their appearance subspaces.

    Returns
    -------
    Comparison
    """
    for m in (first, second):
        m._check_fitted()
    if tuple(first.layer_shape_) != tuple(second.layer_shape_):
        raise PandaError(f"the fits are of layers of different shapes ({'x'.join(map(str, first.layer_shape_))} and "
                         f"{'x'.join(map(str, second.layer_shape_))}): compare fits of the same layer.")
    p, q = first.parts_.double(), second.parts_.double()
    p = p / p.norm(dim=0).clamp_min(1e-12)
    q = q / q.norm(dim=0).clamp_min(1e-12)
    similarity = p.T @ q  # (R_S first, R_S second), in [0, 1]: parts are non-negative
    pairs = sorted(match(similarity.numpy()), key=lambda ab: -float(similarity[ab]))
    a, b = first.appearances_.double(), second.appearances_.double()
    c = a.shape[0]
    ks = _leading(min(a.shape[1], b.shape[1]))
    overlap = [float((a[:, :k].T @ b[:, :k]).square().sum()) / k for k in ks]
    return Comparison(similarity.float(), pairs, ks, overlap, [k / c for k in ks])


def aligned_order(result: Comparison) -> list[int]:
    """The second fit's parts in the first fit's numbering: for each of the first fit's parts in turn its partner
    (where it has one), then the second's unmatched parts in their own order. With equal R_S every part is
    matched, and part k of the renumbered fit is the partner of the first fit's part k."""
    partner = dict(result.pairs)
    order = [partner[k] for k in range(result.similarity.shape[0]) if k in partner]
    return order + result.unmatched()[1]


#: Matched parts at least this similar count as the same part: their names carry over (:func:`align`).
NAME_SIMILARITY = 0.9


def align(first: PandA, second: PandA, names: bool = False,
          result: Comparison | None = None) -> tuple[PandA, Comparison]:
    """``second`` with its parts renumbered after ``first``'s (:func:`aligned_order`), and the comparison that
    matched them: after a refit (another seed, more samples, ``reseed``), part numbers that a script, a figure or a
    part's name refers to then mean what they meant where the parts came back. Nothing else changes
    (:meth:`PandA.reorder_parts`).

    With ``names``, a part without a name of its own takes its partner's name (``panda name-parts``) where the two
    maps' similarity is at least :data:`NAME_SIMILARITY`: the same map, so the same region; the others stay unnamed.
    ``result``: :func:`compare` (first, second) where it is already at hand.
    """
    result = compare(first, second) if result is None else result
    order = aligned_order(result)
    aligned = second.reorder_parts(order)
    if names:
        partners = {k: a for k, a in carried_partners(first, result, order).items() if k not in aligned.part_names_}
        aligned.part_names_ = {k: first.part_names_[a] for k, a in partners.items()} | aligned.part_names_
        # a name the first fit was given by hand stays one given by hand (FaceMesh naming keeps it)
        aligned.hand_named_ = aligned.hand_named_ | {k for k, a in partners.items() if a in first.hand_named_}
    return aligned, result


def carried_partners(first: PandA, result: Comparison, order: list[int]) -> dict[int, int]:
    """{part of the fit renumbered by ``order`` (:func:`aligned_order` of ``result``): the named part of ``first`` it
    takes its name from}: the partners in ``result`` (``first`` compared with the fit before it was renumbered) at
    least :data:`NAME_SIMILARITY` similar."""
    new = {old: k for k, old in enumerate(order)}  # the second fit's part -> its number in ``aligned``
    return {new[b]: a for a, b in result.pairs
            if a in first.part_names_ and float(result.similarity[a, b]) >= NAME_SIMILARITY}