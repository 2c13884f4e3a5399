"""Fitting on feature maps given as an array (FeatureArray): the estimator without a generator."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from panda import PandaError
from panda.cli import main
from panda.factorisation import relative_error
from panda.features import FeatureArray, FeatureSource, capture
from panda.model import PandA


@pytest.fixture(scope="module")
def maps(celeba):
    """relu2 feature maps (96, 256, 8, 8) of seeds 0..95."""
    return capture(celeba, celeba.sample(range(96)), "relu2")


def test_an_array_fits_what_its_generator_fits(celeba, maps):
    """The same maps as a tensor (in odd batches) and through the generator: the same factors."""
    ours = PandA(rank_parts=6, max_iter=5).fit(FeatureArray(maps, "relu2", batch_size=40))
    ref = PandA(rank_parts=6, max_iter=5).fit(FeatureSource(celeba, "relu2", range(96)))
    assert torch.allclose(ours.parts_, ref.parts_, atol=1e-4)
    # the leading appearances (up to sign; the tail's near-equal eigenvalues swap with rounding), and the model
    assert torch.allclose(ours.appearances_[:, :32].abs(), ref.appearances_[:, :32].abs(), atol=1e-4)
    assert torch.allclose(ours.reconstruct(maps), ref.reconstruct(maps), atol=1e-4)
    assert ours.error_history_[-1] == pytest.approx(ref.error_history_[-1], rel=1e-4)
    assert not ours.has_generator and ref.has_generator and ours.n_samples_ == 96 and ours.layer_ == "relu2"


def test_a_memory_mapped_npy_streams_and_scores(maps, tmp_path):
    np.save(tmp_path / "maps.npy", maps.numpy())
    mm = np.load(tmp_path / "maps.npy", mmap_mode="r")
    model = PandA(rank_parts=6, max_iter=5).fit(mm)  # a NumPy array is wrapped as it is
    plain = PandA(rank_parts=6, max_iter=5).fit(maps)
    assert torch.allclose(model.parts_, plain.parts_, atol=1e-5)
    score = model.score(maps[:32])
    assert score == pytest.approx(relative_error(FeatureArray(maps[:32]), model.appearances_, model.parts_), rel=1e-6)
    assert model.n_heldout_ == 32 and 0 < score < 1
    with pytest.raises(PandaError, match="do not match this model's layer"):
        model.score(maps[:, :, :4])


def test_an_array_model_saves_but_cannot_draw(maps, factor_file, tmp_path, celeba):
    model = PandA(rank_parts=4, max_iter=3).fit(maps)
    path = model.save(tmp_path / "arr.safetensors")
    back = PandA.load(path)
    assert not back.has_generator and torch.equal(back.parts_, model.parts_)
    assert back.localize(maps[:2]).shape == (2, 256, 8, 8)  # what such a model is for
    assert torch.equal(back.coefficients(maps[:2].numpy()), back.coefficients(maps[:2]))
    with pytest.raises(PandaError, match="not on a generator"):
        back.check_compatible(celeba)
    r = CliRunner().invoke(main, ["parts", str(path), "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "not on a generator" in r.output and not (tmp_path / "p").exists()


@pytest.mark.parametrize("data,match", [
    (torch.zeros(4, 8, 8), r"\(N, C, H, W\)"),
    (torch.zeros(0, 8, 4, 4), "N >= 1"),
    (np.zeros((2, 8, 4, 4), dtype=np.int32), "floating-point"),
    ([[[[0.0]]]], "not list"),
])
def test_bad_arrays_are_one_clear_error(data, match):
    with pytest.raises(PandaError, match=match):
        PandA(rank_parts=2).fit(data)


def test_non_finite_maps_name_the_sample(maps):
    bad = maps.clone()
    bad[70, 3, 1, 1] = float("nan")
    with pytest.raises(PandaError, match="sample 70 hold NaN"):
        PandA(rank_parts=4, max_iter=2).fit(FeatureArray(bad, batch_size=32))
