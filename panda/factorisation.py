"""The PandA factorisation: appearances A (C x R_C, orthonormal columns) and non-negative
parts P (S x R_S) minimising ``sum_i ||Z_i - A A^T Z_i P P^T||_F^2`` over feature maps Z_i (C x S).

Why it needs no learning rate: with ``Q = P P^T`` and ``A^T A = I``,

* for fixed P the objective is ``sum_i ||Z_i||^2 - tr(A^T N A)`` with
  ``N = sum_i Y_i (2 I - P^T P) Y_i^T`` and ``Y_i = Z_i P`` (C x R_S), so the best A is the
  top-R_C eigenvectors of N: a closed-form step;
* for fixed A it is ``sum_i ||Z_i||^2 - 2 tr(P^T M P) + tr(P^T M P P^T P)`` with
  ``M = sum_i Z_i^T A A^T Z_i`` (S x S): the P-step never touches the data again, and is
  solved by spectral projected gradient with an exact line search (f is a quartic along any
  line), whose step adapts itself; several random starts run as one batched product.

Every statistic is a sum over samples, accumulated batch by batch in bounded memory. With
R_C = C the P-step's M does not depend on A, and the whole fit takes two passes over the data.

Each decomposition is a plain function (TensorLy style); :class:`panda.model.PandA` wraps them.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

import torch

from .errors import PandaError, plain_int
from .progress import progress_bar

log = logging.getLogger(__name__)

Batches = Iterable[torch.Tensor]  # re-iterable; each item (B, C, S)


NON_FINITE = ("the feature maps contain NaN or inf values: check the generator and its inputs (a broken weight file or "
              "latents with NaN), or pick another layer.")


def _refuse_features(batches: Batches) -> None:
    """Raise the error that non-finite or zero statistics stand for: the data's own NaN/inf or zeros, or finite data
    whose squares leave float32's range (|z| above about 1e19 overflows, below about 1e-22 vanishes), which would
    otherwise be reported as values the data do not hold. Which one, the data's largest magnitude says: one more pass,
    on this error path only."""
    big = torch.zeros((), dtype=torch.float64)
    for z in batches:
        big = torch.maximum(big, _upcast(z).abs().amax().double().cpu())  # NaN propagates
    if not torch.isfinite(big):
        raise PandaError(NON_FINITE)
    if big > 1:
        raise PandaError(f"the feature maps are finite, but values as large as {float(big):.3g} overflow their float32 sums "
                         "of squares: divide them by a constant first (the parts do not change; the appearances' "
                         "coefficients scale with it).")
    if big > 0:
        raise PandaError(f"the feature maps are not zero, but all as small as {float(big):.3g}: their squares vanish in "
                         "float32. Multiply them by a constant first (the parts do not change).")
    raise PandaError("the feature maps are all zero at this layer: pick another layer.")


def _upcast(z: torch.Tensor) -> torch.Tensor:
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


@dataclass
class DataStats:
    """First-pass statistics of the data (all float64).

    Attributes
    ----------
    total : float
        sum_i ||Z_i||_F^2.
    channel : torch.Tensor
        sum_i Z_i Z_i^T, (C, C) (HOSVD of the channel mode).
    position : torch.Tensor
        sum_i Z_i^T Z_i, (S, S) (the P-step's M when R_C = C).
    feature_norm : float
        Mean over samples and positions of the feature vector's norm ||z_{:, s}||: the layer's typical
        activation norm, the unit of edit strengths.
    n : int
        Number of samples.
    border_channel : torch.Tensor or None
        sum_i Z_i[:, B] Z_i[:, B]^T over the grid's outer ring B, (C, C): with ``channel`` it gives each
        appearance's share of energy on the border.
    border_sum : torch.Tensor or None
        sum_i Z_i[:, B] 1, (C,): the sign an appearance typically has on the border.
    grid : (int, int) or None
        The layer's (H, W), when given to :func:`data_stats`.
    """

    total: float
    channel: torch.Tensor
    position: torch.Tensor
    feature_norm: float
    n: int
    border_channel: torch.Tensor | None = None
    border_sum: torch.Tensor | None = None
    grid: tuple[int, int] | None = None


def border_mask(h: int, w: int, width: int = 1) -> torch.Tensor:
    """(H, W) bool mask of the grid's outer ring, ``width`` positions wide."""
    inner = torch.zeros(h, w, dtype=torch.bool)
    inner[width:h - width, width:w - width] = True
    return ~inner


def data_stats(batches: Batches, grid: tuple[int, int] | None = None) -> DataStats:
    """One pass over the data -> :class:`DataStats`.

    Parameters
    ----------
    batches : iterable of torch.Tensor
        (B, C, S) feature maps.
    grid : (int, int), optional
        The layer's (H, W); with it the border statistics are gathered too.
    """
    norm_sum, n, channel, position, border_channel, border_sum = 0.0, 0, None, None, None, None
    # positions of the outer ring as indices, moved to the data's device once: a boolean mask index would make a GPU
    # wait for the host (to count the selected entries) on every batch
    border = None if grid is None else border_mask(*grid).flatten().nonzero().squeeze(1)
    for z in batches:
        z = _upcast(z)
        b, c, s = z.shape
        zs = z.transpose(1, 2).reshape(b * s, c)  # one copy serves the channel scatter, the norms and the border
        ch = (zs.T @ zs).double()
        channel = ch if channel is None else channel + ch
        if position is None:
            position = _SymmetricGram(s, z.device)
        position.add(z.reshape(b * c, s))
        # kept on the device: a float() per batch would make a GPU wait for the host every batch
        norm_sum = norm_sum + zs.norm(dim=1).double().sum()
        n += b
        if border is not None:
            if border.device != z.device:
                border = border.to(z.device)
            zb = zs.view(b, s, c).index_select(1, border).reshape(-1, c)  # whole rows of the copy: 3x faster
            bc, bs = (zb.T @ zb).double(), zb.sum(0).double()
            border_channel = bc if border_channel is None else border_channel + bc
            border_sum = bs if border_sum is None else border_sum + bs
    if n == 0:
        raise PandaError("no samples to fit on: n_samples must be >= 1.")
    # NaN or inf anywhere in the data reaches the sums (the channel trace and the norm sum), checked once at the end
    if not torch.isfinite(torch.stack([torch.trace(channel), norm_sum])).all():
        _refuse_features(batches)
    total = float(torch.trace(channel))  # sum_i ||Z_i||^2 = tr(sum_i Z_i Z_i^T)
    position = position.result()
    return DataStats(total, channel, position, float(norm_sum) / (n * position.shape[0]), n, border_channel, border_sum,
                     None if grid is None else tuple(grid))


class _SymmetricGram:
    """sum over rows of X^T X, (S, S) float64, for a stream of (rows, S) blocks X: the position statistic.

    It costs C S^2 per sample, the fit's largest data-pass cost at large S, so two things are saved: only the blocks
    on and above the diagonal are multiplied (a 4 x 4 block grid does 10 of 16 products: 1.5-1.8x faster at
    S = 4096 on a CPU; blocks of at least 128 positions, below which a CPU's products lose more speed than the
    skipped blocks save: 10-15% faster at S = 256 and 1024 than blocks of 512), and products are summed in float32
    (as a long GEMM would) and added to the float64 total every ``flush_rows`` rows rather than every batch (a float64
    add of S^2 entries costs a third of a C = 3 batch's product at S = 4096)."""

    def __init__(self, s: int, device: torch.device, flush_rows: int = 8192) -> None:
        nb = max(1, min(4, s // 128))
        self.edges = [i * s // nb for i in range(nb + 1)]
        self.pairs = [(i, j) for i in range(nb) for j in range(i, nb)]
        self.s, self.device, self.flush_rows = s, device, flush_rows
        self.part: dict[tuple[int, int], torch.Tensor] = {}
        self.total: dict[tuple[int, int], torch.Tensor] = {}
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        """x (rows, S), or (..., rows, S) for several Gram matrices at once (one per leading index), float32."""
        e = self.edges
        for i, j in self.pairs:
            prod = x[..., e[i]:e[i + 1]].transpose(-2, -1) @ x[..., e[j]:e[j + 1]]
            if (i, j) in self.part:
                self.part[i, j] += prod
            else:
                self.part[i, j] = prod
        self.rows += x.shape[-2]
        if self.rows >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        for key, blk in self.part.items():
            if key in self.total:
                self.total[key].add_(blk)  # in place, promoted to float64: no float64 copy of the block
            else:
                self.total[key] = blk.double()
        self.part, self.rows = {}, 0

    def result(self) -> torch.Tensor:
        self._flush()
        if len(self.pairs) == 1:  # one block: it is the result (no second copy of R S x S matrices)
            return self.total.pop((0, 0))
        e = self.edges
        lead = self.total[0, 0].shape[:-2]
        out = torch.empty(*lead, self.s, self.s, dtype=torch.float64, device=self.device)
        for (i, j), blk in self.total.items():
            out[..., e[i]:e[i + 1], e[j]:e[j + 1]] = blk
            out[..., e[j]:e[j + 1], e[i]:e[i + 1]] = blk.transpose(-2, -1)
        return out


def position_gram(batches: Batches, appearances: torch.Tensor) -> torch.Tensor:
    """M = sum_i Z_i^T A A^T Z_i, (S, S) float64, for A (C, R_C)."""
    m = None
    for z in batches:
        z = _upcast(z)
        w = appearances.T.to(z) @ z  # (B, R_C, S)
        g = torch.einsum("brs,brt->st", w, w).double()
        m = g if m is None else m + g
    return m


def part_scatters(batches: Batches, parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B = sum_i Y_i Y_i^T and D = sum_i Y_i (P^T P) Y_i^T, (C, C) float64 each, with Y_i = Z_i P (C, R_S), for
    P (S, R_S): one pass gives the A-step's N = 2B - D and the mixing step's statistics (:func:`solve_mixing`)."""
    b, d = _weighted_scatters(batches, parts, [None, parts.T @ parts])
    return b, (d + d.T) / 2


def appearance_scatter(batches: Batches, parts: torch.Tensor) -> torch.Tensor:
    """N = sum_i Z_i (2Q - Q^2) Z_i^T = sum_i Y_i (2I - P^T P) Y_i^T, (C, C) float64, for P (S, R_S): the A-step's
    statistic alone, one (C, B R_S) x (B R_S, C) product a batch where :func:`part_scatters` takes two (a fit
    without a mixing needs only 2B - D: its scatter pass at 8x8, N = 5,000, 0.075 s instead of 0.10 on 2 CPU cores)."""
    eye = torch.eye(parts.shape[1], dtype=parts.dtype, device=parts.device)
    (n,) = _weighted_scatters(batches, parts, [2 * eye - parts.T @ parts])
    return (n + n.T) / 2


def _weighted_scatters(batches: Batches, parts: torch.Tensor, weights: list) -> list[torch.Tensor]:
    """sum_i Y_i W Y_i^T, (C, C) float64, for each W (R_S, R_S) in ``weights`` (None: the identity), with
    Y_i = Z_i P (C, R_S): one pass, one product per batch and W. Not symmetrised (the callers do it once)."""
    sums: list = [None] * len(weights)
    for z in batches:
        z = _upcast(z)
        n, c, r = z.shape[0], z.shape[1], parts.shape[1]
        y = z @ parts.to(z)  # (B, C, R_S)
        yf = y.transpose(0, 1).reshape(c, n * r)
        for i, w in enumerate(weights):
            yw = yf if w is None else (y @ w.to(z)).transpose(0, 1).reshape(c, n * r)
            prod = (yw @ yf.T).double()
            sums[i] = prod if sums[i] is None else sums[i] + prod
    return sums


def solve_mixing(b: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The best appearance mixing W (R_C, R_C), symmetric positive semi-definite, for fixed A and P.

    With G = A W A^T in place of A A^T, the objective is sum_i ||Z_i||^2 - 2 tr(W B~) + tr(W^2 D~), with
    B~ = A^T B A and D~ = A^T D A (:func:`part_scatters`; pass them here, (R_C, R_C)). Its minimum over symmetric W
    solves the Lyapunov equation D~ W + W D~ = 2 B~, diagonal in D~'s eigenbasis. Negative eigenvalues (none seen in
    practice) are set to 0: G = A W A^T is then A' A'^T with A' = A W^(1/2), the form of the authors' code, whose A
    is not kept orthonormal."""
    b, d = ((b + b.T) / 2).cpu(), ((d + d.T) / 2).cpu()  # R_C x R_C: milliseconds on the host
    lam, v = torch.linalg.eigh(d)
    den = lam[:, None] + lam[None, :]
    tiny = 1e-12 * float(lam.abs().max()) + 1e-300
    # an appearance no part carries (a zero row of D~) has no say in the objective: its mixing is left at 0
    wt = torch.where(den > tiny, 2 * (v.T @ b @ v) / den.clamp_min(tiny), torch.zeros_like(den))
    return _spectral(v @ wt @ v.T, lambda ev: ev).to(b.dtype)


def psd_sqrt(w: torch.Tensor) -> torch.Tensor:
    """W^(1/2) of a symmetric positive semi-definite (R, R) matrix (negative rounding set to 0), in W's dtype."""
    return _spectral(w, torch.sqrt).to(w)


def _spectral(w: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """U fn(max(ev, 0)) U^T for the symmetric part of w = U diag(ev) U^T, float64 on the host."""
    w = w.double().cpu()
    ev, u = torch.linalg.eigh((w + w.T) / 2)
    return (u * fn(ev.clamp_min(0))) @ u.T


def mixing_error(w: torch.Tensor, b: torch.Tensor, d: torch.Tensor, total: float) -> float:
    """Relative error 1 - (2 tr(W B~) - tr(W^2 D~)) / sum_i ||Z_i||^2 (see :func:`solve_mixing`); W = I gives the
    orthonormal model's."""
    w, b, d = w.double().cpu(), b.cpu(), d.cpu()
    return 1.0 - float(2 * (w * b).sum() - ((w @ w) * d).sum()) / total


def direction_grams(batches: Batches, directions: torch.Tensor, rest: torch.Tensor | None = None) -> torch.Tensor:
    """H_r = sum_i Z_i^T u_r u_r^T Z_i, (R, S, S) float64, one Gram matrix of positions per column u_r of
    ``directions`` (C, R). With W = U diag(w) U^T and U = A^T ``directions``, the P-step's statistics are weighted
    sums of them (M = sum_r w_r H_r, M2 = sum_r w_r^2 H_r), so the mixing iterations need no further data pass.
    With ``rest`` (C, R') one more matrix, sum_i Z_i^T V V^T Z_i for V = ``rest``, is appended: (R + 1, S, S).
    Products in float32 over >= 512 samples at once (a short inner dimension halves a CPU's speed), only the blocks
    on and above the diagonal (:class:`_SymmetricGram`)."""
    gram = rest_gram = None
    pending: list[torch.Tensor] = []
    rows, r = 0, directions.shape[1]

    def flush() -> None:
        y = torch.cat(pending)  # (B, R + R', S)
        gram.add(y[:, :r].transpose(0, 1))  # (R, B, S)
        if rest_gram is not None:
            rest_gram.add(y[:, r:].reshape(-1, y.shape[2]))  # (B R', S): their sum

    both = directions if rest is None else torch.cat([directions, rest], 1)
    for z in batches:
        z = _upcast(z)
        pending.append(both.T.to(z) @ z)  # (B, R + R', S)
        rows += z.shape[0]
        if gram is None:
            gram = _SymmetricGram(z.shape[2], z.device)
            rest_gram = None if rest is None else _SymmetricGram(z.shape[2], z.device)
        if rows >= 512:
            flush()
            pending, rows = [], 0
    if pending:
        flush()
    h = gram.result()
    return h if rest_gram is None else torch.cat([h, rest_gram.result()[None]])


def mixing_matrices(rank_appearance: int, directions: int | None = None) -> int:
    """How many S x S matrices a mixing fit's extra pass keeps: one per direction refitted on its own, plus one for
    the others' sum (:func:`mixing_split`)."""
    return rank_appearance if directions is None or directions >= rank_appearance else directions + 1


def mixing_bytes(rank_appearance: int, s: int) -> int:
    """Peak bytes of a mixing fit's extra statistics: :func:`direction_grams`' R_C Gram matrices of S x S in float64,
    with their float32 partial sums or, at the end, the assembled copy (at most 16 R_C S^2), and the P-step's two
    weighted sums in float64 and float32 (24 S^2)."""
    return 16 * rank_appearance * s * s + 24 * s * s


def top_eigenvectors(sym: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``rank`` leading eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix,
    each vector's sign fixed so its largest-magnitude entry is positive (reproducible bases)."""
    # On the host: a C x C decomposition takes milliseconds there, while a GPU's first eigh sets up its solver library
    # (a noticeable share of a one-second fit), and the basis is then the same on every device.
    vals, vecs = torch.linalg.eigh(((sym + sym.T) / 2).cpu())
    vals, vecs = vals.flip(0)[:rank], vecs.flip(1)[:, :rank]
    idx = vecs.abs().argmax(0)
    signs = torch.sign(vecs[idx, torch.arange(rank)])
    signs[signs == 0] = 1
    return vals.to(sym.device), (vecs * signs).to(sym.device)


def largest_eigenvalue(m: torch.Tensor, n_iter: int = 30) -> float:
    """An estimate of the largest eigenvalue of a symmetric positive semi-definite (S, S) matrix by power iteration.

    It only sets the first trial step of :func:`solve_parts` (the line search corrects it), so a few matrix-vector
    products replace a full matrix 2-norm, an O(S^3) decomposition (about 30 s per image at S = 4096)."""
    return float(_largest_eigenvalues(m, n_iter))


def _largest_eigenvalues(m: torch.Tensor, n_iter: int = 30) -> torch.Tensor:
    """:func:`largest_eigenvalue` of each matrix of ``m`` (..., S, S), as a tensor (...,) on m's device."""
    v = torch.ones(*m.shape[:-1], 1, dtype=m.dtype, device=m.device) / math.sqrt(m.shape[-1])
    lam = torch.zeros(m.shape[:-2], dtype=m.dtype, device=m.device)
    for _ in range(n_iter):  # tensor arithmetic only: one host synchronisation at the end, not one per iteration
        w = m @ v
        lam = w.norm(dim=(-2, -1))
        v = w / lam[..., None, None].clamp_min(torch.finfo(m.dtype).tiny)  # M = 0: v and lam stay 0
    return lam


class PsdFactor:
    """M = L L^T for L (S, r), r well below S: the P-step's statistic where it is of low rank.

    M = sum_i Z_i^T A A^T Z_i / total has rank at most N R_C: low for few samples, and for one sample (refinement's
    M_i, rank R_C) whenever R_C is well below S. Every P-step iteration multiplies M by the parts (:func:`_times`),
    which at S = 4096 reads all of M (64 MB in float32, memory-bound on a CPU); L (L^T X) reads 2 r S numbers
    instead. Stands in for the (S, S) tensor wherever the P-step only multiplies by it.

    ``l`` may carry leading batch dimensions, (K, S, r): K problems' statistics (one per image), as an (K, S, S)
    tensor would. With ``l2``, the stacked [M; M2] (.., 2S, S) of a fit with an appearance mixing (M2 = L2 L2^T),
    as :func:`solve_parts` stacks two dense statistics."""

    def __init__(self, l: torch.Tensor, l2: torch.Tensor | None = None) -> None:
        self.l, self.l2 = l, l2
        s = l.shape[-2]
        self.shape = torch.Size((*l.shape[:-2], s if l2 is None else 2 * s, s))
        self.dtype, self.device, self.is_cuda = l.dtype, l.device, l.is_cuda

    def dim(self) -> int:
        return self.l.dim()

    def float(self) -> "PsdFactor":
        return PsdFactor(self.l.float(), None if self.l2 is None else self.l2.float())

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.l @ (self.l.transpose(-2, -1) @ x)
        return y if self.l2 is None else torch.cat([y, self.l2 @ (self.l2.transpose(-2, -1) @ x)], dim=-2)

    def stacked(self, m2: "PsdFactor") -> "PsdFactor":
        """[M; M2] for M2 given as a factor of its own (its rank may differ)."""
        return PsdFactor(self.l, m2.l.to(self.l))

    def dense(self) -> torch.Tensor:
        m = self.l @ self.l.transpose(-2, -1)
        return m if self.l2 is None else torch.cat([m, self.l2 @ self.l2.transpose(-2, -1)], dim=-2)

    def madds(self) -> int:
        """Multiply-adds of a product with one column (a dense matrix's numel()): 2 r S for each factor and problem."""
        ranks = self.l.shape[-1] + (0 if self.l2 is None else self.l2.shape[-1])
        return 2 * ranks * self.l.shape[-2] * math.prod(self.l.shape[:-2])

    def worth_it(self) -> bool:
        return factor_pays(self.l.shape[-1], self.l.shape[-2])


def factor_pays(rank: int, s: int) -> bool:
    """A rank-r factor is cheaper than the dense (S, S) matrix: 2 r S against S^2 numbers read per product, with a
    margin (r <= S / 4)."""
    return 4 * rank <= s


def low_rank_statistic(m: torch.Tensor, rank: int, random_state: int = 0) -> torch.Tensor | PsdFactor:
    """M (S, S) symmetric positive semi-definite of rank at most ``rank`` as a :class:`PsdFactor` where that makes
    the P-step's products cheaper (rank + 8 <= S / 4), else M itself.

    A randomized range finder (Halko, Martinsson and Tropp, 2011): Q = orth(M G) for a Gaussian G (S, rank + 8), then
    L = Q U diag(sqrt(ev)) from the eigendecomposition of Q^T M Q (rank + 8 square). Exact up to rounding when M's
    rank is at most ``rank``: M's float32-summed entries leave a remainder about 1e-7 of its norm, the size of the
    P-step's own float32 rounding. About 2 S^2 (rank + 8) multiply-adds: 1.5 s at S = 4096, rank 900 on 2 CPU cores,
    against about 6 ms saved on each of up to 1,000 iterations."""
    s = m.shape[0]
    k = rank + 8
    if not factor_pays(k, s):
        return m
    gen = torch.Generator().manual_seed(random_state)
    g = torch.randn(s, k, generator=gen, dtype=torch.float64).to(m)
    q, _ = torch.linalg.qr(m @ g)
    b = q.T @ (m @ q)
    ev, u = torch.linalg.eigh(((b + b.T) / 2).cpu())  # (rank + 8) square: on the host, as in top_eigenvectors
    return PsdFactor((q @ u.to(q)) * ev.clamp_min(0).sqrt().to(q))


def parts_objective(m: torch.Tensor, p: torch.Tensor, m2: torch.Tensor | None = None) -> torch.Tensor:
    """f(P) = -2 tr(P^T M P) + tr(P^T M2 P P^T P), M2 = M unless given; the objective is sum_i||Z_i||^2 + f(P) for
    fixed A (and mixing W: M = sum_i Z_i^T A W A^T Z_i, M2 = sum_i Z_i^T A W^2 A^T Z_i, see :func:`direction_grams`)."""
    mp = m @ p
    m2p = mp if m2 is None else m2 @ p
    return -2 * (p * mp).sum() + ((p.T @ m2p) * (p.T @ p)).sum()


_TERMS = torch.tensor([[1.0 if i + j == n else 0.0 for n in range(5)] for i in range(3) for j in range(3)])
# (9, 5): the product of two quadratics in t, u_i t^i and v_j t^j, is sum_n (sum_{i+j=n} u_i v_j) t^n
_GRID = 129  # trial points of the exact line search on [0, 1], the best then polished by Newton steps


class _LineConstants(NamedTuple):
    """The line search's fixed matrices (:func:`_constants`)."""

    terms: torch.Tensor  # (9, 5): :data:`_TERMS`
    quad: torch.Tensor  # (3, 5): (tr b0, tr b1, tr b2) -> the coefficients of -2 tr(P^T M P)
    grid: torch.Tensor  # (GRID,): the trial points
    powers: torch.Tensor  # (5, GRID): their powers 0..4
    deriv: torch.Tensor  # (5, 7): coefficients of f -> [those of f' (4) | those of f'' (3)]


_CONSTANTS: dict[tuple[torch.device, torch.dtype], _LineConstants] = {}


def _constants(device: torch.device, dtype: torch.dtype) -> _LineConstants:
    """The line search's fixed matrices on ``device``, made once: a host-to-device copy inside a captured CUDA graph
    is not allowed, and a new tensor every iteration would cost as much as the arithmetic at small S."""
    key = (device, dtype)
    if key not in _CONSTANTS:
        t = torch.linspace(0, 1, _GRID, dtype=torch.float64)
        powers = t[None, :] ** torch.arange(5, dtype=torch.float64)[:, None]
        # c (K, 5) @ deriv = [f' coefficients (4) | f'' coefficients (3)]
        deriv = torch.zeros(5, 7, dtype=torch.float64)
        for n in range(1, 5):
            deriv[n, n - 1] = n
        for n in range(2, 5):
            deriv[n, 4 + n - 2] = n * (n - 1)
        # -2 tr(P^T M P) = -2 (tr b0 + 2 t tr b1 + t^2 tr b2), from the traces (tr b0, tr b1, tr b2)
        quad = torch.diag(torch.tensor([-2.0, -4.0, -2.0], dtype=torch.float64))
        quad = torch.cat([quad, torch.zeros(3, 2, dtype=torch.float64)], 1)
        _CONSTANTS[key] = _LineConstants(*(x.to(device=device, dtype=dtype) for x in (_TERMS, quad, t, powers, deriv)))
    return _CONSTANTS[key]


def _line_quartic(x: torch.Tensor, d: torch.Tensor, y: torch.Tensor, yd: torch.Tensor) -> torch.Tensor:
    """Coefficients (K, 5), constant term first, of f(x + t d) (see :func:`parts_objective`), exact because f is a
    quartic: from x, d (K, S, R) and their products with the statistics, y = [M x | M2 x] and yd = [M d | M2 d]
    (K, S, q R; q = 1 where M2 = M). All the R x R inner products come from one batched product in float64.

    Along the line P^T P = g0 + t gs + t^2 g2 and P^T M2 P = n0 + t ns + t^2 n2, so their inner product is a quartic
    whose coefficients are sums of the 3 x 3 inner products of those terms (:data:`_TERMS`); -2 tr(P^T M P) adds a
    quadratic."""
    k, _, r = x.shape
    q = y.shape[-1] // r
    u = torch.cat([x, d, y, yd], -1).double()  # (K, S, 2R + 2qR)
    prod = u[..., :2 * r].transpose(1, 2) @ u  # (K, 2R, 2R + 2qR): [x d]^T [x d y yd]
    g0, g1, g2 = prod[:, :r, :r], prod[:, :r, r:2 * r], prod[:, r:, r:2 * r]
    y0, yd0 = 2 * r, 2 * r + q * r  # first columns of [x d]^T y and [x d]^T yd
    b0, b1, b2 = prod[:, :r, y0:y0 + r], prod[:, :r, yd0:yd0 + r], prod[:, r:, yd0:yd0 + r]  # M's terms
    n0, n1, n2 = (b0, b1, b2) if q == 1 else (prod[:, :r, y0 + r:yd0], prod[:, :r, yd0 + r:], prod[:, r:, yd0 + r:])
    nt = torch.stack([n0, n1 + n1.transpose(1, 2), n2], 1)  # (K, 3, R, R)
    gt = torch.stack([g0, g1 + g1.transpose(1, 2), g2], 1)
    quart = (nt[:, :, None] * gt[:, None]).sum((-2, -1)).reshape(k, 9)  # <n_i, g_j>
    # tr(P^T M P) along the line: tr(b0) + 2 t tr(b1) + t^2 tr(b2), M symmetric
    quad = torch.stack([b0, b1, b2], 1).diagonal(dim1=-2, dim2=-1).sum(-1)  # (K, 3)
    const = _constants(x.device, torch.float64)
    return torch.addmm(quad @ const.quad, quart, const.terms)


def _line_minimum(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin and min over t in [0, 1] of the quartics with coefficients c (K, 5), (K,) each.

    A grid of :data:`_GRID` points (one product with their powers) brackets the global minimum, two Newton steps
    on f' polish it; t = 0 is always a candidate, so the value never exceeds f(0). Tensor operations only: no host
    synchronisation (cubic roots via torch.linalg would synchronise on CUDA), and few of them: this runs every
    iteration of the P-step, where the number of small operations (not arithmetic) sets the pace at small S, on a
    CPU and on a GPU."""
    const = _constants(c.device, c.dtype)
    vals = c @ const.powers  # (K, GRID)
    v_best, best = vals.min(1)
    t_best = const.grid[best]
    dc = c @ const.deriv  # (K, 7): f' = dc0 + dc1 t + dc2 t^2 + dc3 t^3, f'' = dc4 + dc5 t + dc6 t^2
    a0, a1, a2, a3, e0, e1, e2 = dc.unbind(1)
    tn = t_best
    for _ in range(2):  # from within 1 / (2 (GRID - 1)) of the minimum: f' to rounding
        d1 = torch.addcmul(a0, tn, torch.addcmul(a1, tn, torch.addcmul(a2, tn, a3)))
        d2 = torch.addcmul(e0, tn, torch.addcmul(e1, tn, e2))
        tn = torch.where(d2 > 0, tn - d1 / d2.clamp_min(1e-300), tn).clamp(0, 1)
    c0, c1, c2, c3, c4 = c.unbind(1)
    vn = torch.addcmul(c0, tn, torch.addcmul(c1, tn, torch.addcmul(c2, tn, torch.addcmul(c3, tn, c4))))
    better = vn < v_best
    return torch.where(better, tn, t_best), torch.where(better, vn, v_best)


def _parts_gradient(p: torch.Tensor, mp: torch.Tensor, m2p: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient of f at p (..., S, R), given mp = M p (and m2p = M2 p where M2 is not M)."""
    pt = p.transpose(-2, -1)
    m2p = mp if m2p is None else m2p
    return (p @ (pt @ m2p)).add_(m2p @ (pt @ p)).mul_(2).sub_(mp, alpha=4)  # in place: fewer small operations


def solve_parts(m: torch.Tensor | PsdFactor, p: torch.Tensor, max_iter: int = 1000, tol: float = 1e-7,
                support: torch.Tensor | None = None, check_every: int = 10,
                progress: bool | None = False, m2: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Minimise f(P) (see :func:`parts_objective`) over P >= 0, from one start or several at once.

    Spectral projected gradient (Birgin, Martinez and Raydan, 2000): a Barzilai-Borwein trial step, projected,
    gives a feasible direction d; f is a quartic in P, so f(P + t d) is an exact quartic in t whose minimum on
    [0, 1] is found from R x R products. One S x S product per iteration (M d; M P is updated from it), no
    learning rate, and the objective never increases. Starts are batched: K starts cost one (S, K R) product.

    Parameters
    ----------
    m : torch.Tensor
        (S, S) symmetric positive semi-definite statistic; its dtype is the products' (float32 halves their cost;
        the line search's R x R sums are float64 either way). Or (K, S, S), one for each of K problems solved at
        once (refinement's images: one batched product per iteration instead of K small ones). Or a
        :class:`PsdFactor` L of an (S, S) one (few samples: each product costs 2 r S instead of S^2), or of K of them
        (L (K, S, r): refinement's images where R_C <= S / 4).
    p : torch.Tensor
        (S, R_S), or (K, S, R_S) for K starts (or K problems), non-negative.
    max_iter : int
        At most this many iterations.
    tol : float
        Stop when f decreases by less than ``tol`` relative to |f| per iteration, on average over the last
        ``check_every`` iterations, for every start.
    support : torch.Tensor, optional
        (S, R_S) bool; entries outside it are held at 0 (the feasible set stays convex, so the projection
        is exact: clamp at 0, then zero outside the mask).
    check_every : int
        Iterations between convergence checks (each check synchronises a GPU with the host).
    progress : bool or None
        A progress bar over the iterations (None: when stderr is a terminal).
    m2 : torch.Tensor or PsdFactor, optional
        The quartic term's statistic, shaped as ``m`` (a factor where ``m`` is one), where it differs from it (a fit
        with an appearance mixing W); both are multiplied in one product.

    Returns
    -------
    (torch.Tensor, int)
        P, the shape of ``p`` in float64, and the iterations run.
    """
    single = p.dim() == 2
    x = (p[None] if single else p).to(m.dtype)
    mask = None if support is None else support.to(x.dtype)
    if mask is not None:
        x = x * mask
    lam_max = _largest_eigenvalues(m) if m2 is None else torch.maximum(_largest_eigenvalues(m), _largest_eigenvalues(m2))
    # the first trial step, per problem: (K, 1, 1) for K matrices, else one for all starts
    lam0 = (1.0 / (4.0 * lam_max.double() + 1e-30)).reshape(-1, 1, 1).expand(x.shape[0], 1, 1)
    bounds = (lam0 * 1e-6, lam0 * 1e6)  # the Barzilai-Borwein step is kept in this range
    mm = m if m2 is None else _stack(m, m2)  # (.., S or 2S, S): both products in one
    madds = mm.madds() if isinstance(mm, PsdFactor) else mm.numel()  # a product with one column, every problem's
    args = (mm, x, lam0, bounds, mask, max_iter, tol, check_every, progress)
    if _on_one_thread(madds * x.shape[-1] * (1 if mm.dim() == 3 else x.shape[0]), x.numel(), m.device):
        x, it = _on_worker(_iterate, *args)
    else:
        x, it = _iterate(*args)
    return (x[0] if single else x), it


def _stack(m: torch.Tensor | PsdFactor, m2: torch.Tensor | PsdFactor) -> torch.Tensor | PsdFactor:
    """[M; M2] (.., 2S, S), both statistics dense or both factors."""
    if isinstance(m, PsdFactor) != isinstance(m2, PsdFactor):
        raise TypeError("M and M2 must both be dense or both be factors")
    return m.stacked(m2) if isinstance(m, PsdFactor) else torch.cat([m, m2.to(m.dtype)], dim=-2)


SMALL_PRODUCT = 1 << 24  # multiply-adds per P-step iteration below which a CPU runs it on one thread ...
SMALL_ITERATE = 1 << 15  # ... if its parts (every start or problem) have fewer entries than this


def _on_one_thread(madds: int, entries: int, device: torch.device) -> bool:
    """Whether a P-step of ``madds`` multiply-adds an iteration, on parts of ``entries`` numbers in all, runs on
    :func:`_one_thread_worker`: on a CPU, where both are small and the caller has more than one thread. Each
    iteration is then a hundred operations of microseconds, and waking the other threads for each costs more than
    they save, the more so with the short OpenMP spin panda sets (panda/__init__.py): at S = 256, 0.55 ms an
    iteration on one thread against 0.7-0.9 ms on two (S = 1,024: even; S = 4,096: two threads 1.7x faster). The
    hundred operations run over the parts, so many parts make them worth two threads even where the product is
    small: 64 images' refinement at 8 x 8 (49,152 entries in float64) takes 1.1 ms an iteration on two threads
    against 2.0 on one, 10 images' at 64 x 64 on their factors 9.5 against 13.7."""
    return (device.type == "cpu" and madds < SMALL_PRODUCT and entries < SMALL_ITERATE
            and torch.get_num_threads() > 1)


def _on_worker(fn: Callable, *args):
    """fn(*args) on :func:`_one_thread_worker`, under the caller's autograd modes (no_grad, inference_mode), which
    are per thread: its result is what the caller's thread would have made."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def call():
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(*args)
    return _one_thread_worker().submit(call).result()


_worker: tuple[int, ThreadPoolExecutor] | None = None  # (the process it was made in, the worker)
_worker_lock = threading.Lock()


def _one_thread_worker() -> ThreadPoolExecutor:
    """panda's own thread for small CPU P-steps, its intra-op thread count 1.

    Why a thread of its own: with OpenMP (torch's CPU builds) a thread's count is its own once it has run torch
    work, but ``torch.set_num_threads`` also sets the count that threads started later take. Narrowing the caller
    for the P-step's duration would leave any thread started meanwhile (a server's worker, a data loader's) on one
    thread for good. The worker is made once per process; the default is 1 only while it is made. Where torch's
    thread pool is process-wide (builds without OpenMP) the worker ends with the caller's count: correct, only not
    faster. Callers in several threads queue on it, and a P-step under way finishes even if its caller is
    interrupted (it is small: under SMALL_PRODUCT multiply-adds an iteration).
    """
    global _worker
    with _worker_lock:
        if _worker is None or _worker[0] != os.getpid():  # a forked child has the object but not its thread
            n = torch.get_num_threads()
            pool = ThreadPoolExecutor(1, thread_name_prefix="panda-p-step")
            # the worker's first torch call takes the process default; set_num_threads(1) then makes 1 its own
            pool.submit(lambda: (torch.get_num_threads(), torch.set_num_threads(1))).result()
            torch.set_num_threads(n)  # the default back for every thread started from now on; the worker keeps 1
            _worker = (os.getpid(), pool)
        return _worker[1]


def _iterate(mm: torch.Tensor, x: torch.Tensor, lam0: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor],
             mask: torch.Tensor | None, max_iter: int, tol: float, check_every: int,
             progress: bool | None) -> tuple[torch.Tensor, int]:
    """:func:`solve_parts`' iterations on the stacked statistic ``mm`` from x (K, S, R): (x in float64, iterations)."""
    state = _SpgState(x, _times(mm, x), lam0.clone())
    run = _graphed_steps(mm, state, mask, bounds, check_every) if mm.is_cuda else None
    f_prev, it = None, 0
    bar = progress_bar(total=max_iter, desc="parts (P-step)", unit="it", progress=progress)
    while it < max_iter:
        block = min(check_every, max_iter - it)
        if run is not None and block == check_every:
            f = run()
        else:
            for _ in range(block):
                f = _spg_step(mm, state, mask, bounds)
        it += block
        bar.update(block)
        # M x follows the steps; recomputed now and then so float32 rounding does not accumulate
        if it % (5 * check_every) == 0:
            state.refresh(_times(mm, state.x))
        if f_prev is not None and bool(((f_prev - f) <= block * tol * f.abs()).all()):
            break
        f_prev = f.clone()
    bar.close()
    return state.x.double(), it


class _SpgState:
    """The iterate of :func:`solve_parts`, updated in place (so a captured CUDA graph can replay on it):
    x (K, S, R), y = [M x | M2 x] (K, S, q R; q = 1 where M2 = M), the gradient at x and the Barzilai-Borwein step
    (K, 1, 1)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> None:
        self.x, self.y, self.lam = x.clone(), y.clone(), lam
        self.g = _stacked_gradient(self.x, self.y)

    def refresh(self, y: torch.Tensor) -> None:
        """Products recomputed from x (in place)."""
        self.y.copy_(y)
        self.g.copy_(_stacked_gradient(self.x, self.y))


def _stacked_gradient(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`_parts_gradient` from y = [M x | M2 x] (K, S, q R)."""
    r = x.shape[-1]
    return _parts_gradient(x, y[..., :r], y[..., -r:] if y.shape[-1] > r else None)


def _times(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[M x | M2 x] for every start, (K, S, q R) (q = 1 where ``m`` is M alone, (S, S); ``m`` (2S, S) stacks M over
    M2), as one (q S, S) x (S, K R) product: the statistic is read from memory once per iteration instead of once per
    start, which sets the pace at large S (2.5x faster at S = 4096, K = 4 on a CPU). With one matrix per problem,
    ``m`` (K, q S, S), one batched product."""
    k, s, r = x.shape
    q = m.shape[-2] // s
    if m.dim() == 3:
        y = m @ x  # (K, q S, R): one batched product
        return y if q == 1 else y.reshape(k, q, s, r).permute(0, 2, 1, 3).reshape(k, s, q * r)
    y = m @ x.transpose(0, 1).reshape(s, k * r)  # (q S, K R)
    return y.reshape(q, s, k, r).permute(2, 1, 0, 3).reshape(k, s, q * r)


def _spg_step(m: torch.Tensor, st: _SpgState, mask: torch.Tensor | None,
              bounds: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One spectral projected-gradient step with exact line search, in place; returns f after it, (K,)."""
    x = st.x
    d = torch.addcmul(x, st.lam.to(x.dtype), st.g, value=-1).clamp_min_(0)
    if mask is not None:
        d.mul_(mask)
    d.sub_(x)
    yd = _times(m, d)
    t, f = _line_minimum(_line_quartic(x, d, st.y, yd))
    tx = t.to(x.dtype)[:, None, None]
    x.addcmul_(tx, d)
    st.y.addcmul_(tx, yd)
    g_new = _stacked_gradient(x, st.y)
    # Barzilai-Borwein step s's / s'y for the step s = t d and y = g_new - g, where the curvature is positive, else a
    # longer step; kept in a safe range
    dd = (d * d).sum((1, 2), keepdim=True).double()
    dy = (d * g_new.sub_(st.g)).sum((1, 2), keepdim=True).double()  # g_new now holds y
    t = t[:, None, None]
    st.lam.copy_(torch.where(t * dy > 0, t * dd / dy.clamp_min(1e-300), 2 * st.lam).clamp(*bounds))
    st.g.add_(g_new)  # g + y = the new gradient
    return f


def _graphed_steps(m: torch.Tensor, st: _SpgState, mask: torch.Tensor | None, bounds: tuple[torch.Tensor, torch.Tensor],
                   steps: int) -> Callable[[], torch.Tensor] | None:
    """``steps`` iterations captured as one CUDA graph: on a GPU each iteration is a few dozen small kernels, whose
    launches (not arithmetic) would set the pace. None where capture fails: the caller then runs them eagerly, and a
    warning says so (the result is the same, only slower, which a benchmark should not take for the graphs' speed)."""
    saved = {name: getattr(st, name).clone() for name in ("x", "y", "g", "lam")}
    try:
        side = torch.cuda.Stream(m.device)
        side.wait_stream(torch.cuda.current_stream(m.device))
        with torch.cuda.stream(side):  # warm-up outside the graph, as capture requires
            for _ in range(2):
                _spg_step(m, st, mask, bounds)
        torch.cuda.current_stream(m.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(steps):
                f = _spg_step(m, st, mask, bounds)
    except RuntimeError as exc:
        warnings.warn(f"the P-step's CUDA-graph capture failed ({exc}); its iterations run eagerly: same result, "
                      "slower.", RuntimeWarning, stacklevel=2)
        graph = None
    for name, src in saved.items():  # undo warm-up and capture: the iterations start where the caller left them
        getattr(st, name).copy_(src)
    if graph is None:
        return None

    def run() -> torch.Tensor:
        graph.replay()
        return f
    return run


def init_parts(m: torch.Tensor, rank: int, random_state: int = 0) -> torch.Tensor:
    """Uniform random non-negative P (S, rank), scaled to minimise f along its ray:
    f(sP) = -2 s^2 a + s^4 b is smallest at s^2 = a / b."""
    gen = torch.Generator().manual_seed(random_state)
    p = torch.rand(m.shape[0], rank, generator=gen, dtype=torch.float64).to(m.device)
    a = (p * (m @ p)).sum()
    b = ((p.T @ (m @ p)) * (p.T @ p)).sum()
    return p * torch.sqrt(a / b)


COARSE_POSITIONS = 1024  # above this many positions the first P-step starts on a grid halved in each direction


def restrict(m: torch.Tensor | PsdFactor, grid: tuple[int, int]) -> torch.Tensor | PsdFactor:
    """M restricted to parts constant on 2 x 2 blocks: V^T M V, (S/4, S/4), for M (S, S) on an (H, W) grid (H, W even),
    where V (S, S/4) has orthonormal columns (1/2 on each block's four positions). Since f(V P) = f(P) with this
    matrix (:func:`parts_objective` only sees M P and P^T P, and V^T V = I), a coarse solution is a feasible fine
    point with the same objective. For a :class:`PsdFactor` L: V^T L (block sums / 2), kept as a factor while that is
    cheaper, else the dense coarse matrix."""
    h, w = grid
    if isinstance(m, PsdFactor):
        coarse = PsdFactor((m.l.reshape(h // 2, 2, w // 2, 2, -1).sum((1, 3)) / 2).reshape(h * w // 4, -1))
        return coarse if coarse.worth_it() else coarse.dense()
    return (m.reshape(h // 2, 2, w // 2, 2, h // 2, 2, w // 2, 2).sum((1, 3, 5, 7)) / 4).reshape(h * w // 4, h * w // 4)


def prolong(p: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """V P: coarse parts (S/4, R) on the (H/2, W/2) grid -> (S, R) on the (H, W) grid (see :func:`restrict`)."""
    h, w = grid
    r = p.shape[-1]
    return (p.reshape(h // 2, 1, w // 2, 1, r).expand(h // 2, 2, w // 2, 2, r) / 2).reshape(h * w, r)


RESEED_WIDTH = 4  # candidates per re-seeding round: the weakest parts, each re-seeded at a place of its own
RESEED_MIN_GAIN = 1e-3  # a round that lowers the error by less than this (relative) is the last
RESEED_SCREEN = 200  # iterations after which a round's candidates are compared (100 misjudged some)


def part_gains(m: torch.Tensor | PsdFactor, p: torch.Tensor) -> torch.Tensor:
    """How much each part lowers f (:func:`parts_objective`): f(P without column k) - f(P), (R,).

    With B = M P, H = P^T B and G = P^T P, f = -2 tr H + <H, G>; dropping column k takes H_kk from the trace and
    row and column k from both matrices, so all R gains cost one product: 2 H_kk - 2 (H o G)_k. + H_kk G_kk."""
    return _gains(p.T @ (m @ p), p.T @ p)


def _gains(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """:func:`part_gains` from H = P^T M P and G = P^T P, both (R, R)."""
    return 2 * h.diagonal() - 2 * (h * g).sum(1) + h.diagonal() * g.diagonal()


def _diagonal(m: torch.Tensor | PsdFactor) -> torch.Tensor:
    return (m.l * m.l).sum(-1) if isinstance(m, PsdFactor) else m.diagonal()


def _column(m: torch.Tensor | PsdFactor, s: int) -> torch.Tensor:
    return m.l @ m.l[s] if isinstance(m, PsdFactor) else m[:, s]


def reseed_candidates(m: torch.Tensor | PsdFactor, p: torch.Tensor, width: int = RESEED_WIDTH) -> torch.Tensor:
    """P with one weak part moved to where the fit is worst, for each of the ``width`` weakest parts: (K, S, R).

    A local minimum of f often spends a part on little (a sliver, or a second copy of a region) while some place is
    badly reconstructed. The residual R = (I - P P^T) M (I - P P^T) is sum_i of what Z_i P P^T misses, position by
    position: its diagonal says how much is missed at each position, and its column at the worst one, clipped at 0,
    is the positions that co-vary with it there, a part-shaped seed (as farthest-point seeding puts a k-means centre
    at the point worst served). The k-th candidate replaces the k-th weakest part (:func:`part_gains`) with such a seed; the places
    it covers are discounted, so the next candidate seeds somewhere else. Costs O(S R) beyond one product M P.
    No candidates (K = 0) where nothing is missed."""
    s, r = p.shape
    b = m @ p
    h = p.T @ b
    diag = _diagonal(m)
    missed = diag - 2 * (p * b).sum(1) + ((p @ h) * p).sum(1)  # (S,): diag(R)
    floor = 1e-9 * float(diag.max())  # below it, what is missed is rounding
    norms = p.norm(dim=0)
    scale = norms.mean()
    out = []
    for k in _gains(h, p.T @ p).argsort()[:min(width, r)].tolist():  # H from the product above, not a second one
        at = int(missed.argmax())
        seed = (_column(m, at) - p @ b[at] - b @ p[at] + p @ (h @ p[at])).clamp_min(0)  # R's column, >= 0
        if missed[at] <= floor or seed.max() <= floor:
            break
        missed = missed * (1 - seed / seed.max())  # seed[at] = missed[at]: its own place is 0 for the next
        cand = p.clone()
        cand[:, k] = seed * (float(norms[k] if norms[k] > 0 else scale) / float(seed.norm()))
        out.append(cand)
    return torch.stack(out) if out else p.new_zeros((0, s, r))


def reseed_parts(m: torch.Tensor | PsdFactor, p: torch.Tensor, rounds: int, tol: float = 1e-4,
                 progress: bool | None = False) -> tuple[torch.Tensor, int]:
    """Escape the local minimum P (S, R) of the P-step: up to ``rounds`` rounds of :func:`reseed_candidates`,
    each solved from its candidates at once (one batched product per iteration, as random starts are) for
    :data:`RESEED_SCREEN` iterations, the one then lowest solved to convergence and kept where it lowers f. The
    rounds stop at one that lowers the relative error 1 + f (M scaled by sum_i ||Z_i||^2) by less than ``tol`` or
    :data:`RESEED_MIN_GAIN` of it, whichever is larger.

    On the DCGANs' 8 x 8 and 16 x 16 layers (5,000 samples) 4 random starts and up to 8 rounds reach a training error
    0.05-0.4 points lower than 4 starts alone at R_S = 24 and 40, and a held-out error at or below that of 16 starts
    on 7 of those 8 fits, in at most their time; at R_S = 12 there is little to gain (benchmarks/reseed.md).

    Returns
    -------
    (torch.Tensor, int)
        The parts, (S, R) float64, and the rounds that lowered f.
    """
    best = start = float(parts_objective(m, p))
    kept = 0
    mf = m.float()
    for _ in range(rounds):
        cands = reseed_candidates(m, p)
        if not len(cands):
            break
        # the candidates race for RESEED_SCREEN iterations and only the leader runs on to convergence: the same
        # choices as running all four to the end on the DCGANs' layers (errors within 0.0005), in half the time
        sols, _ = solve_parts(mf, cands, max_iter=RESEED_SCREEN, progress=progress)
        lead = min(sols, key=lambda c: float(parts_objective(m, c)))
        cand, _ = solve_parts(mf, lead, progress=progress)
        obj = float(parts_objective(m, cand))
        if obj >= best:
            break
        gain = (best - obj) / abs(1 + best)
        log.info("re-seeding round %d: error %.4f -> %.4f", kept + 1, 1 + best, 1 + obj)
        p, best, kept = cand, obj, kept + 1
        if gain <= max(tol, RESEED_MIN_GAIN):  # kept, but another round would cost as much for as little
            break
    log.info("re-seeding: %d round(s) lowered the P-step's error, %.4f -> %.4f", kept, 1 + start, 1 + best)
    return p, kept


def first_parts(m: torch.Tensor | PsdFactor, rank: int, n_init: int = 4, random_state: int = 0,
                grid: tuple[int, int] | None = None, progress: bool | None = False, reseed: int = 0,
                tol: float = 1e-4) -> torch.Tensor:
    """The first P-step: the best of ``n_init`` random starts, then up to ``reseed`` rounds of
    :func:`reseed_parts`, (S, rank) float64.

    Up to :data:`COARSE_POSITIONS` positions the starts run on M itself. On a larger grid (64 x 64: each iteration reads
    all of M, 64 MB in float32, and about 1,000 are needed) the starts run on the grid halved in each direction
    (:func:`restrict`, recursively), and only the best one is carried up and polished: at a DCGAN's 64 x 64 layer this
    reached a lower objective in a third of the time of 500 full-size iterations from 4 starts. The best start is
    first run to convergence on the coarse grid (up to 1,000 more iterations there), since the starts stop after
    1,000: on few samples they stop short of it, and the polish then finished the coarse problem's work at
    four times the cost an iteration (dcgan-celeba convTr5, 600 samples: 1,000 full-size iterations, 4.8 s; now
    1,000 more coarse ones and 190 full-size ones, 1.8 s, to a lower objective).

    Parameters
    ----------
    m : torch.Tensor or PsdFactor
        (S, S) symmetric positive semi-definite statistic (float64), or its factor (:func:`low_rank_statistic`).
    rank : int
        R_S.
    n_init : int
        Random starts (seeds random_state, random_state + 1, ...).
    random_state : int
        Seed of the first start.
    grid : (int, int), optional
        The layer's (H, W), H * W = S; without it (or with an odd side) no coarse level is used.
    progress : bool or None
        Progress bars over the iterations.
    reseed : int
        Rounds of re-seeding the weakest parts after the starts (:func:`reseed_parts`); on a coarse grid they run
        there, with the starts.
    tol : float
        Re-seeding stops after a round that lowers the relative error by less than ``tol`` of it (or 0.1%).
    """
    if grid is not None and m.shape[0] > COARSE_POSITIONS and grid[0] % 2 == 0 and grid[1] % 2 == 0 \
            and rank <= m.shape[0] // 4:
        m_coarse = restrict(m, grid)
        coarse = first_parts(m_coarse, rank, n_init, random_state, (grid[0] // 2, grid[1] // 2), progress, reseed,
                             tol)
        coarse, _ = solve_parts(m_coarse.float(), coarse, progress=progress)  # the leader, to convergence
        p, _ = solve_parts(m.float(), prolong(coarse, grid), progress=progress)
        return p
    # S x S products in float32 (half the memory traffic; the line search sums in float64), all starts batched
    starts, _ = solve_parts(m.float(), torch.stack([init_parts(m, rank, random_state + i) for i in range(n_init)]),
                            progress=progress)
    p = min(starts, key=lambda cand: float(parts_objective(m, cand)))
    return reseed_parts(m, p, reseed, tol, progress)[0] if reseed else p


@dataclass
class FitResult:
    """What :func:`panda_factorise` returns.

    Attributes
    ----------
    appearances : torch.Tensor
        A, (C, R_C), orthonormal columns, ordered by eigenvalue of N.
    parts : torch.Tensor
        P, (S, R_S), >= 0.
    errors : list of float
        Relative training error sum||Z - A A^T Z P P^T||^2 / sum||Z||^2 after each outer iteration.
    n_passes : int
        Passes over the data (each re-generates it when it is not kept in memory).
    stats : DataStats
        The first pass's statistics.
    times : list of float
        Seconds since the start at each entry of ``errors``.
    mixing : torch.Tensor or None
        W, (R_C, R_C) symmetric positive semi-definite, when fitted with ``mixing=True``: the reconstruction is
        A W A^T Z P P^T.
    """

    appearances: torch.Tensor
    parts: torch.Tensor
    errors: list[float]
    n_passes: int
    stats: DataStats
    times: list[float] = field(default_factory=list)
    mixing: torch.Tensor | None = None


def panda_factorise(
    batches: Batches,
    rank_appearance: int,
    rank_parts: int,
    n_iter_max: int = 30,
    tol: float = 1e-4,
    random_state: int = 0,
    callback: Callable[[int, float], None] | None = None,
    stats: DataStats | None = None,
    n_init: int = 4,
    grid: tuple[int, int] | None = None,
    progress: bool | None = False,
    mixing: bool = False,
    mixing_directions: int | None = None,
    reseed: int = 0,
) -> FitResult:
    """Alternating minimisation of the PandA objective.

    Parameters
    ----------
    batches : iterable of torch.Tensor
        Re-iterable of (B, C, S) feature maps; every iteration must see the same samples.
    rank_appearance : int
        R_C, 1 <= R_C <= C.
    rank_parts : int
        R_S, 1 <= R_S <= S.
    n_iter_max : int
        At most this many outer (P-step, A-step) iterations.
    tol : float
        Stop when the relative training error falls by less than ``tol`` (relative) in an iteration.
    random_state : int
        Seed of the random non-negative starts of P.
    callback : callable, optional
        Called as ``callback(iteration, relative_error)`` after each outer iteration.
    stats : DataStats, optional
        The first pass's statistics, if already computed.
    n_init : int
        The first P-step runs from this many random starts (seeds random_state, random_state + 1, ...) and
        keeps the best; restarts are cheap because the P-step works on an S x S matrix only.
    grid : (int, int), optional
        The layer's (H, W); with it the first pass also gathers the border statistics.
    progress : bool or None
        Progress bars for the statistics pass, the P-steps and the outer iterations (None: when stderr is a terminal).
    mixing : bool
        Then fit an appearance mixing W too: the reconstruction becomes A W A^T Z P P^T with W (R_C, R_C) symmetric
        positive semi-definite, which is the model class of the authors' code (their A drifts from orthonormal:
        A' A'^T = A W A^T). A stays that of the orthonormal fit; the best symmetric W for it
        (:func:`solve_mixing`) gives W's eigenvectors, and W's eigenvalues and P then alternate, data-free after
        one more pass (:func:`direction_grams`, R_C S x S matrices: :func:`mixing_bytes`), until the error falls by
        less than ``tol``. Where W itself lowers the error by less than ``tol`` that pass is skipped and W returned.
    mixing_directions : int, optional
        With ``mixing``: how many of W's eigenvectors keep eigenvalues of their own in that alternation, those that
        carry the most of the data's energy (:func:`mixing_split`); the others share one. The extra pass then
        gathers this many S x S matrices (plus one for the others, free where R_C = C) instead of R_C: at a 16 x 16
        layer of 128 channels, 32 directions cost a quarter of all 128. None (default): all R_C. The result is never
        worse than the first W (returned where the alternation does not improve on it).
    reseed : int
        After the random starts, up to this many rounds that move the weakest parts to where the best start
        reconstructs worst (:func:`reseed_parts`), until one lowers the error by less than ``tol`` (or 0.1%) of it:
        often a lower error than more random starts give, at R_S of 24 and above. 0 (default): none.

    Returns
    -------
    FitResult
        A starts from the HOSVD basis (eigenvectors of sum_i Z_i Z_i^T), as in the authors' code.
    """
    start = time.perf_counter()
    # ranks and counts taken from arrays arrive as numpy integers: whole numbers, so taken as such
    rank_appearance, rank_parts, n_iter_max, n_init, random_state, mixing_directions, reseed = map(
        plain_int, (rank_appearance, rank_parts, n_iter_max, n_init, random_state, mixing_directions, reseed))
    check_params(n_iter_max, tol, n_init, random_state, mixing, mixing_directions, reseed)
    passes = 0
    if stats is None:
        stats = data_stats(batches, grid)
        passes += 1
    c, s = stats.channel.shape[0], stats.position.shape[0]
    log.info("statistics of %d samples (C = %d, S = %d) in %.1f s", stats.n, c, s, time.perf_counter() - start)
    check_ranks(rank_appearance, rank_parts, c, s)
    if stats.total <= 0:
        _refuse_features(batches)
    full = rank_appearance == c
    _, a = top_eigenvectors(stats.channel, rank_appearance)
    # The P-step's statistic, scaled by sum||Z||^2 so that its objective is the relative error - 1.
    m = (stats.position if full else position_gram(batches, a)) / stats.total
    m = low_rank_statistic(m, stats.n * rank_appearance, random_state)  # few samples: M's rank is at most N R_C
    passes += 0 if full else 1
    p = first_parts(m, rank_parts, n_init, random_state, stats.grid or grid, progress, reseed, tol)
    errors: list[float] = []
    times: list[float] = []
    bar = progress_bar(total=n_iter_max, desc="alternating iterations", unit="it", progress=progress)
    for it in range(n_iter_max):
        if it > 0:
            p, _ = solve_parts(m.float(), p, progress=progress)
        if mixing:  # B and D apart: the mixing's first W is solved from them after the last iteration
            bmat, dmat = part_scatters(batches, p)
            scatter = 2 * bmat - dmat
        else:
            scatter = appearance_scatter(batches, p)
        passes += 1
        vals, a = top_eigenvectors(scatter, rank_appearance)
        err = 1.0 - float(vals.sum()) / stats.total
        errors.append(err)
        times.append(time.perf_counter() - start)
        bar.update(1)
        bar.set_postfix(error=f"{err:.4f}")
        log.info("iteration %d: error %.4f (%.1f s into the fit)", it + 1, err, times[-1])
        if callback is not None:
            callback(it, err)
        # With R_C = C the P-step's M does not depend on A: one iteration is the solution.
        if full or (len(errors) > 1 and errors[-2] - errors[-1] <= tol * abs(errors[-2])):
            break
        m = low_rank_statistic(position_gram(batches, a) / stats.total, stats.n * rank_appearance, random_state)
        passes += 1
    bar.close()
    if not mixing:
        return FitResult(a.float(), p.float(), errors, passes, stats, times)

    ad = a.double()
    bt, dt = ad.T @ bmat @ ad, ad.T @ dmat @ ad  # from the orthonormal fit's last pass
    w = solve_mixing(bt, dt)  # the best symmetric W for this A and P
    errors.append(mixing_error(w, bt, dt, stats.total))
    times.append(time.perf_counter() - start)
    if errors[-2] - errors[-1] <= tol * abs(errors[-2]):
        # W barely moved the error (a layer of few channels: at an RGB layer it changes nothing), so re-fitting its
        # eigenvalues with P would not either: skip the R_C S x S statistics' pass, the mixing fit's largest cost
        return FitResult(a.float(), p.float(), errors, passes, stats, times, w.float().to(a.device))
    # Then W keeps the eigenvectors U of this first solution and only its eigenvalues are re-fitted with P: the
    # statistics then split over the directions A U (one more pass), and every further step is data-free.
    _, u = torch.linalg.eigh(w)
    u = u.to(a.device)
    dirs = (ad @ u).to(a.dtype)  # (C, R_C): W's eigenvectors among the channels
    head, rest = mixing_split(dirs, stats.channel, mixing_directions)
    if rest.numel() and full:
        # the rest's sum is M minus the others' (sum_r H_r = sum_i Z_i^T Z_i when A spans every channel): no products
        h = direction_grams(batches, dirs[:, head])
        h = torch.cat([h, (stats.position - h.sum(0))[None]])
    else:
        h = direction_grams(batches, dirs[:, head], dirs[:, rest] if rest.numel() else None)
    h.div_(stats.total)  # (R, S, S): one per direction refitted, then the rest's sum
    passes += 1
    log.info("mixing: W's error %.4f; its eigenvalues and the parts alternate on %d directions' statistics "
             "(%.1f s into the fit)", errors[-1], len(h), time.perf_counter() - start)
    lyapunov = (errors[-1], p, w)
    # the head's eigenvalues are the first solution's own (it is their optimum); with a shared one for the rest the
    # error starts above the first W's, so the alternation follows its own error and is compared with W's at the end
    omega, last = _mixing_eigenvalues(h, p.to(h))
    bar = progress_bar(total=n_iter_max, desc="mixing iterations", unit="it", progress=progress)
    for it in range(n_iter_max):
        m1, m2 = torch.tensordot(torch.stack([omega, omega ** 2]), h, 1).float()  # one read of h for both
        p_new, _ = solve_parts(m1, p.to(m1.device), m2=m2, progress=progress)
        omega_new, err = _mixing_eigenvalues(h, p_new)
        if err >= last:  # float32 rounding at convergence: keep the better pair
            break
        p, omega, gain, last = p_new, omega_new, last - err, err
        bar.update(1)
        bar.set_postfix(error=f"{err:.4f}")
        log.info("mixing iteration %d: error %.4f", it + 1, err)
        if err < errors[-1]:  # the error history only falls
            errors.append(err)
            times.append(time.perf_counter() - start)
            if callback is not None:
                callback(len(errors) - 1, err)
        if gain <= tol * abs(last + gain):
            break
    bar.close()
    if last >= lyapunov[0]:  # the rest's single eigenvalue did worse than W's own: keep W
        _, p, w = lyapunov
    else:
        uc, om = u.cpu(), omega.cpu()
        uh = uc[:, head.cpu()]  # the directions with eigenvalues of their own
        w = (uh * om[:head.numel()]) @ uh.T
        if rest.numel():
            ur = uc[:, rest.cpu()]
            w = w + om[-1] * ur @ ur.T
    return FitResult(a.float(), p.float(), errors, passes, stats, times, w.float().to(a.device))


def mixing_split(directions: torch.Tensor, channel: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of W's eigenvectors keep eigenvalues of their own in a mixing fit: the ``n`` (all if None) of ``directions``
    (C, R) that carry the most of the data's energy u^T (sum_i Z_i Z_i^T) u (``channel``, (C, C)); the rest share one.
    Returns the indices of both, (n,) and (R - n,), each ascending."""
    r = directions.shape[1]
    if n is None or n >= r:
        return torch.arange(r, device=directions.device), torch.arange(0, device=directions.device)
    d = directions.double()
    energy = ((channel.to(d) @ d) * d).sum(0)
    order = torch.argsort(energy, descending=True)
    return order[:n].sort().values, order[n:].sort().values


def _mixing_eigenvalues(h: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The best eigenvalue of W along each direction for parts P (S, R_S), given their statistics h (R, S, S) (divided
    by sum_i ||Z_i||^2), and the relative error they give: the objective, sum_r -2 w_r tr(P^T H_r P)
    + w_r^2 tr(P^T H_r P P^T P), is separate in each w_r."""
    # tr(P^T H_r P) = <H_r, P P^T> and tr(P^T H_r P P^T P) = <H_r, P (P^T P) P^T>: one product reading h once
    q = torch.stack([p @ p.T, p @ (p.T @ p) @ p.T])  # (2, S, S)
    pb, pd = (h.reshape(h.shape[0], -1) @ q.reshape(2, -1).T).T
    omega = torch.where(pd > 0, pb / pd.clamp_min(1e-300), torch.zeros_like(pd))
    return omega, 1.0 - float((2 * omega * pb - omega ** 2 * pd).sum())


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_params(n_iter_max: int, tol: float, n_init: int, random_state: int,
                 mixing: bool = False, mixing_directions: int | None = None, reseed: int = 0) -> None:
    """The fit's hyper-parameters, checked before any data is touched."""
    if not _is_int(n_iter_max) or n_iter_max < 1:
        raise PandaError(f"max_iter={n_iter_max!r}: give a whole number of iterations >= 1.")
    if not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
        raise PandaError(f"tol={tol!r}: give a finite tolerance >= 0.")
    if not _is_int(n_init) or n_init < 1:
        raise PandaError(f"n_init={n_init!r}: give a whole number of random starts >= 1.")
    if not _is_int(random_state) or random_state < 0:
        raise PandaError(f"random_state={random_state!r}: give a whole number >= 0.")
    if not _is_int(reseed) or reseed < 0:
        raise PandaError(f"reseed={reseed!r}: give a whole number of re-seeding rounds >= 0 (0: none).")
    if mixing_directions is not None and (not _is_int(mixing_directions) or mixing_directions < 1):
        raise PandaError(f"mixing_directions={mixing_directions!r}: give a whole number >= 1, or None for all R_C.")
    if not isinstance(mixing, bool):
        raise PandaError(f"mixing={mixing!r}: give True or False.")
    if mixing_directions is not None and not mixing:
        # refused rather than ignored: the caller asked for something the fit would not do
        raise PandaError(f"mixing_directions={mixing_directions} applies to a fit with mixing: pass mixing=True "
                         "(--mixing), or leave mixing_directions out.")


def statistics_bytes(s: int) -> int:
    """Peak bytes of the fit's S x S statistics for S positions: the float64 position statistic, its scaled copy and
    the P-step's float32 copy, with the float64 block sums they are assembled from (about 20 S^2)."""
    return 20 * s * s


def available_memory(device: torch.device | str) -> int:
    """Bytes free for the statistics on ``device``: the GPU's free memory, or the machine's available memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: let the fit try


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_statistics_memory(grid: tuple[int, int], device: torch.device | str, layer: str = "this layer",
                            mixing_rank: int | None = None) -> None:
    """Refuse, before any sample is generated, a layer whose S x S statistics cannot fit in memory (a 256 x 256 layer
    needs about 80 GiB), naming the largest grid that would; with ``mixing_rank`` (the S x S matrices of a fit with
    ``mixing``: :func:`mixing_matrices`) those count too (:func:`mixing_bytes`)."""
    h, w = grid
    s = h * w
    base, free = statistics_bytes(s), available_memory(device)
    if base > free:
        side = math.isqrt(math.isqrt(free // statistics_bytes(1)))
        raise PandaError(f"{layer} has {h}x{w} = {s} positions: the fit's S x S statistics need about "
                         f"{_size(base)}, more than the {_size(free)} free on {torch.device(device)}. "
                         f"Pick a layer of at most about {side}x{side} positions, or free memory.")
    if mixing_rank is not None and base + mixing_bytes(mixing_rank, s) > free:
        per_rank = mixing_bytes(1, s) - mixing_bytes(0, s)
        fits = max(0, (free - base - mixing_bytes(0, s)) // per_rank)
        raise PandaError(f"{layer}: the appearance mixing keeps {mixing_rank} S x S matrices ({h}x{w} positions), about "
                         f"{_size(base + mixing_bytes(mixing_rank, s))} with the fit's statistics, more than "
                         f"the {_size(free)} free on {torch.device(device)}. Fit without mixing, or with "
                         + (f"mixing_directions <= {fits - 1} (--mixing-directions) or " if fits > 1 else "")
                         + f"rank_appearance <= {fits}, or at a smaller layer.")


def check_ranks(rank_appearance: int, rank_parts: int, c: int, s: int) -> None:
    """1 <= R_C <= C and 1 <= R_S <= S; the message says which way to move."""
    if not _is_int(rank_appearance) or not _is_int(rank_parts):
        raise PandaError(f"ranks must be whole numbers, got R_C={rank_appearance!r}, R_S={rank_parts!r}.")
    if rank_appearance < 1:
        raise PandaError(f"rank_appearance={rank_appearance} must be at least 1.")
    if rank_parts < 1:
        raise PandaError(f"rank_parts={rank_parts} must be at least 1.")
    if not 1 <= rank_appearance <= c:
        raise PandaError(f"rank_appearance={rank_appearance} must be in 1..{c} (the layer's channel count C={c}): "
                         f"lower it, or pick a wider layer.")
    if not 1 <= rank_parts <= s:
        raise PandaError(f"rank_parts={rank_parts} must be in 1..{s} (the layer's H*W={s} positions): "
                         f"lower it, or pick a larger layer.")


def coefficient_moments(batches: Batches, appearances: torch.Tensor, parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and mean square over samples of Lambda_i = A^T Z_i P.

    Parameters
    ----------
    batches : iterable of torch.Tensor
        (B, C, S) feature maps.
    appearances : torch.Tensor
        A, (C, R_C).
    parts : torch.Tensor
        P, (S, R_S).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        E[Lambda_i] and E[Lambda_i ** 2], each (R_C, R_S) float32.
    """
    total, sq, n = 0, 0, 0
    for z in batches:
        z = _upcast(z)
        lam = appearances.T.to(z) @ (z @ parts.to(z))  # Z P first: C S R_S + R_C C R_S, not R_C C S (+ R_C S R_S)
        total = total + lam.double().sum(0)
        sq = sq + (lam.double() ** 2).sum(0)
        n += z.shape[0]
    return (total / n).float().cpu(), (sq / n).float().cpu()


def appearance_shares(stats: DataStats, appearances: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each appearance sits, from the first pass's statistics (no data pass).

    Parameters
    ----------
    stats : DataStats
        Gathered with ``grid`` (border statistics present).
    appearances : torch.Tensor
        A, (C, R_C).
    grid : (int, int)
        The layer's (H, W).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Each appearance's share of sum_i ||Z_i||^2, (R_C,), and its energy share on the grid's outer ring
        relative to the ring's area, (R_C,) (1 = spread evenly; > 1 = on the border).
    """
    a = appearances.double().cpu()
    energy = ((a.T @ stats.channel.cpu()) * a.T).sum(1)
    border = ((a.T @ stats.border_channel.cpu()) * a.T).sum(1)
    area = float(border_mask(*grid).double().mean())
    return (energy / stats.total).float(), (border / energy.clamp_min(1e-30) / area).float()


def reconstruct(z: torch.Tensor, appearances: torch.Tensor, parts: torch.Tensor,
                mixing: torch.Tensor | None = None) -> torch.Tensor:
    """A W (A^T Z P) P^T (W = I unless ``mixing`` (R_C, R_C) is given) for feature maps z (N, C, S), with the parts
    P (S, R_S) or one set per sample (N, S, R_S) -> (N, C, S), in z's dtype and device."""
    a, p = appearances.to(z), parts.to(z)
    lam = a.T @ (z @ p)  # (N, R_C, R_S); Z P first, R_S << S
    if mixing is not None:
        lam = mixing.to(z) @ lam
    return a @ lam @ p.transpose(-2, -1)


def relative_error(batches: Batches, appearances: torch.Tensor, parts: torch.Tensor,
                   mixing: torch.Tensor | None = None) -> float:
    """sum_i ||Z_i - A W A^T Z_i P P^T||^2 / sum_i ||Z_i||^2 (W = I unless ``mixing`` (R_C, R_C) is given), computed
    directly from the data."""
    num, den = 0.0, 0.0
    for z in batches:
        z = _upcast(z)
        r = z - reconstruct(z, appearances, parts, mixing)
        num += float((r.double() ** 2).sum())
        den += float((z.double() ** 2).sum())
    if not math.isfinite(den):  # (a NaN num from finite data is the factors' own: a diverged run, returned as NaN)
        raise PandaError(NON_FINITE)
    if den == 0:  # relative to nothing: no error to report
        raise PandaError("the feature maps to score are all zero, so their relative error is undefined: score other "
                         "samples, or another layer.")
    return num / den


def projected_gradient_factorise(
    features: torch.Tensor,
    rank_appearance: int,
    rank_parts: int,
    lr: float = 1e-8,
    n_iter: int = 10_000,
    batch_size: int = 8,
    random_state: int = 0,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    callback_every: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' published scheme, kept for comparison: A from HOSVD, P ~ U[0, 0.01], then
    ``n_iter`` plain gradient steps of size ``lr`` on a random batch of ``features`` (N, C, S),
    P clamped at 0 after each step, A not re-orthonormalised.

    Returns (A, P). ``callback(iteration, A, P)`` every ``callback_every`` iterations.
    """
    n, c, s = features.shape
    check_ranks(rank_appearance, rank_parts, c, s)
    gen = torch.Generator().manual_seed(random_state)
    zc = features.transpose(0, 1).reshape(c, -1).double()
    _, a = top_eigenvectors(zc @ zc.T, rank_appearance)
    a = a.float().to(features.device).requires_grad_(True)
    p = (torch.rand(s, rank_parts, generator=gen) * 0.01).to(features.device).requires_grad_(True)
    for it in range(1, n_iter + 1):
        idx = torch.randint(n, (batch_size,), generator=gen)
        z = features[idx.to(features.device)]
        loss = ((z - a @ (a.T @ z @ p) @ p.T) ** 2).sum()
        ga, gp = torch.autograd.grad(loss, (a, p))
        with torch.no_grad():
            a -= lr * ga
            p -= lr * gp
            p.clamp_(min=0)
        if callback is not None and (it % callback_every == 0 or it == n_iter):
            callback(it, a.detach(), p.detach())
    return a.detach(), p.detach()
