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
    (["-j", "1", "--part", "1", "--mask", "x.png"], "not both"),
    (["-j", "1", "--n-images", "1"], "at least 2"),
    (["-j", "1", "--top", "17"], "--top"),
])
def test_bad_retrieve_input_is_one_line_and_writes_nothing(factor_file, tmp_path, args, match):
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["retrieve", str(factor_file), *args, "--out", str(out)])
    assert r.exit_code == 2 and match in r.output, r.output
    assert not out.exists()
