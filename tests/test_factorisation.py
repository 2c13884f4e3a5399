import copy
import math

import pytest
import torch

from panda import PandaError
from panda.factorisation import (appearance_scatter, data_stats, panda_factorise, parts_objective,
                                 projected_gradient_factorise, relative_error, solve_parts)
from panda.features import FeatureSource
from panda.model import PandA


def synthetic(n=64, c=10, s=16, seed=0):
    """Feature maps with a planted structure: 3 disjoint parts, each with its own appearance, plus noise."""
    g = torch.Generator().manual_seed(seed)
    parts = torch.zeros(s, 3)
    for k, idx in enumerate([range(0, 5), range(5, 11), range(11, 16)]):
        parts[list(idx), k] = 1.0
    app = torch.linalg.qr(torch.randn(c, 3, generator=g))[0]
    coef = torch.randn(n, 3, 3, generator=g) * 3
    z = app @ coef @ parts.T + 0.05 * torch.randn(n, c, s, generator=g)
    return [z[i:i + 16] for i in range(0, n, 16)], parts


def test_closed_form_error_matches_direct_error():
    batches, _ = synthetic()
    res = panda_factorise(batches, 4, 3, random_state=1)
    # the closed form is 1 - (explained energy) / total from float32 statistics: its rounding floor is about 1e-7 of
    # the total, which at an error of 8e-4 is 1e-4 relative (and was just above it on one CPU); a wrong formula is off
    # by far more
    assert res.errors[-1] == pytest.approx(relative_error(batches, res.appearances, res.parts), rel=1e-4, abs=1e-6)


def test_recovers_planted_parts():
    batches, planted = synthetic()
    res = panda_factorise(batches, 3, 3, random_state=0)
    assert res.errors[-1] < 0.01
    # each learnt part lives on one planted part: cosine similarity close to 1 after matching
    p = res.parts / res.parts.norm(dim=0)
    q = planted / planted.norm(dim=0)
    sim = (p.T @ q).max(dim=1).values
    assert sim.min() > 0.95


def test_solve_parts_never_increases_the_objective():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 50, generator=g, dtype=torch.float64)
    m = x @ x.T / (x ** 2).sum()
    p = torch.rand(20, 4, generator=g, dtype=torch.float64)
    values = [float(parts_objective(m, p))]
    for _ in range(15):
        p, _ = solve_parts(m, p, max_iter=3)
        values.append(float(parts_objective(m, p)))
        assert (p >= 0).all()
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))
    assert values[-1] < values[0]


def test_solve_parts_runs_starts_as_one_batch_with_the_same_results():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(30, 80, generator=g, dtype=torch.float64)
    m = x @ x.T / (x ** 2).sum()
    starts = torch.rand(3, 30, 5, generator=g, dtype=torch.float64)
    batched, _ = solve_parts(m, starts, max_iter=40, tol=0)
    assert batched.shape == (3, 30, 5) and (batched >= 0).all()
    for start, got in zip(starts, batched):
        alone, _ = solve_parts(m, start, max_iter=40, tol=0)
        assert torch.allclose(alone, got, atol=1e-10)
    # float32 products (as the fit runs them) reach the same objective to float32 precision
    f64 = float(parts_objective(m, solve_parts(m, starts[0], max_iter=40, tol=0)[0]))
    f32 = float(parts_objective(m, solve_parts(m.float(), starts[0], max_iter=40, tol=0)[0]))
    assert abs(f64 - f32) < 1e-5 * abs(f64)


def test_few_samples_make_the_statistic_a_factor_that_multiplies_and_restricts_like_it():
    """M of rank r <= S / 4 (few samples) becomes L L^T: the same products, the same coarse matrix, the same P-step."""
    from panda.factorisation import PsdFactor, low_rank_statistic, restrict
    g = torch.Generator().manual_seed(2)
    x = torch.rand(20, 256, generator=g, dtype=torch.float64)  # 20 samples' rows on a 16 x 16 grid: rank 20
    m = x.T @ x / (x ** 2).sum()
    f = low_rank_statistic(m, 20)
    assert isinstance(f, PsdFactor) and f.shape == m.shape and f.l.shape[1] == 28
    assert torch.allclose(f.dense(), m, atol=1e-12 * float(m.abs().max()))
    v = torch.rand(256, 5, generator=g, dtype=torch.float64)
    assert torch.allclose(f @ v, m @ v, rtol=1e-9)
    coarse = restrict(f, (16, 16))  # 64 positions: a rank-28 factor no longer pays, so the dense coarse matrix
    assert isinstance(coarse, torch.Tensor) and torch.allclose(coarse, restrict(m, (16, 16)), atol=1e-12)
    assert low_rank_statistic(m, 100) is m  # rank + 8 > S / 4: kept dense
    start = torch.rand(2, 256, 4, generator=g, dtype=torch.float64)
    dense, _ = solve_parts(m, start, max_iter=60, tol=0)  # float64: the same iterates, not just the same objective
    factored, _ = solve_parts(f, start, max_iter=60, tol=0)
    assert torch.allclose(dense, factored, atol=1e-8)


def test_batched_and_stacked_factors_solve_as_their_dense_matrices():
    """K problems' factors (K, S, r), with a mixing's second statistic as a factor of another rank: the P-step's
    iterates are those of the dense (K, S, S) matrices, and the stacked factor multiplies as [M; M2]."""
    from panda.factorisation import PsdFactor
    g = torch.Generator().manual_seed(3)
    l, l2 = torch.rand(3, 64, 6, generator=g, dtype=torch.float64), torch.rand(3, 64, 5, generator=g, dtype=torch.float64)
    m, m2 = l @ l.transpose(1, 2), l2 @ l2.transpose(1, 2)
    f, f2 = PsdFactor(l), PsdFactor(l2)
    assert f.shape == m.shape and f.dim() == 3
    stacked = f.stacked(f2)
    assert stacked.shape == (3, 128, 64) and torch.allclose(stacked.dense(), torch.cat([m, m2], 1))
    v = torch.rand(3, 64, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(stacked @ v, torch.cat([m @ v, m2 @ v], 1))
    start = torch.rand(3, 64, 4, generator=g, dtype=torch.float64)
    for second in (None, (m2, f2)):
        dense, _ = solve_parts(m, start, max_iter=40, tol=0, m2=None if second is None else second[0])
        factored, _ = solve_parts(f, start, max_iter=40, tol=0, m2=None if second is None else second[1])
        assert torch.allclose(dense, factored, atol=1e-8)
    with pytest.raises(TypeError):
        solve_parts(f, start, m2=m2)


def test_a_fit_on_few_samples_at_a_large_grid_runs_on_the_factor(monkeypatch):
    """64 x 64 positions, 6 samples of 2 channels: M has rank 12, and the fit's P-steps (both grid levels) multiply
    by its factor; the error it reports is still the data's."""
    import panda.factorisation as fac
    seen = []
    original = fac._times
    monkeypatch.setattr(fac, "_times", lambda m, x: seen.append(type(m).__name__) or original(m, x))
    g = torch.Generator().manual_seed(5)
    z = torch.rand(6, 2, 4096, generator=g)
    res = panda_factorise([z[:3], z[3:]], 2, 4, grid=(64, 64), n_init=2)
    assert seen and set(seen) == {"PsdFactor"}
    assert (res.parts >= 0).all()
    assert res.errors[-1] == pytest.approx(relative_error([z], res.appearances, res.parts), rel=1e-4)


def test_alternating_error_decreases_with_reduced_appearance_rank(model, celeba):
    source = FeatureSource(celeba, "relu2", range(128))
    res = panda_factorise(source, 16, 6, random_state=0, tol=0)
    assert len(res.errors) > 2
    assert all(b <= a + 1e-6 for a, b in zip(res.errors, res.errors[1:]))


def test_fitted_model_orthonormal_and_non_negative(model):
    a, p = model.appearances_, model.parts_
    assert a.shape == (256, 256) and p.shape == (64, 8)
    assert torch.allclose(a.T @ a, torch.eye(256), atol=1e-4)
    assert (p >= 0).all()
    assert model.coef_energy_.shape == (256, 8)
    assert 0 < model.train_error_ < 1 and 0 < model.heldout_error_ < 1


def test_error_falls_with_rank(celeba):
    source = FeatureSource(celeba, "relu2", range(128))
    errors = [panda_factorise(source, 256, r, random_state=0).errors[-1] for r in (2, 6, 16)]
    assert errors[0] > errors[1] > errors[2]
    errors_c = [panda_factorise(source, r, 6, random_state=0).errors[-1] for r in (8, 64)]
    assert errors_c[0] > errors_c[1]


def test_streaming_gives_the_same_fit_as_in_memory(celeba):
    kept_source = FeatureSource(celeba, "relu2", range(96), batch_size=32)
    streamed_source = FeatureSource(celeba, "relu2", range(96), batch_size=32, memory_budget=0)
    kept = PandA(rank_appearance=32, rank_parts=4).fit(kept_source)
    streamed = PandA(rank_appearance=32, rank_parts=4).fit(streamed_source)
    assert not kept_source.streamed and streamed_source.streamed
    assert torch.allclose(kept.parts_, streamed.parts_, atol=1e-5)
    assert kept.train_error_ == pytest.approx(streamed.train_error_, rel=1e-5)


def test_beats_the_official_scheme_on_the_same_data(celeba):
    """Same 128 samples, same ranks: the learning-rate-free fit reaches a lower error than
    1,000 steps of the published projected gradient at the lr that worked best on this family."""
    batches = list(FeatureSource(celeba, "relu2", range(128), batch_size=64))
    feats = torch.cat(batches)
    ours = panda_factorise(batches, 256, 8, random_state=0)
    a, p = projected_gradient_factorise(feats, 256, 8, lr=1e-4, n_iter=300, batch_size=8)
    assert ours.errors[-1] < relative_error(batches, a, p)


@pytest.mark.parametrize("params,match", [
    ({"rank_appearance": 300}, r"rank_appearance=300 must be in 1..256"),
    ({"rank_parts": 65}, r"rank_parts=65 must be in 1..64"),
    ({"rank_parts": 0}, r"rank_parts=0 must be at least 1"),
    ({"rank_parts": 2.5}, "whole numbers"),
    ({"max_iter": 0}, "max_iter=0"),
    ({"tol": float("nan")}, "tol=nan"),
    ({"n_init": 0}, "n_init=0"),
    ({"random_state": -1}, "random_state=-1"),
    ({"reseed": -1}, "reseed=-1"),
    ({"reseed": True}, "reseed=True"),
])
def test_bad_hyper_parameters_are_refused_before_any_extraction(celeba, params, match):
    source = FeatureSource(celeba, "relu2", range(8))
    with pytest.raises(PandaError, match=match):
        PandA(**params).fit(source)
    assert source.extract_time == 0.0 and source._cache is None  # nothing was generated


def test_numpy_integer_ranks_and_counts_fit_when_called_directly():
    import numpy as np
    z = torch.rand(6, 5, 16, generator=torch.Generator().manual_seed(0))
    plain = panda_factorise([z], 3, 4, n_iter_max=3, n_init=2, random_state=1, reseed=1)
    given = panda_factorise([z], np.int64(3), np.int32(4), n_iter_max=np.int64(3), n_init=np.int64(2),
                            random_state=np.int64(1), reseed=np.int16(1))  # e.g. ranks read from an array
    assert given.parts.shape == (16, 4) and given.appearances.shape == (5, 3)
    assert torch.equal(given.parts, plain.parts) and given.errors == plain.errors
    with pytest.raises(PandaError, match="whole numbers"):
        panda_factorise([z], np.float64(3), 4)  # a float stays refused


def test_non_finite_features_are_refused():
    z = torch.ones(2, 3, 4)
    z[0, 0, 0] = math.nan
    with pytest.raises(PandaError, match="NaN or inf"):
        data_stats([z])


@pytest.mark.parametrize("scale, match", [
    (1e20, "finite, but values as large as 2e\\+20 overflow"),  # squares beyond float32: not "NaN or inf" in the data
    (1e-30, "not zero, but all as small as 2e-30"),  # squares below it: not "all zero"
    (0.0, "all zero"),
])
def test_features_out_of_float32_range_are_named_as_such(scale, match):
    z = torch.ones(2, 3, 4, 4) * 2 * scale
    with pytest.raises(PandaError, match=match):
        PandA(rank_parts=2).fit(z)


def test_scoring_all_zero_features_is_refused_and_diverged_factors_score_nan():
    z = torch.randn(6, 3, 4, 4)
    model = PandA(rank_parts=2, max_iter=2).fit(z)
    with pytest.raises(PandaError, match="all zero, so their relative error is undefined"):
        model.score(torch.zeros(2, 3, 4, 4))  # was a ZeroDivisionError
    # a diverged run's factors (the authors' scheme at too high a learning rate) score NaN, which benchmarks report
    assert math.isnan(relative_error([z.flatten(2)], model.appearances_, model.parts_ * math.nan))
    bad = z.flatten(2).clone()
    bad[0, 0, 0] = math.inf
    with pytest.raises(PandaError, match="NaN or inf"):  # the data's own, not the factors'
        relative_error([bad], model.appearances_, model.parts_)


def test_not_fitted_is_a_clear_error(tmp_path):
    with pytest.raises(PandaError, match="not fitted yet"):
        PandA().part_maps()
    with pytest.raises(PandaError, match="not fitted yet"):
        PandA().save(tmp_path / "f.safetensors")
    assert not list(tmp_path.iterdir())


def test_fit_takes_a_feature_source(celeba):
    with pytest.raises(PandaError, match="FeatureSource"):
        PandA().fit(celeba)


def test_score_is_the_held_out_error(model, celeba):
    model = copy.deepcopy(model)  # score records the error: leave the session's model as it is
    held = FeatureSource.heldout(celeba, "relu2", 16)
    assert model.score(held) == pytest.approx(relative_error(held, model.appearances_, model.parts_))
    assert held.seeds[0] == 1_000_000_000 and model.n_heldout_ == 16
    with pytest.raises(PandaError, match="fitted at layer 'relu2'"):
        model.score(FeatureSource(celeba, "relu3", range(4)))


def test_appearance_scatter_matches_definition():
    batches, _ = synthetic(n=8)
    p = torch.rand(16, 3, dtype=torch.float64)
    q = p @ p.T
    z = torch.cat(batches).double()
    direct = sum(zi @ (2 * q - q @ q) @ zi.T for zi in z)
    assert torch.allclose(appearance_scatter([zb.double() for zb in batches], p), direct, atol=1e-8)


def test_more_random_starts_never_fit_worse(celeba):
    source = FeatureSource(celeba, "relu2", range(128))
    one = panda_factorise(source, 256, 8, random_state=0, n_init=1).errors[-1]
    four = panda_factorise(source, 256, 8, random_state=0, n_init=4).errors[-1]
    assert four <= one + 1e-9
    with pytest.raises(PandaError, match="n_init=0"):
        panda_factorise(source, 256, 8, n_init=0)


def test_half_precision_features_give_the_float32_statistics():
    """float16 feature maps (StyleGANs' high-resolution layers) are accumulated in float32/64: the statistics equal
    those of the same maps in float32, where forming Z^T Z in float16 would overflow."""
    torch.manual_seed(0)
    z = (torch.randn(4, 8, 16) * 200).half()  # products of these exceed float16's range (65504)
    half, full = data_stats([z]), data_stats([z.float()])
    assert torch.isfinite(half.position).all()
    assert torch.allclose(half.position, full.position) and torch.allclose(half.channel, full.channel)
    assert float((z.float().transpose(1, 2) @ z.float()).abs().max()) > 65504


def test_power_iteration_estimates_the_largest_eigenvalue():
    from panda.factorisation import largest_eigenvalue
    a = torch.randn(300, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    m = a @ a.T
    assert largest_eigenvalue(m) == pytest.approx(float(torch.linalg.eigvalsh(m)[-1]), rel=0.02)
    assert largest_eigenvalue(torch.zeros(5, 5, dtype=torch.float64)) == 0.0


@pytest.mark.parametrize("s,rows", [(1024, [40, 30]), (2048, [3000, 6000, 100])])
def test_position_statistic_in_blocks_equals_the_full_product(s, rows):
    """Upper-triangle blocks, float32 partial sums flushed to float64: the same sum_i Z_i^T Z_i as one product
    (2 and 4 blocks per side; the second case flushes between batches)."""
    from panda.factorisation import _SymmetricGram
    g = torch.Generator().manual_seed(0)
    blocks = [torch.randn(r, s, generator=g) for r in rows]
    gram = _SymmetricGram(s, torch.device("cpu"))
    for x in blocks:
        gram.add(x)
    got = gram.result()
    want = sum(x.double().T @ x.double() for x in blocks)
    assert len(gram.edges) > 2  # blocked, not one product
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.diagonal().mean()))
    assert torch.equal(got, got.T)


def test_coarse_parts_keep_their_objective_on_the_fine_grid():
    from panda.factorisation import prolong, restrict
    g = torch.Generator().manual_seed(2)
    x = torch.rand(8 * 6, 30, generator=g, dtype=torch.float64)
    m = x @ x.T / (x ** 2).sum()
    coarse = torch.rand(4 * 3, 5, generator=g, dtype=torch.float64)
    fine = prolong(coarse, (8, 6))
    assert fine.shape == (48, 5) and (fine >= 0).all()
    # each 2 x 2 block of the fine grid holds its coarse value / 2
    assert torch.allclose(fine.reshape(8, 6, 5)[2:4, 4:6], coarse.reshape(4, 3, 5)[1, 2].expand(2, 2, 5) / 2)
    assert float(parts_objective(m, fine)) == pytest.approx(float(parts_objective(restrict(m, (8, 6)), coarse)), rel=1e-12)


def test_first_parts_on_a_large_grid_go_coarse_to_fine(monkeypatch):
    """Above COARSE_POSITIONS the starts run on a halved grid, the best of them is run on there to convergence (the
    starts stop at 1,000 iterations, and full-size iterations cost 4x as much), and only then polished at full size;
    the polished result is feasible and no worse than the coarse solution it started from (the same objective on the
    fine grid)."""
    from panda import factorisation
    from panda.factorisation import COARSE_POSITIONS, first_parts, prolong, restrict
    h = w = 48  # S = 2304 > 1024: one coarse level (24 x 24 = 576)
    assert h * w > COARSE_POSITIONS >= (h // 2) * (w // 2)
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blobs = torch.stack([torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0).flatten()
                         for cy, cx in [(10, 10), (10, 38), (38, 24)]], 1).double()  # (S, 3) smooth parts
    z = blobs @ torch.rand(3, 60, generator=g, dtype=torch.float64) + 0.01 * torch.rand(h * w, 60, generator=g, dtype=torch.float64)
    m = z @ z.T / (z ** 2).sum()
    calls, solve = [], factorisation.solve_parts
    monkeypatch.setattr(factorisation, "solve_parts",
                        lambda mm, x, *a, **k: calls.append((tuple(x.shape), x.clone())) or solve(mm, x, *a, **k))
    p = first_parts(m, 3, n_init=2, grid=(h, w))
    assert [shape for shape, _ in calls] == [(2, h * w // 4, 3), (h * w // 4, 3), (h * w, 3)]
    # the leader goes on from the better start, and the polish from the leader's end, carried up
    m_coarse = restrict(m, (h, w))
    leader = min(solve(m_coarse.float(), calls[0][1])[0], key=lambda c: float(parts_objective(m_coarse, c)))
    assert torch.equal(calls[1][1], leader)
    assert torch.equal(calls[2][1], prolong(solve(m_coarse.float(), leader)[0], (h, w)))
    monkeypatch.setattr(factorisation, "solve_parts", solve)
    coarse = first_parts(restrict(m, (h, w)), 3, n_init=2, grid=(h // 2, w // 2))
    assert p.shape == (h * w, 3) and (p >= 0).all()
    assert float(parts_objective(m, p)) <= float(parts_objective(m, prolong(coarse, (h, w)))) + 1e-12
    assert 1 + float(parts_objective(m, p)) < 0.05  # three smooth blobs: three parts explain nearly everything


def test_a_layer_whose_statistics_do_not_fit_in_memory_is_refused_before_extraction(celeba, monkeypatch):
    """A layer too large for the S x S statistics (a 256 x 256 layer needs about 80 GiB) fails at once, naming the
    largest grid that fits, instead of after minutes of extraction with an allocator error or the OOM killer."""
    from panda import factorisation
    assert factorisation.statistics_bytes(256 * 256) > 80 * 2**30 - 2**30
    assert factorisation.available_memory("cpu") > 0
    source = FeatureSource(celeba, "relu3", range(8))  # 16 x 16: 20 * 256^2 bytes = 1.25 MiB of statistics
    monkeypatch.setattr(factorisation, "available_memory", lambda device: 1 << 20)
    with pytest.raises(PandaError, match=r"layer 'relu3' has 16x16 = 256 positions.*at most about 15x15"):
        PandA(rank_parts=4).fit(source)
    assert source.extract_time == 0.0 and source._cache is None
    monkeypatch.setattr(factorisation, "available_memory", lambda device: 2 << 20)
    assert PandA(rank_parts=4, max_iter=1).fit(source).parts_.shape == (256, 4)  # enough memory: it fits


def test_the_default_feature_budget_follows_the_device_that_holds_the_maps(monkeypatch):
    """Feature maps stay on the device that computed them: on a GPU the budget is a quarter of the GPU's memory,
    not of the machine's (a 24 GB card must not be asked to hold 16 GiB of maps beside the generator)."""
    from types import SimpleNamespace

    from panda.features import default_memory_budget
    cpu = default_memory_budget("cpu")
    assert 0 < cpu <= 16 << 30
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=24 << 30))
    assert default_memory_budget("cuda:0") == 6 << 30
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80 << 30))
    assert default_memory_budget(torch.device("cuda")) == 16 << 30


def test_line_search_finds_the_quartic_minimum_on_the_unit_interval():
    """The exact line search's minimum over t in [0, 1] matches a 100,001-point grid's, is f at the t it returns,
    and never exceeds f(0)."""
    from panda.factorisation import _line_minimum
    g = torch.Generator().manual_seed(4)
    c = torch.randn(200, 5, generator=g, dtype=torch.float64)
    c[:50, 4] = c[:50, 4].abs() * 20  # steep quartics with interior minima
    t, v = _line_minimum(c)
    grid = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    values = (grid[None, :, None] ** torch.arange(5) * c[:, None, :]).sum(-1)  # (200, grid)
    assert ((t >= 0) & (t <= 1)).all()
    assert torch.allclose(v, (t[:, None] ** torch.arange(5) * c).sum(-1), atol=1e-12)
    assert (v <= values.min(1).values + 1e-9).all()
    assert (v <= c[:, 0] + 1e-15).all()


def _two_statistics(seed=3, s=24, n=60):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(s, n, generator=g, dtype=torch.float64)
    y = x * (1 + 0.3 * torch.rand(s, n, generator=g, dtype=torch.float64))
    return x @ x.T / (x ** 2).sum(), y @ y.T / (x ** 2).sum(), torch.rand(s, 4, generator=g, dtype=torch.float64)


def test_line_quartic_with_two_statistics_is_the_objective_along_the_line():
    """With a mixing the P-step's quadratic and quartic terms have different matrices (M, M2): the exact line search
    must still see f(x + t d) itself."""
    from panda.factorisation import _line_quartic
    m, m2, x = _two_statistics()
    d = torch.rand_like(x) - 0.5
    y, yd = torch.cat([m @ x, m2 @ x], -1)[None], torch.cat([m @ d, m2 @ d], -1)[None]  # [M x | M2 x]
    c = _line_quartic(x[None], d[None], y, yd)[0]
    single = _line_quartic(x[None], d[None], (m @ x)[None], (m @ d)[None])[0]  # M2 = M
    for t in (0.0, 0.3, 1.0, 2.5):
        poly = sum(float(c[i]) * t ** i for i in range(5))
        assert poly == pytest.approx(float(parts_objective(m, x + t * d, m2)), rel=1e-10, abs=1e-12)
        poly = sum(float(single[i]) * t ** i for i in range(5))
        assert poly == pytest.approx(float(parts_objective(m, x + t * d)), rel=1e-10, abs=1e-12)


def test_solve_parts_with_two_statistics_descends_to_a_stationary_point():
    from panda.factorisation import _parts_gradient
    m, m2, p0 = _two_statistics()
    f0 = float(parts_objective(m, p0, m2))
    p, _ = solve_parts(m, p0, max_iter=2000, tol=0, m2=m2)
    assert (p >= 0).all() and float(parts_objective(m, p, m2)) < f0

    def projected_gradient(q):  # zero exactly at the stationary points of f over P >= 0
        return float((q - (q - _parts_gradient(q, m @ q, m2 @ q)).clamp_min(0)).norm())
    assert projected_gradient(p) < 1e-3 * projected_gradient(p0)
    # and the single-matrix path is the m2 = m case
    a, _ = solve_parts(m, p0, max_iter=50, tol=0)
    b, _ = solve_parts(m, p0, max_iter=50, tol=0, m2=m)
    assert torch.allclose(a, b, atol=1e-10)


def test_solve_mixing_solves_the_lyapunov_equation():
    from panda.factorisation import mixing_error, solve_mixing
    g = torch.Generator().manual_seed(4)
    y = torch.randn(5, 40, generator=g, dtype=torch.float64)
    k = torch.rand(40, 40, generator=g, dtype=torch.float64)
    b, d = y @ y.T, y @ (k @ k.T / 40) @ y.T
    w = solve_mixing(b, d)
    assert torch.allclose(w, w.T) and float(torch.linalg.eigvalsh(w).min()) >= -1e-12
    assert torch.allclose(d @ w + w @ d, 2 * b, atol=1e-8 * float(b.abs().max()))
    best = mixing_error(w, b, d, 100.0)
    assert best < mixing_error(torch.eye(5, dtype=torch.float64), b, d, 100.0)
    for _ in range(5):  # the objective is convex in W: every symmetric perturbation is worse
        e = torch.randn(5, 5, generator=g, dtype=torch.float64) * 0.01
        assert mixing_error(w + e + e.T, b, d, 100.0) > best


def test_mixing_fit_lowers_the_error_and_reports_it_exactly(celeba):
    """The authors' code does not keep A orthonormal, so its model is A W A^T Z P P^T; fitted in that class panda's
    error only falls, A stays orthonormal, and the reported error is the data's."""
    from panda.factorisation import direction_grams
    source = FeatureSource(celeba, "relu3", range(96))
    plain = panda_factorise(source, 32, 6, random_state=0)
    res = panda_factorise(source, 32, 6, random_state=0, mixing=True)
    w = res.mixing
    assert plain.mixing is None and w.shape == (32, 32)
    assert torch.allclose(w, w.T, atol=1e-6) and float(torch.linalg.eigvalsh(w.double()).min()) >= -1e-6
    assert torch.allclose(res.appearances.T @ res.appearances, torch.eye(32), atol=1e-5)
    assert (res.parts >= 0).all()
    assert all(b <= a + 1e-9 for a, b in zip(res.errors, res.errors[1:]))
    assert res.errors[-1] < plain.errors[-1] - 1e-3
    assert res.errors[-1] == pytest.approx(relative_error(source, res.appearances, res.parts, w), rel=1e-4)
    # the per-direction Gram matrices sum to the position statistic of their directions
    a = res.appearances[:, :5]
    h = direction_grams(source, a)
    direct = sum(torch.einsum("brs,brt->st", a.T @ z, a.T @ z).double() for z in source)
    assert torch.allclose(h.sum(0), direct, rtol=1e-4, atol=1e-3)


def test_mixing_that_barely_helps_skips_its_statistics_pass(celeba, monkeypatch):
    """At an RGB layer (C = 3) the best W lowers the error by less than tol: the R_C S x S statistics' pass (the mixing
    fit's largest cost) is skipped and that W returned; at a wide layer it is not."""
    import panda.factorisation as fac
    original, calls = fac.direction_grams, []
    monkeypatch.setattr(fac, "direction_grams", lambda *a, **k: calls.append(1) or original(*a, **k))
    rgb = FeatureSource(celeba, "convTr5", range(24))
    plain = panda_factorise(rgb, 3, 6, random_state=0)
    res = panda_factorise(rgb, 3, 6, random_state=0, mixing=True, tol=1e-4)
    assert not calls and res.n_passes == plain.n_passes and len(res.errors) == len(plain.errors) + 1
    assert 0 <= plain.errors[-1] - res.errors[-1] <= 1e-4 * plain.errors[-1]
    assert res.errors[-1] == pytest.approx(relative_error(rgb, res.appearances, res.parts, res.mixing), rel=1e-4)
    assert torch.equal(res.parts, plain.parts)
    panda_factorise(FeatureSource(celeba, "relu3", range(24)), 8, 6, random_state=0, mixing=True, n_iter_max=2)
    assert calls == [1]


def test_mixing_needs_memory_for_its_matrices(celeba, monkeypatch):
    from panda import factorisation
    source = FeatureSource(celeba, "relu3", range(8))  # 16 x 16, R_C = 128: 128 MiB for the mixing's matrices
    monkeypatch.setattr(factorisation, "available_memory", lambda device: 8 << 20)
    with pytest.raises(PandaError, match=r"appearance mixing keeps 128 S x S matrices.*mixing_directions <= 4 "
                                         r"\(--mixing-directions\) or rank_appearance <= 5"):
        PandA(rank_parts=4, mixing=True).fit(source)
    assert source.extract_time == 0.0
    assert PandA(rank_parts=4, rank_appearance=5, max_iter=1, mixing=True).fit(source).mixing_.shape == (5, 5)
    # 4 directions of their own and one matrix for the rest's sum: 5 matrices, as R_C = 5
    assert PandA(rank_parts=4, max_iter=1, mixing=True, mixing_directions=4).fit(source).mixing_.shape == (128, 128)
    with pytest.raises(PandaError, match="mixing='yes': give True or False"):
        PandA(rank_parts=4, mixing="yes").fit(source)
    for bad in (0, 2.5, True):
        with pytest.raises(PandaError, match=f"mixing_directions={bad!r}: give a whole number >= 1"):
            PandA(rank_parts=4, mixing=True, mixing_directions=bad).fit(source)
    # directions without mixing would be ignored: refused instead, by the estimator and the function alike
    with pytest.raises(PandaError, match="mixing_directions=4 applies to a fit with mixing: pass mixing=True"):
        PandA(rank_parts=4, mixing_directions=4).fit(source)
    with pytest.raises(PandaError, match="mixing_directions=4 applies to a fit with mixing"):
        panda_factorise(source, 128, 4, mixing_directions=4)


def _distinct(values: torch.Tensor, tol: float = 1e-5) -> int:
    v = values.sort().values
    return 1 + int((v[1:] - v[:-1] > tol * float(v.abs().max())).sum())


@pytest.mark.parametrize("rank_appearance, k", [(128, 64), (32, 24)])
def test_mixing_with_fewer_directions_refits_those_and_one_for_the_rest(celeba, monkeypatch, rank_appearance, k):
    """mixing_directions=k: k of W's eigenvectors keep eigenvalues of their own and the rest share one, from k S x S
    matrices (plus the rest's sum: free from M where A spans every channel, gathered in the same pass otherwise).
    The error reported is the data's, and never above the first W's."""
    import panda.factorisation as fac
    original, calls = fac.direction_grams, []
    monkeypatch.setattr(fac, "direction_grams",
                        lambda b, d, rest=None: calls.append((d.shape[1], None if rest is None else rest.shape[1]))
                        or original(b, d, rest))
    source = FeatureSource(celeba, "relu3", range(48))
    res = panda_factorise(source, rank_appearance, 6, random_state=0, mixing=True, mixing_directions=k)
    rest = None if rank_appearance == 128 else rank_appearance - k
    assert calls == [(k, rest)]
    w = res.mixing.double()
    assert torch.allclose(w, w.T, atol=1e-6) and float(torch.linalg.eigvalsh(w).min()) >= -1e-6
    assert res.errors[-1] == pytest.approx(relative_error(source, res.appearances, res.parts, res.mixing), rel=1e-4)
    assert all(b <= a + 1e-9 for a, b in zip(res.errors, res.errors[1:]))
    plain_steps = 1 if rank_appearance == 128 else len(panda_factorise(source, rank_appearance, 6, random_state=0).errors)
    assert len(res.errors) > plain_steps + 1  # the alternation improved on the first W here: W has its own form
    assert _distinct(torch.linalg.eigvalsh(w)) <= k + 1


def test_direction_grams_appends_the_rest_as_one_sum(celeba):
    from panda.factorisation import direction_grams
    source = FeatureSource(celeba, "relu3", range(20))
    a = torch.linalg.qr(torch.randn(128, 9, generator=torch.Generator().manual_seed(0)))[0]
    h = direction_grams(source, a[:, :3], rest=a[:, 3:])
    assert h.shape == (4, 256, 256)
    assert torch.allclose(h[:3], direction_grams(source, a[:, :3]), rtol=1e-5, atol=1e-4)
    assert torch.allclose(h[3], direction_grams(source, a[:, 3:]).sum(0), rtol=1e-4, atol=1e-3)


def test_solve_parts_with_one_matrix_per_problem_equals_separate_solves():
    """Refinement solves many images at once: K matrices (K, S, S) in one batched product per iteration, each
    problem with its own first step, give what K separate solves give."""
    g = torch.Generator().manual_seed(5)
    ms, ps = [], []
    for scale in (1.0, 30.0, 0.01):  # very different scales: each problem needs its own step size
        x = torch.rand(16, 40, generator=g, dtype=torch.float64)
        ms.append(scale * x @ x.T / (x ** 2).sum())
        ps.append(torch.rand(16, 3, generator=g, dtype=torch.float64))
    together, _ = solve_parts(torch.stack(ms), torch.stack(ps), max_iter=60, tol=0)
    for m, p, t in zip(ms, ps, together):
        alone, _ = solve_parts(m, p, max_iter=60, tol=0)
        assert torch.allclose(t, alone, rtol=1e-8, atol=1e-10)


def test_small_p_steps_run_on_one_cpu_thread_and_leave_other_threads_alone(monkeypatch):
    """A P-step of small products runs on one intra-op thread (waking others for each of its hundred small
    operations an iteration costs more than they save), a large one on all. No other thread's count changes: not
    the caller's (also after an error), and not that of a thread started while the P-step runs (with
    torch.set_num_threads(1) around the P-step, such a thread would keep one thread for good)."""
    import threading

    import panda.factorisation as fac
    seen, started = [], []

    def count_in_new_thread():
        t = threading.Thread(target=lambda: started.append(torch.get_num_threads()))
        t.start()
        t.join()

    original = fac._spg_step
    monkeypatch.setattr(fac, "_spg_step", lambda *a: seen.append(torch.get_num_threads()) or count_in_new_thread()
                        or original(*a))
    m, _, p0 = _two_statistics()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small, _ = solve_parts(m, p0, max_iter=3, tol=0)
        assert set(seen) == {1} and set(started) == {2} and torch.get_num_threads() == 2
        seen.clear()
        monkeypatch.setattr(fac, "SMALL_PRODUCT", 0)
        inline, _ = solve_parts(m, p0, max_iter=3, tol=0)
        assert set(seen) == {2} and torch.get_num_threads() == 2
        assert torch.allclose(small, inline, rtol=1e-5, atol=1e-7)  # the same steps, wherever they run
        monkeypatch.setattr(fac, "SMALL_PRODUCT", 1 << 24)
        seen.clear()
        many = torch.rand(128, m.shape[0], 12, dtype=m.dtype)  # 128 problems' parts: past SMALL_ITERATE entries
        assert many.numel() >= fac.SMALL_ITERATE
        solve_parts(m.expand(128, -1, -1).contiguous(), many, max_iter=3, tol=0)
        assert set(seen) == {2}  # a small product, but parts large enough for the caller's threads
        with torch.no_grad():  # the caller's autograd modes hold on the worker too
            assert not solve_parts(m.clone().requires_grad_(), p0, max_iter=3, tol=0)[0].requires_grad
        with torch.inference_mode():
            assert solve_parts(m, p0, max_iter=3, tol=0)[0].is_inference()
        monkeypatch.setattr(fac, "_spg_step", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):  # the worker's error reaches the caller
            solve_parts(m, p0, max_iter=3, tol=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_failed_graph_capture_warns_and_leaves_the_iterate_as_it_was(monkeypatch):
    """Where CUDA-graph capture fails the P-step runs eagerly: a warning says so (a GPU benchmark would otherwise
    time eager steps as the graphs' speed), and the warm-up steps taken before capture are undone."""
    import contextlib

    import panda.factorisation as fac

    class _Stream:
        def __init__(self, *args):
            pass

        def wait_stream(self, other):
            pass

    def no_capture():
        raise RuntimeError("capture is not supported here")

    # the CUDA calls around the capture, as no-ops on the CPU, up to the graph itself, which fails
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", no_capture)
    m, _, p = _two_statistics()
    x = p[None].float()
    m = m.float()
    lam0 = torch.full((1, 1, 1), 0.1, dtype=torch.float64)
    state = fac._SpgState(x, fac._times(m, x), lam0.clone())
    before = {name: getattr(state, name).clone() for name in ("x", "y", "g", "lam")}
    with pytest.warns(RuntimeWarning, match="CUDA-graph capture failed.*run eagerly"):
        assert fac._graphed_steps(m, state, None, (lam0 * 1e-6, lam0 * 1e6), 4) is None
    for name, value in before.items():
        assert torch.equal(getattr(state, name), value), name


def test_mixing_with_too_few_directions_keeps_the_first_w(celeba):
    """With 6 directions of 128 on 48 samples, one eigenvalue for the other 122 costs more than refitting gains: the
    fit returns the first W (the Lyapunov solution, what a fit that skips the alternation returns) and its parts."""
    source = FeatureSource(celeba, "relu3", range(48))
    few = panda_factorise(source, 128, 6, random_state=0, mixing=True, mixing_directions=6)
    first = panda_factorise(source, 128, 6, random_state=0, mixing=True, tol=1.0)  # W's gain < tol: no alternation
    assert few.errors == first.errors and few.n_passes == first.n_passes + 1
    assert torch.allclose(few.mixing, first.mixing, atol=1e-6) and torch.equal(few.parts, first.parts)


def _blocks(n: int = 40, c: int = 16, blocks: int = 4, width: int = 4, seed: int = 0) -> torch.Tensor:
    """(n, c, blocks * width) maps constant on each block of positions, each block in channels of its own: M is block
    diagonal, and R_S = blocks parts (the blocks' indicators) reconstruct them exactly."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.zeros(n, c, blocks * width, dtype=torch.float64)
    per = c // blocks
    for b in range(blocks):
        z[:, b * per:(b + 1) * per, b * width:(b + 1) * width] = torch.randn(n, per, 1, generator=gen, dtype=torch.float64)
    return z


def _statistic(z: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ncs,nct->st", z, z) / z.square().sum()


def test_part_gains_are_the_objective_lost_by_dropping_each_part():
    from panda.factorisation import PsdFactor, part_gains
    gen = torch.Generator().manual_seed(3)
    l = torch.randn(30, 12, generator=gen, dtype=torch.float64)
    p = torch.rand(30, 5, generator=gen, dtype=torch.float64)
    m = l @ l.T
    brute = torch.stack([parts_objective(m, torch.cat([p[:, :k], p[:, k + 1:]], 1)) - parts_objective(m, p)
                         for k in range(5)])
    assert torch.allclose(part_gains(m, p), brute, rtol=1e-9, atol=1e-9)
    assert torch.allclose(part_gains(PsdFactor(l), p), brute, rtol=1e-9, atol=1e-9)


def test_reseed_candidates_put_the_weakest_part_where_the_fit_misses_most():
    """A duplicated part is the weakest; its candidate is R's column at R's largest diagonal entry, clipped at 0,
    R = (I - P P^T) M (I - P P^T), for M dense or factored; a place already seeded is not seeded again."""
    from panda.factorisation import PsdFactor, part_gains, reseed_candidates
    z = _blocks()
    m = _statistic(z)
    ind = torch.zeros(16, 4, dtype=torch.float64)
    for b in range(4):
        ind[4 * b:4 * b + 4, b] = 0.5  # unit-norm block indicators
    # block 0 covered by two half-copies, blocks 1 and 2 by one each, block 3 by none
    p = torch.stack([ind[:, 0] / 2 ** 0.5, ind[:, 0] / 2 ** 0.5, ind[:, 1], ind[:, 2]], 1)
    q = torch.eye(16, dtype=torch.float64) - p @ p.T
    r = q @ m @ q
    worst = int(r.diagonal().argmax())
    assert 12 <= worst < 16  # the uncovered block
    l = z.permute(2, 0, 1).reshape(16, -1) / z.square().sum().sqrt()  # M = L L^T
    for stat in (m, PsdFactor(l)):
        cands = reseed_candidates(stat, p)
        # one candidate: once block 3 is seeded nothing else is missed (block 0's two copies reconstruct it exactly)
        assert cands.shape == (1, 16, 4) and (cands >= 0).all()
        first = cands[0]
        changed = [k for k in range(4) if not torch.allclose(first[:, k], p[:, k])]
        assert changed == [int(part_gains(m, p).argmin())] and changed[0] in (0, 1)  # one of the two copies
        seed = r[:, worst].clamp_min(0)
        assert torch.allclose(first[:, changed[0]] / first[:, changed[0]].norm(), seed / seed.norm(), atol=1e-6)
        # every candidate changes exactly one part
        assert all(sum(not torch.allclose(c[:, k], p[:, k]) for k in range(4)) == 1 for c in cands)


def test_reseeding_escapes_a_local_minimum_that_the_p_step_cannot_leave():
    """Parts that cover one block twice and another not at all are a fixed point of the P-step (the uncovered
    block's gradient is exactly 0: it shares no channel with the others). Re-seeding moves a copy there and finds
    the exact solution; without rounds nothing changes."""
    from panda.factorisation import reseed_parts
    m = _statistic(_blocks())
    ind = torch.zeros(16, 4, dtype=torch.float64)
    for b in range(4):
        ind[4 * b:4 * b + 4, b] = 0.5
    stuck = torch.stack([ind[:, 0] / 2 ** 0.5, ind[:, 0] / 2 ** 0.5, ind[:, 1], ind[:, 2]], 1)
    solved, _ = solve_parts(m, stuck)
    assert 1 + float(parts_objective(m, solved)) > 0.2  # still missing block 3
    p, kept = reseed_parts(m, stuck, rounds=3)
    assert kept >= 1 and (p >= 0).all()
    assert 1 + float(parts_objective(m, p)) < 1e-4
    same, none = reseed_parts(m, stuck, rounds=0)
    assert none == 0 and torch.equal(same, stuck)


def test_reseeding_in_a_fit_never_raises_the_error_and_is_recorded(celeba, tmp_path):
    source = FeatureSource(celeba, "relu2", range(96))
    stats = data_stats(source, (8, 8))
    plain = PandA(rank_parts=16, random_state=0).fit(source, stats=stats)
    again = PandA(rank_parts=16, random_state=0, reseed=4).fit(source, stats=stats)
    assert again.train_error_ <= plain.train_error_ + 1e-6
    loaded = PandA.load(again.save(tmp_path / "r.safetensors"))
    assert loaded.reseed == 4 and torch.equal(loaded.parts_, again.parts_)


def test_the_p_step_reads_the_device_once_per_convergence_check(monkeypatch):
    """Issue 12: no host synchronisation per P-step iteration. On a GPU every value read back to Python (.item(),
    bool(), float(), a data-dependent shape) stalls until the device has finished; the P-step may read one per
    convergence check (every ``check_every`` iterations) and no more, whatever the statistic (dense, batched, a
    factor, two statistics) or the support. Counted on the CPU through the operators such reads dispatch to."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import panda.factorisation as fac
    reads = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
             torch.ops.aten.nonzero.default, torch.ops.aten.masked_select.default}

    class CountReads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in reads:
                CountReads.count += 1
            return func(*args, **(kwargs or {}))

    # the mode is per thread: the P-step runs in the caller's thread here, not on panda's one-thread worker
    monkeypatch.setattr(fac, "_on_one_thread", lambda *a: False)
    m, m2, p = _two_statistics()
    support = torch.rand(p.shape, generator=torch.Generator().manual_seed(0)) < 0.7
    low_rank = torch.linalg.cholesky(m + 1e-6 * torch.eye(len(m), dtype=m.dtype))[:, :10]
    cases = {"dense, 3 starts": (m, torch.stack([p, 2 * p, p.flip(0)]), {}),
             "support": (m, p, {"support": support}),
             "two statistics": (m, p, {"m2": m2}),
             "one matrix per problem": (torch.stack([m, m2]), torch.stack([p, p]), {}),
             "factor": (fac.PsdFactor(low_rank), p, {})}
    for name, (stat, start, extra) in cases.items():
        for max_iter, check_every in ((100, 10), (300, 10), (300, 50)):
            CountReads.count = 0
            with CountReads():
                _, iterations = solve_parts(stat, start, max_iter=max_iter, tol=0, check_every=check_every, **extra)
            assert iterations == max_iter
            assert 0 < CountReads.count <= max_iter // check_every, (name, max_iter, check_every, CountReads.count)
