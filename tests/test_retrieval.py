"""Retrieval (panda.retrieval, `panda retrieve`): samples ranked by how much of an appearance they hold in a region."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from panda import PandaError
from panda.cli import main
from panda.editing import part_profile
from panda.features import capture
from panda.figures import retrieval_figure
from panda.localisation import localisation
from panda.retrieval import retrieve

SEEDS = list(range(300, 340))


def _direct(model, celeba, j, region):
    """Appearance j's mean over the region, from the localisation maps A^T Z, in units of the layer's norm."""
    maps = model.localize(capture(celeba, celeba.sample(SEEDS), model.layer_))[:, j].double()  # (N, H, W)
    return (maps * region).flatten(1).sum(1) / region.sum() / model.feature_scale_


def test_scores_are_the_appearance_mean_over_the_region(model, celeba):
    region = part_profile(model, 3).double()
    result = retrieve(model, celeba, SEEDS, 5, region, batch_size=7)  # batches of 7: the same as all at once
    assert result.scores.shape == (len(SEEDS),)
    assert torch.allclose(result.scores, _direct(model, celeba, 5, region), rtol=1e-4, atol=1e-6)
    whole = retrieve(model, celeba, SEEDS, 5)
    assert torch.allclose(whole.scores, _direct(model, celeba, 5, torch.ones(8, 8).double()), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(whole.scores, result.scores)  # the region matters
    top, bottom = result.top(5), result.bottom(5)
    assert [float(result.scores[i]) for i in top] == sorted(result.scores.tolist(), reverse=True)[:5]
    assert [float(result.scores[i]) for i in bottom] == sorted(result.scores.tolist())[:5]


def test_the_background_appearance_is_signed_as_its_maps_are_drawn(model, celeba):
    b = model.background_
    assert b is not None
    result = retrieve(model, celeba, SEEDS[:8], b)
    raw = _direct(model, celeba, b, torch.ones(8, 8).double())[:8]
    assert torch.allclose(result.scores, model.background_sign_ * raw, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("region, match", [
    (torch.ones(4, 4), r"grid is \(8, 8\)"),
    (torch.zeros(8, 8), "not empty"),
    (-torch.ones(8, 8), "non-negative"),
    (torch.full((8, 8), float("nan")), "finite"),
])
def test_bad_regions_are_refused(model, celeba, region, match):
    with pytest.raises(PandaError, match=match):
        retrieve(model, celeba, SEEDS[:4], 0, region)


def test_appearance_out_of_range(model, celeba):
    with pytest.raises(PandaError, match="out of range"):
        retrieve(model, celeba, SEEDS[:4], 999)
    with pytest.raises(PandaError, match="no images asked for"):
        retrieve(model, celeba, [], 3)  # was a ValueError from torch.cat


def test_retrieval_figure_shows_both_ends(model, celeba):
    result = retrieve(model, celeba, SEEDS, 2, part_profile(model, 1))
    most, least = result.top(3), result.bottom(3)
    fig = retrieval_figure(model, result, localisation(model, celeba, [SEEDS[i] for i in most]),
                           localisation(model, celeba, [SEEDS[i] for i in least]), [SEEDS[i] for i in most],
                           [SEEDS[i] for i in least], "part 1", len(SEEDS))
    assert fig.width > 3 * 128 and fig.height > 4 * 128


def test_retrieve_command(factor_file, tmp_path):
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["retrieve", str(factor_file), "-j", "2", "--part", "1", "--n-images", "30",
                                  "--top", "4", "--save-arrays", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "retrieve_a2_part1.png").is_file()
    data = np.load(out / "retrieve_a2_part1.npz")
    scores = data["scores"]
    assert scores.shape == (30,) and list(data["labels"]) == [str(s) for s in range(30)]
    assert list(data["most"]) == list(np.argsort(-scores, kind="stable")[:4])
    most_line = next(line for line in r.output.splitlines() if line.startswith("most: "))
    assert most_line.startswith(f"most: {int(data['most'][0])} ({scores[data['most'][0]]:+.2f})")
    mask = tmp_path / "m.png"
    img = Image.new("L", (64, 64), 0)
    img.paste(255, (16, 40, 48, 56))
    img.save(mask)
    r = CliRunner().invoke(main, ["retrieve", str(factor_file), "-j", "2", "--mask", str(mask), "--n-images", "6",
                                  "--out", str(out)])
    assert r.exit_code == 0 and (out / "retrieve_a2_mask.png").is_file(), r.output


@pytest.mark.parametrize("args, match", [
    (["-j", "999"], "out of range"),
    (["-j", "1", "--part", "99"], "part 99 is out of range"),
    (["-j", "1", "--part", "mouth"], "no part is named 'mouth'"),
    (["-j", "1", "--part", "1", "--mask", "x.png"], "not in --part and --mask"),
    (["-j", "1", "--part", "1", "--region", "mouth"], "not in --part and --region"),
    (["-j", "1", "--n-images", "1"], "at least 2"),
    (["-j", "1", "--top", "17"], "--top"),
])
def test_bad_retrieve_input_is_one_line_and_writes_nothing(factor_file, tmp_path, args, match):
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["retrieve", str(factor_file), *args, "--out", str(out)])
    assert r.exit_code == 2 and match in r.output, r.output
    assert not out.exists()


def test_each_face_is_scored_in_its_own_face_region(model, celeba, factor_file, tmp_path):
    """--region: sample i's score is appearance j's mean over its own FaceMesh region (as face_regions finds it);
    samples without a face are NaN and never ranked; the figure outlines each face's own region."""
    from panda.regions import face_regions
    seeds = list(range(300, 312))
    result = retrieve(model, celeba, seeds, 5, face_region="mouth", dilate=3)
    faces = face_regions(model, celeba, celeba.sample(seeds), "mouth", 3)
    assert torch.equal(result.found, faces.found) and result.regions.shape == (12, 8, 8)
    maps = model.localize(capture(celeba, celeba.sample(seeds), model.layer_))[:, 5].double()
    w = faces.grid.double()
    direct = (maps * w).flatten(1).sum(1) / w.flatten(1).sum(1) / model.feature_scale_
    ok = faces.found
    assert ok.sum() >= 8 and torch.allclose(result.scores[ok], direct[ok], rtol=1e-4, atol=1e-6)
    assert torch.isnan(result.scores[~ok]).all()
    fixed = retrieve(model, celeba, seeds, 5, w[ok].mean(0))  # one region for all: other scores
    assert not torch.allclose(result.scores[ok], fixed.scores[ok])
    top = result.top(20)
    assert len(top) == int(ok.sum()) and all(ok[i] for i in top)  # NaN scores are never ranked
    latents = celeba.sample(seeds)  # latents score as their seeds do, and batches of 5 as one batch of 12
    assert torch.allclose(retrieve(model, celeba, latents, 5, face_region="mouth", dilate=3).scores[ok],
                          result.scores[ok])
    chunked = retrieve(model, celeba, seeds, 5, face_region="mouth", dilate=3, batch_size=5)
    assert torch.equal(chunked.found, result.found)
    assert torch.allclose(chunked.scores[ok], result.scores[ok], rtol=1e-5, atol=1e-7)
    with pytest.raises(PandaError, match="not both"):
        retrieve(model, celeba, seeds, 5, torch.ones(8, 8), face_region="mouth")
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["retrieve", str(factor_file), "-j", "5", "--region", "mouth", "--seeds", "300-311",
                                  "--top", "3", "--save-arrays", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"ranked the {int(ok.sum())} of 12 samples" in r.output
    assert (out / "retrieve_a5_mouth.png").is_file()
    assert np.array_equal(np.load(out / "retrieve_a5_mouth.npz")["found"], ok.numpy())
