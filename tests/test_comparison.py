"""Comparing two fits (panda.comparison, `panda compare`): parts matched one to one, appearance subspaces."""

import copy
import itertools

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from panda import PandaError
from panda.cli import main
from panda.comparison import align, aligned_order, compare, match
from panda.features import FeatureSource, capture
from panda.model import PandA


@pytest.mark.parametrize("shape", [(5, 5), (3, 6), (6, 3), (1, 4), (4, 4)])
def test_matching_finds_the_best_total_as_brute_force_does(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        sim = rng.random(shape)
        pairs = match(sim)
        assert len(pairs) == min(shape)
        assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        small, large = sorted(shape)
        best = max(sum((sim[r, c] if shape[0] <= shape[1] else sim[c, r]) for r, c in zip(range(small), perm))
                   for perm in itertools.permutations(range(large), small))
        assert sum(sim[r, c] for r, c in pairs) == pytest.approx(best)


def test_matching_refuses_non_finite_input():
    with pytest.raises(PandaError, match="finite"):
        match(np.array([[1.0, np.nan]]))


def test_a_fit_against_itself_and_a_permuted_copy(model):
    same = compare(model, model)
    assert same.pairs and all(a == b for a, b in same.pairs)
    assert same.matched == pytest.approx([1.0] * model.n_parts, abs=1e-5)
    assert same.overlap == pytest.approx([1.0] * len(same.ks), abs=1e-5)
    order = torch.randperm(model.n_parts, generator=torch.Generator().manual_seed(0))
    shuffled = model.reorder_parts(order.tolist())
    moved = compare(model, shuffled)
    assert sorted(moved.pairs) == sorted((int(order[b]), b) for b in range(model.n_parts))


def test_reordered_parts_are_the_same_fit_numbered_otherwise(celeba, model, tmp_path):
    order = torch.randperm(model.n_parts, generator=torch.Generator().manual_seed(1)).tolist()
    before = model.parts_.clone()
    named = copy.copy(model)
    named.part_names_ = {order[0]: "eyes", order[3]: "mouth"}
    moved = named.reorder_parts(order)
    assert torch.equal(moved.parts_, model.parts_[:, order]) and torch.equal(model.parts_, before)
    assert torch.equal(moved.coef_energy_[:, 2], model.coef_energy_[:, order[2]])
    assert moved.part_names_ == {0: "eyes", 3: "mouth"} and named.part_names_ == {order[0]: "eyes", order[3]: "mouth"}
    assert moved.top_appearances(2, 5, by="specific") == model.top_appearances(order[2], 5, by="specific")
    z = capture(celeba, celeba.sample(range(500, 508)), "relu2")
    assert torch.allclose(moved.reconstruct(z), model.reconstruct(z), atol=1e-5)  # P P^T does not see the order
    loaded = PandA.load(moved.save(tmp_path / "moved.safetensors"))
    assert torch.equal(loaded.parts_, moved.parts_) and loaded.part_names_ == moved.part_names_
    with pytest.raises(PandaError, match="each of 0..7 once"):
        model.reorder_parts([0, 0, 1, 2, 3, 4, 5, 6])
    with pytest.raises(PandaError, match="each of 0..7 once"):
        model.reorder_parts(range(7))


def test_align_numbers_a_refit_after_the_first(celeba, model):
    order = torch.randperm(model.n_parts, generator=torch.Generator().manual_seed(2)).tolist()
    back, result = align(model, model.reorder_parts(order))
    assert torch.equal(back.parts_, model.parts_) and len(result.pairs) == model.n_parts
    other = PandA(rank_parts=10, random_state=1).fit(FeatureSource(celeba, "relu2", range(1000, 1256)))
    aligned, result = align(model, other)
    partner = dict(result.pairs)
    assert len(partner) == model.n_parts and sorted(aligned_order(result)) == list(range(10))
    for k in range(model.n_parts):  # part k of the aligned fit: the first fit's part k's partner
        assert torch.equal(aligned.parts_[:, k], other.parts_[:, partner[k]])
    assert all(a == b for a, b in compare(model, aligned).pairs)  # compared again, part k pairs with part k
    # names: only a partner at least 0.9 similar takes one, at its new number
    named = copy.copy(model)
    named.part_names_ = {k: f"region {k}" for k in range(model.n_parts)}
    kept, result = align(named, other, names=True)
    close = {a for a, b in result.pairs if float(result.similarity[a, b]) >= 0.9}
    assert kept.part_names_ == {a: f"region {a}" for a in close} and 0 < len(close) < model.n_parts
    assert align(named, other)[0].part_names_ == {}  # without names=True none are given
    # a name given by hand stays one given by hand on its partner (FaceMesh naming then keeps it)
    by_hand = min(close)
    named.name_part(by_hand, "eyes")
    assert align(named, other, names=True)[0].hand_named_ == {by_hand}


def test_two_seeds_share_most_parts_and_the_leading_appearances(celeba, model):
    """Another fit (other samples, other starts) of the same layer: the leading appearances are nearly the same
    subspace, and the parts match far above unrelated maps."""
    other = PandA(rank_parts=8, random_state=1).fit(FeatureSource(celeba, "relu2", range(1000, 1256)))
    result = compare(model, other)
    assert len(result.pairs) == 8 and result.matched == sorted(result.matched, reverse=True)
    assert np.mean(result.matched) > 0.6
    assert result.overlap[0] > 0.9 and result.overlap[0] > 100 * result.chance[0]
    random_parts = copy.copy(other)
    random_parts.parts_ = torch.rand(64, 8, generator=torch.Generator().manual_seed(0)) ** 8
    assert np.mean(compare(model, random_parts).matched) < np.mean(result.matched)


def test_different_ranks_leave_parts_unmatched_and_shapes_must_agree(celeba, model):
    fewer = PandA(rank_parts=5).fit(FeatureSource(celeba, "relu2", range(128)))
    result = compare(model, fewer)
    assert len(result.pairs) == 5 and len(result.unmatched()[0]) == 3 and result.unmatched()[1] == []
    other_layer = PandA(rank_parts=4).fit(FeatureSource(celeba, "relu3", range(32)))
    with pytest.raises(PandaError, match="same layer"):
        compare(model, other_layer)


def test_compare_command(factor_file, celeba, tmp_path):
    other = PandA(rank_parts=6, random_state=2).fit(FeatureSource(celeba, "relu2", range(128)))
    second = other.save(tmp_path / "other.safetensors")
    out = tmp_path / "c"
    r = CliRunner().invoke(main, ["compare", str(factor_file), str(second), "--save-arrays", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "6 matched one to one" in r.output and "Unmatched: celeba.safetensors parts" in r.output
    for name in ("compare.png", "compare.md", "compare.npz"):
        assert (out / name).is_file()
    data = np.load(out / "compare.npz")
    assert data["similarity"].shape == (8, 6) and data["pairs"].shape == (6, 2)
    aligned = tmp_path / "aligned.safetensors"
    r = CliRunner().invoke(main, ["compare", str(factor_file), str(second), "--align", str(aligned),
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "renumbered" in r.output
    expected = other.parts_[:, aligned_order(compare(PandA.load(factor_file), other))]
    assert torch.equal(PandA.load(aligned).parts_, expected)
    r = CliRunner().invoke(main, ["compare", str(factor_file), str(second), "--align", str(aligned),
                                  "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "--overwrite" in r.output and not (tmp_path / "e").exists()
    r = CliRunner().invoke(main, ["compare", str(factor_file), str(second), "--keep-names", "--out", str(tmp_path / "f")])
    assert r.exit_code == 2 and "--align OUT" in r.output and not (tmp_path / "f").exists()
    r = CliRunner().invoke(main, ["compare", str(factor_file), str(second), "--align", str(aligned), "--overwrite",
                                  "--keep-names", "--out", str(out)])
    assert r.exit_code == 0 and "names kept: none" in r.output  # the first fit has no names to give
    r = CliRunner().invoke(main, ["compare", str(factor_file), str(tmp_path / "missing.safetensors"),
                                  "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "missing.safetensors" in r.output and not (tmp_path / "d").exists()


def test_fit_align_to_numbers_a_new_fit_after_an_earlier_one(factor_file, tmp_path):
    out = tmp_path / "seed3.safetensors"
    r = CliRunner().invoke(main, ["fit", "-n", "256", "-rs", "8", "--seed", "3", "--background-samples", "0",
                                  "--align-to", str(factor_file), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "parts numbered after celeba.safetensors's" in r.output
    assert all(a == b for a, b in compare(PandA.load(factor_file), PandA.load(out)).pairs)
    r = CliRunner().invoke(main, ["fit", "-n", "64", "--keep-names", "--out", str(tmp_path / "k.safetensors")])
    assert r.exit_code == 2 and "--align-to" in r.output
    r = CliRunner().invoke(main, ["fit", "-n", "64", "--align-to", str(tmp_path / "gone.safetensors"),
                                  "--out", str(tmp_path / "k.safetensors")])
    assert r.exit_code == 2 and "gone.safetensors' does not exist" in r.output and "generator batch" not in r.output
    r = CliRunner().invoke(main, ["fit", "-n", "64", "--layer", "relu3", "--align-to", str(factor_file),
                                  "--out", str(tmp_path / "other.safetensors")])
    assert r.exit_code == 2 and "is a fit of layer relu2" in r.output and not (tmp_path / "other.safetensors").exists()


def test_comparison_figure_names_the_named_pairs(model):
    from panda.figures import _pair_names, comparison_figure
    named = copy.copy(model)
    named.part_names_ = {3: "mouth", 5: "eyes"}
    assert _pair_names(named, named, 3, 3) == "\nmouth" and _pair_names(named, model, 5, 5) == "\neyes ~ -"
    assert _pair_names(model, model, 3, 3) == ""
    result = compare(named, named)
    plain = comparison_figure(model, model, compare(model, model))
    labelled = comparison_figure(named, named, result)
    assert labelled.width == plain.width and labelled.height > plain.height  # a third label line where named
