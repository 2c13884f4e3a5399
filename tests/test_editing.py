import math

import numpy as np
import pytest
import torch

from panda import PandaError
from panda.editing import Edit, edit, edit_delta, measured_sweep, part_profile, sweep
from panda.metrics import change_inside_fraction, roir
from panda.maps import upsample


def test_alpha_zero_reproduces_the_original_exactly(model, celeba):
    lat = celeba.sample(range(4))
    assert torch.equal(edit(model, celeba, lat, [Edit(0, 0, 0.0)]), celeba.synthesize(lat))


def test_edit_takes_seeds_or_latents(model, celeba):
    by_seed = edit(model, celeba, [3, 4], [Edit(1, 2, 1.0)])
    assert torch.equal(by_seed, edit(model, celeba, celeba.sample([3, 4]), [Edit(1, 2, 1.0)]))
    assert sweep(model, celeba, [3], 1, 2, [0.0, 1.0]).shape == (1, 2, 3, 64, 64)


def test_edit_delta_is_rank_one_outer_product(model):
    d = edit_delta(model, [Edit(2, 5, 1.5)])
    assert d.shape == model.layer_shape_
    prof = part_profile(model, 2)
    assert prof.min() == 0 and prof.max() == 1
    expected = 1.5 * model.feature_scale_ * model.appearances_[:, 5, None, None] * prof[None]
    assert torch.allclose(d, expected)


def test_several_edits_add_up(model):
    both = edit_delta(model, [Edit(1, 3, 1.0), Edit(4, 7, -2.0)])
    assert torch.allclose(both, edit_delta(model, [Edit(1, 3, 1.0)]) + edit_delta(model, [Edit(4, 7, -2.0)]))


def test_edit_change_is_concentrated_in_its_part(model, celeba):
    """For every part, the pixel change of its top-appearance edit is denser inside the part
    (map > 0.5) than outside: the share inside exceeds the part's share of the image."""
    lat = celeba.sample(range(100, 108))
    x0 = celeba.synthesize(lat)
    ratios = []
    for k in range(model.n_parts):
        j = model.top_appearances(k, 1)[0]
        x1 = edit(model, celeba, lat, [Edit(k, j, 2.0)])
        mask = (upsample(part_profile(model, k)[None], 64)[0] > 0.5).float()
        share = float(change_inside_fraction(x0, x1, mask).mean())
        ratios.append(share / float(mask.mean()))
    assert min(ratios) > 1.5, ratios
    assert sorted(ratios)[len(ratios) // 2] > 3, ratios


def test_sweep_matches_single_edits(model, celeba):
    lat = celeba.sample([5, 6])
    s = sweep(model, celeba, lat, 3, 2, [-1.0, 0.0, 2.0])
    assert s.shape == (2, 3, 3, 64, 64)
    assert torch.allclose(s[:, 2], edit(model, celeba, lat, [Edit(3, 2, 2.0)]), atol=1e-6)
    assert torch.equal(s[:, 1], celeba.synthesize(lat))
    both = sweep(model, celeba, lat, 3, [2, 5], [-1.0, 0.0, 2.0])  # several appearances in one pass
    assert both.shape == (2, 2, 3, 3, 64, 64)
    assert torch.allclose(both[0], s, atol=1e-6)
    assert torch.allclose(both[1], sweep(model, celeba, lat, 3, 5, [-1.0, 0.0, 2.0]), atol=1e-6)


def test_top_appearances_sorted_by_energy(model):
    top = model.top_appearances(3, 5)
    e = model.coef_energy_[:, 3]
    assert [float(e[j]) for j in top] == sorted((float(v) for v in e), reverse=True)[:5]
    assert len(set(model.top_appearances(3, 5, by="variance"))) == 5


@pytest.mark.parametrize("bad,match", [
    (Edit(8, 0, 1.0), "part 8 is out of range"),
    (Edit(-1, 0, 1.0), "part -1 is out of range"),
    (Edit(0, 256, 1.0), "appearance 256 is out of range"),
    (Edit(0, 0, math.inf), "finite"),
    (Edit(0, 0, math.nan), "finite"),
    (Edit(1.5, 0, 1.0), "part must be a whole number, got 1.5"),  # was an IndexError from deep inside
    (Edit(0, 2.0, 1.0), "appearance must be a whole number, got 2.0"),
    (Edit(True, 0, 1.0), "part must be a whole number"),
    (Edit("mouth", 0, 1.0), r"model.parts_named\('mouth'\) lists the parts so named"),  # the CLI takes names
])
def test_bad_edits_refused(model, celeba, bad, match):
    with pytest.raises(PandaError, match=match):
        edit(model, celeba, celeba.sample([0]), [bad])


def test_whole_numbers_of_any_integer_kind_index_parts(model):
    assert model.check_part(np.int64(3)) == 3 and model.check_appearance(torch.tensor(5)) == 5
    for k in (0, -1):  # -1 used to return all appearances but the last
        with pytest.raises(PandaError, match="at least one appearance"):
            model.top_appearances(3, k)


def test_a_sweep_without_strengths_is_refused(model, celeba):
    with pytest.raises(PandaError, match="no strengths given"):
        measured_sweep(model, celeba, [0], 3, 1, [])  # was a ValueError from torch.cat


def test_edit_on_another_generator_refused(model, digiface):
    with pytest.raises(PandaError, match="fitted on generator"):
        edit(model, digiface, digiface.sample([0]), [Edit(0, 0, 1.0)])


def test_parse_edit():
    assert Edit.parse("3,0,-1.5") == Edit(3, 0, -1.5)
    with pytest.raises(PandaError, match="PART,APPEARANCE,ALPHA"):
        Edit.parse("3,0")


def test_roir_known_answers():
    x = torch.zeros(1, 3, 8, 8)
    mask = torch.zeros(8, 8)
    mask[2:4, 2:6] = 1  # 8 pixels inside, 56 outside
    inside_only = x.clone(); inside_only[..., 2:4, 2:6] = 0.7
    assert roir(x, inside_only, mask).item() == 0
    uniform = x + 0.3
    assert roir(x, uniform, mask).item() == pytest.approx(math.sqrt(56 / 8))
    assert torch.isinf(roir(x, x, mask)).all()
    assert change_inside_fraction(x, inside_only, mask).item() == pytest.approx(1.0)


def test_dilate_matches_a_square_max_pool_at_any_radius():
    import torch.nn.functional as F

    from panda.maps import dilate
    g = torch.Generator().manual_seed(3)
    for h, w, r in [(7, 9, 2), (40, 33, 5), (16, 16, 0), (24, 24, 11)]:
        masks = torch.rand(3, h, w, generator=g) > 0.95
        pooled = F.max_pool2d(masks[:, None].float(), 2 * r + 1, stride=1, padding=r)[:, 0] > 0
        assert torch.equal(dilate(masks, r), pooled)
    one = torch.zeros(9, 9, dtype=torch.bool)
    one[4, 4] = True
    assert int(dilate(one, 2).sum()) == 25  # a 5 x 5 square, clipped nowhere


def test_a_region_sweep_of_a_parts_own_map_is_that_parts_sweep(model, celeba):
    from panda.editing import region_sweep
    alphas = [-1.0, 2.0]
    by_part = sweep(model, celeba, [3, 4], 2, 5, alphas)
    by_region = region_sweep(model, celeba, [3, 4], part_profile(model, 2), 5, alphas)
    assert by_region.shape == (2, 2, 3, 64, 64) and torch.allclose(by_region, by_part, atol=1e-6)


def test_a_region_per_image_edits_only_where_given(model, celeba):
    from panda.editing import measured_region_sweep
    from panda.regions import rasterise_mask
    box = torch.zeros(64, 64)
    box[8:24, 36:60] = 1
    region = torch.stack([rasterise_mask(box, (8, 8)), torch.zeros(8, 8)])  # the second image: nothing to edit
    result = measured_region_sweep(model, celeba, [3, 4], region, 7, [1.0, 3.0], label="box")
    assert torch.equal(result.images[1, 1], result.original[1])
    assert not torch.equal(result.images[0, 1], result.original[0])
    assert result.region.shape == (2, 64, 64) and result.part is None and result.label == "box"
    change = (result.images[0, 1] - result.original[0]).abs().sum(0)
    inside = (upsample(region[:1], 64)[0] > 0.5)
    assert change[inside].mean() > 3 * change[~inside].mean()  # mostly where the box is
    with pytest.raises(PandaError, match="on the layer's grid"):
        measured_region_sweep(model, celeba, [3, 4], torch.zeros(3, 8, 8), 7, [1.0])


def test_region_appearances_are_particular_to_the_region(model, celeba):
    from panda.localisation import localize, region_appearances
    region = part_profile(model, 1)
    seeds = list(range(40, 56))
    top = region_appearances(model, celeba, seeds, region, 3)
    assert len(set(top)) == 3 and all(0 <= j < model.n_appearances for j in top)
    energy = localize(model, celeba, seeds).double() ** 2
    inside, total = (energy * region.double()).sum((0, 2, 3)), energy.sum((0, 2, 3))
    baseline = inside.sum() / total.sum()
    assert inside[top[0]] / total[top[0]] > baseline  # more of it inside than the region's share of all energy


def test_region_at_image_resolution():
    """One region or one per image, to image resolution in [0, 1]; an (H, W) region repeated n times on request."""
    import torch

    from panda.maps import region_at
    r = torch.zeros(8, 8)
    r[2:4, 3:6] = 1.5  # a coverage above 1 is drawn as 1
    one = region_at(r, 64)
    assert one.shape == (64, 64) and float(one.max()) == 1.0 and float(one.min()) == 0.0
    assert bool(one[24, 36] == 1) and bool(one[0, 0] == 0)
    many = region_at(r, 64, 3)
    assert many.shape == (3, 64, 64) and torch.equal(many[2], one)
    per_image = region_at(torch.stack([r, torch.zeros(8, 8)]), 32)
    assert per_image.shape == (2, 32, 32) and per_image[1].abs().sum() == 0 and per_image[0].sum() > 0


def test_images_already_rendered_are_used_as_rendered_again(model, celeba, monkeypatch):
    """A face region's images (FaceRegions.images) serve the sweep's and the removal's originals: the same results,
    one generator pass fewer."""
    from panda.editing import measured_region_sweep
    from panda.removal import removal
    region = part_profile(model, 2)
    seeds = [3, 4]
    images = celeba.render(seeds)
    fresh = measured_region_sweep(model, celeba, seeds, region, 1, [-1.0, 1.0])
    removed = removal(model, celeba, seeds, region, 1.0, background="global")
    calls = []
    monkeypatch.setattr(celeba, "render", lambda *a, **k: calls.append(a) or pytest.fail("rendered again"))
    given = measured_region_sweep(model, celeba, seeds, region, 1, [-1.0, 1.0], original=images)
    assert torch.equal(given.original, fresh.original) and torch.equal(given.images, fresh.images)
    assert given.share == fresh.share
    again = removal(model, celeba, seeds, region, 1.0, background="global", original=images)
    assert torch.equal(again.removed, removed.removed) and again.distance_after == removed.distance_after
    assert calls == []
