"""Choosing R_S (panda.selection, `panda ranks`): fits at several ranks on one shared statistics pass."""

import copy
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from panda import PandaError
from panda.cli import main, parse_ranks
from panda.comparison import compare
from panda.factorisation import data_stats
from panda.features import FeatureArray, FeatureSource, capture
from panda.figures import ranks_figure, ranks_plot
from panda.landmarks import CELLS, REGIONS
from panda.model import PandA
from panda.naming import PartRegions
from panda.selection import MAX_RANKS, RankSweep, check_rank_list, default_ranks, rank_sweep
from panda.tables import ranks_markdown


@pytest.fixture(scope="module")
def maps(celeba):
    """relu2 features of 192 training and 48 held-out seeds, (N, 256, 8, 8)."""
    return capture(celeba, celeba.sample(range(192)), "relu2"), capture(celeba, celeba.sample(range(500, 548)), "relu2")


@pytest.fixture(scope="module")
def sweep(maps):
    train, heldout = maps
    return rank_sweep(FeatureArray(train, "relu2"), [8, 2, 4], FeatureArray(heldout, "relu2"), max_iter=5)


def test_each_fit_of_a_sweep_is_the_fit_on_its_own(maps, sweep):
    """Sharing the statistics pass changes nothing: every rank's factors and errors are those of PandA(rank).fit."""
    train, heldout = maps
    assert sweep.ranks == [2, 4, 8]  # sorted
    for rank, model in zip(sweep.ranks, sweep.models):
        alone = PandA(rank_parts=rank, max_iter=5).fit(FeatureArray(train, "relu2"))
        alone.score(FeatureArray(heldout, "relu2"))
        assert model.n_parts == rank
        assert torch.allclose(model.parts_, alone.parts_, atol=1e-5)
        assert torch.allclose(model.appearances_.abs(), alone.appearances_.abs(), atol=1e-4)
        assert model.train_error_ == pytest.approx(alone.train_error_, rel=1e-5)
        assert model.heldout_error_ == pytest.approx(alone.heldout_error_, rel=1e-5)
        assert model.n_passes_ == alone.n_passes_  # the shared pass is counted in each file, as on its own
        assert (model.parts_ >= 0).all()


def test_more_parts_reconstruct_better(sweep):
    assert sweep.train_errors[0] > sweep.train_errors[1] > sweep.train_errors[2]
    assert sweep.heldout_errors[0] > sweep.heldout_errors[2]
    rows = sweep.rows()
    assert np.isnan(rows[0]["fall_per_part"])
    assert rows[1]["fall_per_part"] == pytest.approx((rows[0]["heldout_error"] - rows[1]["heldout_error"]) / 2)
    arrays = sweep.as_arrays()
    assert arrays["parts_rs4"].shape == (4, 8, 8) and list(arrays["ranks"]) == [2, 4, 8]


def test_the_statistics_pass_is_shared(celeba):
    """A streamed source (nothing kept in memory) is generated once for the statistics, then twice per rank."""
    calls = []
    source = FeatureSource(celeba, "relu2", range(64), memory_budget=0)
    original = source._generate

    def counting(desc):
        calls.append(desc)
        return original(desc)

    source._generate = counting
    result = rank_sweep(source, [2, 3], max_iter=2)
    assert len(calls) == 1 + 2 * 2
    assert all(np.isnan(result.heldout_errors))


def test_statistics_of_another_source_are_refused(maps):
    train, _ = maps
    stats = data_stats(FeatureArray(train[:100], "relu2"), (8, 8))
    with pytest.raises(PandaError, match="data_stats"):
        PandA(rank_parts=2).fit(FeatureArray(train, "relu2"), stats=stats)


def test_rank_lists_are_checked_before_any_work():
    assert check_rank_list([8, 2], (16, 4, 4)) == [2, 8]
    with pytest.raises(PandaError, match="given twice"):
        check_rank_list([4, 4], (16, 4, 4))
    with pytest.raises(PandaError, match="at least one"):
        check_rank_list([], (16, 4, 4))
    with pytest.raises(PandaError, match="H\\*W=16"):
        check_rank_list([4, 17], (16, 4, 4))
    with pytest.raises(PandaError, match="rank_appearance=20"):
        check_rank_list([4], (16, 4, 4), rank_appearance=20)
    with pytest.raises(PandaError, match=f"at most {MAX_RANKS}"):
        check_rank_list(list(range(1, MAX_RANKS + 2)), (16, 16, 16))
    assert default_ranks((16, 8, 8)) == [4, 8, 12, 16, 24, 32, 40, 48]
    assert default_ranks((16, 3, 3)) == [4, 8, 9]
    assert default_ranks((16, 4, 4)) == [4, 8, 12, 16]
    assert parse_ranks("4-6,10") == [4, 5, 6, 10]
    with pytest.raises(PandaError, match="8,16,24"):
        parse_ranks("eight")
    with pytest.raises(PandaError, match=f"more than {MAX_RANKS} ranks"):
        parse_ranks("1-100")


def _regions(purity: dict[str, float]) -> PartRegions:
    """Three parts, part i sitting on REGIONS[i] with the given share of its mass (the rest on the background)."""
    share = torch.zeros(3, len(CELLS))
    for i, r in enumerate(REGIONS):
        share[i, CELLS.index(r)] = purity[r]
        share[i, CELLS.index("background")] = 1 - purity[r]
    area = torch.tensor([0.02, 0.02, 0.02, 0.3, 0.64])
    return PartRegions(share, area, 10)


def test_the_semantic_choice_is_the_smallest_rank_where_every_region_passes(sweep):
    low, high = {"eyes": 0.1, "nose": 0.5, "mouth": 0.5}, {"eyes": 0.3, "nose": 0.5, "mouth": 0.4}
    faked = RankSweep(sweep.ranks, sweep.models, 0.0, 0.0, [_regions(low), _regions(high), _regions(high)], 10)
    assert faked.purities()["eyes"] == pytest.approx([0.1, 0.3, 0.3])
    assert faked.semantic_choice() == 4
    assert faked.semantic_choice(purity=0.35) is None
    assert sweep.semantic_choice() is None and sweep.purities() is None
    text = ranks_markdown(faked, "g", "relu2", 192, 48)
    assert "**4**" in text and "eyes purity" in text
    assert "**" not in ranks_markdown(sweep, "g", "relu2", 192, 48)
    assert "4 random starts of the parts)" in ranks_markdown(sweep, "g", "relu2", 192, 48)  # how it was fitted
    assert "--reseed 8" not in ranks_markdown(sweep, "g", "relu2", 192, 48)  # R_S up to 8: no hint
    high = RankSweep([2, 4, 24], sweep.models, 0.0, 0.0)  # labelled as if the last rank were 24
    assert "--reseed 8" in ranks_markdown(high, "g", "relu2", 192, 48)
    reseeded = [copy.copy(m) for m in sweep.models]
    reseeded[0].reseed = 8
    assert "--reseed 8" not in ranks_markdown(RankSweep([2, 4, 24], reseeded, 0.0, 0.0), "g", "relu2", 192, 48)
    plot = ranks_plot(faked)
    assert plot.width > ranks_plot(sweep).width  # the purity panel beside the errors


def test_chained_fits_number_each_rank_after_the_previous(sweep):
    """Matched parts of consecutive ranks get the same number (the same colour in ranks.png); the fits are the same
    ones, renumbered, and the sweep's own models are untouched."""
    before = [m.parts_.clone() for m in sweep.models]
    chained = sweep.chained()
    assert len(chained) == len(sweep.models) and chained[0] is sweep.models[0]
    for prev, cur, own in zip(chained, chained[1:], sweep.models[1:]):
        assert all(a == b for a, b in compare(prev, cur).pairs)  # part k of one rank pairs with part k of the next
        order = [int(torch.where((own.parts_ == cur.parts_[:, [k]]).all(0))[0][0]) for k in range(cur.n_parts)]
        assert sorted(order) == list(range(own.n_parts))  # a permutation of the fit's own parts
    assert all(torch.equal(m.parts_, p) for m, p in zip(sweep.models, before))


def test_ranks_figure_has_a_row_per_rank(sweep, celeba):
    images = celeba.render(range(3))
    fig = ranks_figure(sweep, images, [0, 1, 2])
    one = ranks_figure(RankSweep(sweep.ranks[:1], sweep.models[:1], 0.0, 0.0), images, [0, 1, 2])
    assert fig.height > 2.5 * (one.height - 60) and fig.width == one.width


def test_ranks_command_writes_table_pictures_and_factor_files(tmp_path):
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["ranks", "-n", "96", "-rs", "2,4", "--heldout", "32", "--max-iter", "3",
                                  "--save-factors", "--save-arrays", "--stability", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert re.search(r"^\| 4 \| 0\.\d{4} \| 0\.\d{4} \| 0\.\d{4} \| [\d.]+ \| \d of 4 \| [01]\.\d\d \|$", r.output,
                     re.M), r.output
    for name in ("ranks.png", "errors.png", "ranks.md", "ranks.npz", "rs2.safetensors", "rs4.safetensors"):
        assert (out / name).is_file(), name
    model = PandA.load(out / "rs4.safetensors")
    assert model.n_parts == 4 and model.n_heldout_ == 32 and model.background_ is not None
    assert model.n_samples_ == 96
    assert list(np.load(out / "ranks.npz")["ranks"]) == [2, 4]


@pytest.mark.parametrize("args, match", [
    (["-rs", "4,4"], "given twice"),
    (["-rs", "65"], "H*W=64"),
    (["-rs", "x"], "8,16,24"),
    (["--layer", "nope"], "nope"),
    (["-rc", "300"], "rank_appearance=300"),
])
def test_bad_ranks_input_is_one_line_and_writes_nothing(tmp_path, args, match):
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["ranks", "-n", "32", *args, "--out", str(out)])
    assert r.exit_code == 2 and match in r.output, r.output
    assert not out.exists()


def test_ranks_on_your_own_latents(tmp_path):
    """--latent: the fits are of the file's latents (all of them), and ranks.png draws the first of them."""
    z = np.random.default_rng(1).standard_normal((48, 100)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["ranks", "--latent", str(tmp_path / "z.npy"), "-rs", "2,3", "--heldout", "8",
                                  "--max-iter", "2", "--save-factors", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    model = PandA.load(out / "rs3.safetensors")
    assert model.n_samples_ == 48 and model.data_ == "latents"
    r = CliRunner().invoke(main, ["ranks", "--latent", str(tmp_path / "z.npy"), "-n", "10", "--out", str(out)])
    assert r.exit_code == 2 and "not both" in r.output


def test_ranks_stability_on_your_own_latents_fits_each_half(tmp_path, monkeypatch):
    """--stability with --latent: a file holds no other samples, so every rank is fitted on the first half of its
    latents and again on the second half (said on stderr), and a file of one latent is refused."""
    import panda.cli as cli
    z = np.random.default_rng(2).standard_normal((49, 100)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    seen = {}
    real = cli.rank_sweep
    monkeypatch.setattr(cli, "rank_sweep", lambda source, *a, **k: seen.setdefault("data", (source, a[3])) and
                        real(source, *a, **k))
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["ranks", "--latent", str(tmp_path / "z.npy"), "-rs", "2,3", "--heldout", "8",
                                  "--max-iter", "2", "--stability", "--save-factors", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "latents 0-23 and again on latents 24-48" in r.output  # stderr
    train, other = seen["data"]
    assert torch.equal(train.latents.z, torch.from_numpy(z[:24])) and torch.equal(other.latents.z, torch.from_numpy(z[24:]))
    assert PandA.load(out / "rs3.safetensors").n_samples_ == 24
    assert re.search(r"^\| 3 \| .* \| \d of 3 \| [01]\.\d\d \|$", r.output, re.M), r.output
    np.save(tmp_path / "one.npy", z[:1])
    r = CliRunner().invoke(main, ["ranks", "--latent", str(tmp_path / "one.npy"), "--stability", "--out", str(out)])
    assert r.exit_code == 2 and "holds 1 latent; give at least 2" in r.output


def test_stability_matches_each_rank_with_its_fit_on_other_samples(maps, caplog):
    train, heldout = maps
    with caplog.at_level("INFO", logger="panda"):
        same = rank_sweep(FeatureArray(train, "relu2"), [2, 4], other=FeatureArray(train.clone(), "relu2"), max_iter=3)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("R_S = ")]
    assert len(lines) == 4 and not any("nan" in line or "held-out" in line for line in lines)  # none measured
    for rank, model, similarity in zip(same.ranks, same.models, same.stability):
        # the other fit starts from other seeds (random_state + n_init..): the comparison is with that fit
        twin = PandA(rank_parts=rank, max_iter=3, random_state=4).fit(FeatureArray(train, "relu2"))
        assert similarity == pytest.approx(compare(model, twin).matched, abs=1e-5)
    other = rank_sweep(FeatureArray(train, "relu2"), [2, 4], other=FeatureArray(heldout, "relu2"), max_iter=3)
    assert [len(s) for s in other.stability] == [2, 4]
    assert all(s == sorted(s, reverse=True) and 0 <= s[-1] <= s[0] <= 1 + 1e-6 for s in other.stability)
    row = other.rows()[1]
    assert row["parts_back"] == other.stable_parts()[1] and row["mean_similarity"] == pytest.approx(np.mean(other.stability[1]))
    assert "parts back on other samples" in ranks_markdown(other, "g", "relu2", 192, 0)
    assert other.as_arrays()["similarity_rs4"].shape == (4,)
    assert ranks_plot(other).width == ranks_plot(RankSweep(other.ranks, other.models, 0.0, 0.0)).width


def test_ranks_retrieve_and_compare_on_a_stylegan2_checkpoint(tmp_path):
    """The new commands on a checkpoint file (an NVlabs StyleGAN2 pickle with random weights, read by panda's own
    loader), as on the bundled DCGANs: a sweep with its factor files, retrieval and a comparison of two fits."""
    from pathlib import Path
    pkl = str(Path(__file__).resolve().parent / "fixtures" / "stylegan2_nvlabs.pkl")
    runner = CliRunner()
    for seed, out in ((0, tmp_path / "a"), (500, tmp_path / "b")):
        r = runner.invoke(main, ["ranks", "--generator", pkl, "-rs", "2,3", "-n", "24", "--seed", str(seed),
                                 "--heldout", "6", "--max-iter", "3", "--save-factors", "--out", str(out), "-q"])
        assert r.exit_code == 0, r.output
    model = PandA.load(tmp_path / "a" / "rs3.safetensors")
    assert model.generator_source_["file"] == "stylegan2_nvlabs.pkl" and model.n_parts == 3
    r = runner.invoke(main, ["retrieve", str(tmp_path / "a" / "rs3.safetensors"), "--generator", pkl, "-j", "0",
                             "--part", "1", "--n-images", "12", "--top", "3", "--out", str(tmp_path / "r")])
    assert r.exit_code == 0 and (tmp_path / "r" / "retrieve_a0_part1.png").is_file(), r.output
    r = runner.invoke(main, ["compare", str(tmp_path / "a" / "rs3.safetensors"), str(tmp_path / "b" / "rs3.safetensors"),
                             "--generator", pkl, "--out", str(tmp_path / "c")])
    assert r.exit_code == 0 and "3 matched one to one" in r.output, r.output


def test_ranks_over_several_layers(tmp_path):
    """--layer twice: each layer's sweep in its own folder, and a line per layer in layers.md; ranks are checked
    against every layer before anything is fitted, the message naming the layer."""
    out = tmp_path / "l"
    r = CliRunner().invoke(main, ["ranks", "--layer", "relu2", "--layer", "relu3", "-rs", "2,3", "-n", "48",
                                  "--heldout", "8", "--max-iter", "2", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    for layer in ("relu2", "relu3"):
        assert (out / layer / "ranks.png").is_file() and (out / layer / "ranks.md").is_file()
    text = (out / "layers.md").read_text()
    assert "| relu2 | 256 x 8 x 8 | 2, 3 |" in text and "| relu3 | 128 x 16 x 16 | 2, 3 |" in text
    r = CliRunner().invoke(main, ["ranks", "--layer", "relu3", "--layer", "relu2", "-rs", "100", "-n", "48",
                                  "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "layer relu2: rank_parts=100" in r.output and not (tmp_path / "m").exists()


def test_more_random_starts_never_fit_worse_and_are_recorded(maps, tmp_path):
    """n_init: the best of 16 starts includes the 4 default ones (seeds random_state..), so with R_C = C (one P-step)
    its error is never higher; the file records it, and `panda fit --n-init` sets it."""
    train, _ = maps
    four = PandA(rank_parts=8).fit(FeatureArray(train, "relu2"))
    sixteen = PandA(rank_parts=8, n_init=16).fit(FeatureArray(train, "relu2"))
    assert sixteen.train_error_ <= four.train_error_ + 1e-6
    assert PandA.load(sixteen.save(tmp_path / "s.safetensors")).n_init == 16
    r = CliRunner().invoke(main, ["fit", "-n", "64", "-rs", "3", "--n-init", "6", "--reseed", "2",
                                  "--background-samples", "0", "--out", str(tmp_path / "f.safetensors"), "-q"])
    assert r.exit_code == 0, r.output
    loaded = PandA.load(tmp_path / "f.safetensors")
    assert (loaded.n_init, loaded.reseed) == (6, 2)
    r = CliRunner().invoke(main, ["info", str(tmp_path / "f.safetensors")])
    assert "6 random starts of the parts, up to 2 re-seeding rounds" in r.output
    r = CliRunner().invoke(main, ["fit", "-n", "64", "--reseed", "-1", "--out", str(tmp_path / "g.safetensors")])
    assert r.exit_code == 2 and "--reseed" in r.output and not (tmp_path / "g.safetensors").exists()
