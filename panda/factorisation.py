"""The PandA factorisation: appearances A (C x R_C, orthonormal columns) and non-negative
parts P (S x R_S) minimising ``sum_i ||Z_i - A A^T Z_i P P^T||_F^2`` over feature maps Z_i (C x S).

Why it needs no learning rate: with ``Q = P P^T`` and ``A^T A = I``,

* for fixed P the objective is ``sum_i ||Z_i||^2 - tr(A^T N A)`` with
  ``N = sum_i Y_i (2 I - P^T P) Y_i^T`` and ``Y_i = Z_i P`` (C x R_S), so the best A is the
  top-R_C eigenvectors of N: a closed-form step;
* for fixed A it is ``sum_i ||Z_i||^2 - 2 tr(P^T M P) + tr(P^T M P P^T P)`` with
  ``M = sum_i Z_i^T A A^T Z_i`` (S x S): the P-step never touches the data again, and is
  solved by projected gradient with an Armijo backtracking line search (Lin, 2007), whose
  step adapts itself.

Every statistic is a sum over samples, accumulated batch by batch in bounded memory. With
R_C = C the P-step's M does not depend on A, and the whole fit takes two passes over the data.

Each decomposition is a plain function (TensorLy style); :class:`panda.model.PandA` wraps them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from .errors import PandaError

Batches = Iterable[torch.Tensor]  # re-iterable; each item (B, C, S)


def _check_finite(z: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(z).all():
        raise PandaError("the feature maps contain NaN or inf values: check the generator and its inputs "
                         "(a broken weight file or latents with NaN), or pick another layer.")
    return z


@dataclass
class DataStats:
    """First-pass statistics of the data.

    total:        sum_i ||Z_i||_F^2.
    channel:      sum_i Z_i Z_i^T, (C, C) (HOSVD of the channel mode).
    position:     sum_i Z_i^T Z_i, (S, S) (the P-step's M when R_C = C).
    feature_norm: mean over samples and positions of the feature vector's norm ||z_{:, s}||:
                  the layer's typical activation norm, the unit of edit strengths.
    n:            number of samples.
    border_channel: sum_i Z_i[:, B] Z_i[:, B]^T over the grid's outer ring B, (C, C): with ``channel`` it
                  gives each appearance's share of energy on the border (the background criterion).
    border_sum:   sum_i Z_i[:, B] 1, (C,): the sign an appearance typically has on the border.
    """

    total: float
    channel: torch.Tensor
    position: torch.Tensor
    feature_norm: float
    n: int
    border_channel: torch.Tensor | None = None
    border_sum: torch.Tensor | None = None


def border_mask(h: int, w: int, width: int = 1) -> torch.Tensor:
    """(H, W) bool mask of the grid's outer ring, ``width`` positions wide."""
    inner = torch.zeros(h, w, dtype=torch.bool)
    inner[width:h - width, width:w - width] = True
    return ~inner


def data_stats(batches: Batches, grid: tuple[int, int] | None = None) -> DataStats:
    """One pass over ``batches`` of (B, C, S) feature maps -> :class:`DataStats` (float64).

    grid: the layer's (H, W); with it the border statistics are gathered too.
    """
    norm_sum, n, channel, position, border_channel, border_sum = 0.0, 0, None, None, None, None
    border = None if grid is None else border_mask(*grid).flatten()
    for z in batches:
        z = _check_finite(z)
        b, c, s = z.shape
        zs = z.transpose(1, 2).reshape(b * s, c)  # one copy serves the channel scatter and the norms
        ch = (zs.T @ zs).double()
        po = torch.einsum("bcs,bct->st", z, z).double()
        channel = ch if channel is None else channel + ch
        position = po if position is None else position + po
        norm_sum += float(zs.norm(dim=1).double().sum())
        n += b
        if border is not None:
            zb = z[:, :, border.to(z.device)].transpose(1, 2).reshape(-1, c)
            bc, bs = (zb.T @ zb).double(), zb.sum(0).double()
            border_channel = bc if border_channel is None else border_channel + bc
            border_sum = bs if border_sum is None else border_sum + bs
    if n == 0:
        raise PandaError("no samples to fit on: n_samples must be >= 1.")
    total = float(torch.trace(channel))  # sum_i ||Z_i||^2 = tr(sum_i Z_i Z_i^T)
    return DataStats(total, channel, position, norm_sum / (n * position.shape[0]), n, border_channel, border_sum)


def position_gram(batches: Batches, appearances: torch.Tensor) -> torch.Tensor:
    """M = sum_i Z_i^T A A^T Z_i, (S, S) float64, for A (C, R_C)."""
    m = None
    for z in batches:
        w = appearances.T.to(z) @ z  # (B, R_C, S)
        g = torch.einsum("brs,brt->st", w, w).double()
        m = g if m is None else m + g
    return m


def appearance_scatter(batches: Batches, parts: torch.Tensor) -> torch.Tensor:
    """N = sum_i Z_i (2Q - Q^2) Z_i^T = sum_i Y_i (2I - P^T P) Y_i^T, (C, C) float64, for P (S, R_S)."""
    p = parts
    k = 2 * torch.eye(p.shape[1], dtype=p.dtype, device=p.device) - p.T @ p
    n = None
    for z in batches:
        b, c, r = z.shape[0], z.shape[1], p.shape[1]
        y = z @ p.to(z)  # (B, C, R_S)
        yk = y @ k.to(z)
        g = (yk.transpose(0, 1).reshape(c, b * r) @ y.transpose(0, 1).reshape(c, b * r).T).double()
        n = g if n is None else n + g
    return n


def top_eigenvectors(sym: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``rank`` leading eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix,
    each vector's sign fixed so its largest-magnitude entry is positive (reproducible bases)."""
    vals, vecs = torch.linalg.eigh((sym + sym.T) / 2)
    vals, vecs = vals.flip(0)[:rank], vecs.flip(1)[:, :rank]
    idx = vecs.abs().argmax(0)
    signs = torch.sign(vecs[idx, torch.arange(rank, device=vecs.device)])
    signs[signs == 0] = 1
    return vals, vecs * signs


def parts_objective(m: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """f(P) = -2 tr(P^T M P) + tr(P^T M P P^T P); the objective is sum_i||Z_i||^2 + f(P) for fixed A."""
    mp = m @ p
    return -2 * (p * mp).sum() + ((p.T @ mp) * (p.T @ p)).sum()


def solve_parts(m: torch.Tensor, p: torch.Tensor, max_iter: int = 500, tol: float = 1e-7,
                support: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Minimise f(P) (see :func:`parts_objective`) over P >= 0 from a start ``p`` (S, R_S).

    Projected gradient with an Armijo backtracking line search along the projection arc; the
    step grows after each accepted step and halves until accepted, so no learning rate is set.
    Stops when f decreases by less than ``tol`` relative to |f|. Returns (P, iterations).

    support: optional (S, R_S) bool mask; entries outside it are held at 0 (the feasible set stays
    convex, so the projection is exact: clamp at 0, then zero outside the mask).
    """
    if support is not None:
        p = p * support
    step = 1.0 / (4.0 * float(torch.linalg.matrix_norm(m, 2)) + 1e-30)
    f = parts_objective(m, p)
    it = 0
    for it in range(1, max_iter + 1):
        mp = m @ p
        grad = -4 * mp + 2 * (p @ (p.T @ mp) + mp @ (p.T @ p))
        for _ in range(60):
            cand = (p - step * grad).clamp_min(0)
            if support is not None:
                cand = cand * support
            f_new = parts_objective(m, cand)
            if f_new <= f + 0.01 * (grad * (cand - p)).sum():
                break
            step *= 0.5
        else:  # no decrease possible at machine precision: converged
            break
        decrease = float(f - f_new)
        p, f = cand, f_new
        step *= 2.0
        if decrease <= tol * abs(float(f)):
            break
    return p, it


def init_parts(m: torch.Tensor, rank: int, random_state: int = 0) -> torch.Tensor:
    """Uniform random non-negative P (S, rank), scaled to minimise f along its ray:
    f(sP) = -2 s^2 a + s^4 b is smallest at s^2 = a / b."""
    gen = torch.Generator().manual_seed(random_state)
    p = torch.rand(m.shape[0], rank, generator=gen, dtype=torch.float64).to(m.device)
    a = (p * (m @ p)).sum()
    b = ((p.T @ m @ p) * (p.T @ p)).sum()
    return p * torch.sqrt(a / b)


@dataclass
class FitResult:
    """What :func:`panda_factorise` returns.

    appearances: A, (C, R_C), orthonormal columns, ordered by eigenvalue of N.
    parts:       P, (S, R_S), >= 0.
    errors:      relative training error sum||Z - A A^T Z P P^T||^2 / sum||Z||^2 after each outer iteration.
    n_passes:    passes over the data (each re-generates it when it is not kept in memory).
    stats:       the first pass's :class:`DataStats`.
    times:       seconds since the start at each entry of ``errors``.
    """

    appearances: torch.Tensor
    parts: torch.Tensor
    errors: list[float]
    n_passes: int
    stats: DataStats
    times: list[float] = field(default_factory=list)


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
) -> FitResult:
    """Alternating minimisation of the PandA objective.

    Parameters
    ----------
    batches:         re-iterable of (B, C, S) feature maps; every iteration must see the same samples.
    rank_appearance: R_C, 1 <= R_C <= C.
    rank_parts:      R_S, 1 <= R_S <= S.
    n_iter_max:      at most this many outer (P-step, A-step) iterations.
    tol:             stop when the relative training error falls by less than ``tol`` (relative) in an iteration.
    random_state:    seed of the random non-negative starts of P.
    n_init:          the first P-step runs from this many random starts (seeds random_state, random_state + 1, ...)
                     and keeps the best; restarts are cheap because the P-step works on an S x S matrix only.
    callback:        called as ``callback(iteration, relative_error)`` after each outer iteration.
    stats:           the first pass's statistics, if already computed.

    Returns
    -------
    FitResult. A starts from the HOSVD basis (eigenvectors of sum_i Z_i Z_i^T), as in the authors' code.
    """
    start = time.perf_counter()
    passes = 0
    if stats is None:
        stats = data_stats(batches)
        passes += 1
    c, s = stats.channel.shape[0], stats.position.shape[0]
    check_ranks(rank_appearance, rank_parts, c, s)
    if stats.total <= 0:
        raise PandaError("the feature maps are all zero at this layer: pick another layer.")
    full = rank_appearance == c
    _, a = top_eigenvectors(stats.channel, rank_appearance)
    # The P-step's statistic, scaled by sum||Z||^2 so that its objective is the relative error - 1.
    m = (stats.position if full else position_gram(batches, a)) / stats.total
    passes += 0 if full else 1
    if n_init < 1:
        raise PandaError(f"n_init={n_init}: give at least 1 random start.")
    starts = [solve_parts(m, init_parts(m, rank_parts, random_state + i))[0] for i in range(n_init)]
    p = min(starts, key=lambda cand: float(parts_objective(m, cand)))
    errors: list[float] = []
    times: list[float] = []
    for it in range(n_iter_max):
        if it > 0:
            p, _ = solve_parts(m, p)
        n = appearance_scatter(batches, p)
        passes += 1
        vals, a = top_eigenvectors(n, rank_appearance)
        err = 1.0 - float(vals.sum()) / stats.total
        errors.append(err)
        times.append(time.perf_counter() - start)
        if callback is not None:
            callback(it, err)
        # With R_C = C the P-step's M does not depend on A: one iteration is the solution.
        if full or (len(errors) > 1 and errors[-2] - errors[-1] <= tol * abs(errors[-2])):
            break
        m = position_gram(batches, a) / stats.total
        passes += 1
    return FitResult(a.float(), p.float(), errors, passes, stats, times)


def check_ranks(rank_appearance: int, rank_parts: int, c: int, s: int) -> None:
    if not 1 <= rank_appearance <= c:
        raise PandaError(f"rank_appearance={rank_appearance} must be in 1..{c} (the layer's channel count C={c}): "
                         f"lower it, or pick a wider layer (`panda layers GENERATOR` lists them).")
    if not 1 <= rank_parts <= s:
        raise PandaError(f"rank_parts={rank_parts} must be in 1..{s} (the layer's H*W={s} positions): "
                         f"lower it, or pick a larger layer (`panda layers GENERATOR` lists them).")


def relative_error(batches: Batches, appearances: torch.Tensor, parts: torch.Tensor) -> float:
    """sum_i ||Z_i - A A^T Z_i P P^T||^2 / sum_i ||Z_i||^2, computed directly from the data."""
    num, den = 0.0, 0.0
    for z in batches:
        a, p = appearances.to(z), parts.to(z)
        r = z - a @ (a.T @ z @ p) @ p.T
        num += float((r.double() ** 2).sum())
        den += float((z.double() ** 2).sum())
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
