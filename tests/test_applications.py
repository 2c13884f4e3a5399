"""Refinement, object removal and concept localisation."""

import numpy as np
import pytest
import torch
from PIL import Image

from panda import PandaError
from panda.factorisation import border_mask
from panda.features import capture
from panda.editing import Edit, edit
from panda.figures import localize_figure, refine_figure, remove_figure
from panda.localisation import localisation, localize, strongest
from panda.maps import upsample
from panda.refinement import compare_refinement, part_neighbourhood, refine, refine_parts, sample_errors, shift_maps
from panda.regions import rasterise_mask, region_for
from panda.removal import (RACE_KEEP, RACE_MIN_SAMPLES, RACE_SCREEN, candidate_fills, choose_fill, find_background,
                           remove, removal, towards_background)


# ----------------------------------------------------------------------------- refinement
def test_refined_parts_reconstruct_each_sample_better(model, celeba):
    z, (refined, _) = refine(model, celeba, range(40, 46), steps=50)
    assert refined.shape == (6, 64, 8) and (refined >= 0).all()
    assert (sample_errors(model, z, refined) < sample_errors(model, z)).all()


def test_refinement_of_a_mixing_model_uses_its_objective(mixed_model, celeba):
    """With a mixing the per-image objective is ||Z_i - A W A^T Z_i P_i P_i^T||^2: refined parts lower that error."""
    z, (refined, _) = refine(mixed_model, celeba, range(40, 44), steps=50)
    assert (refined >= 0).all()
    assert (sample_errors(mixed_model, z, refined) < sample_errors(mixed_model, z)).all()
    flat = z.flatten(2)
    a, p, w = mixed_model.appearances_, refined, mixed_model.mixing_
    direct = ((flat - a @ w @ (a.T @ flat @ p) @ p.transpose(1, 2)) ** 2).flatten(1).sum(1) / (flat ** 2).flatten(1).sum(1)
    assert torch.allclose(sample_errors(mixed_model, z, refined), direct, rtol=1e-4)


def test_refining_images_together_equals_refining_them_one_by_one(model, celeba):
    z = capture(celeba, celeba.sample(range(60, 64)), model.layer_)
    together = refine_parts(model, z, steps=30, tol=0)
    for i in range(4):
        alone = refine_parts(model, z[i:i + 1], steps=30, tol=0)
        assert torch.equal(alone.shifts[0], together.shifts[i])
        assert torch.allclose(alone.parts[0], together.parts[i], atol=1e-5)


@pytest.mark.parametrize("mixing", [False, True])
def test_refinement_on_the_factor_of_each_image_matrix(celeba, monkeypatch, mixing):
    """With R_C <= S / 4 each image's M_i (rank R_C) is solved on its factor: the same shifts and parts as its dense
    matrix, which it never forms."""
    import panda.refinement as ref
    from panda.model import PandA
    from panda.features import FeatureSource
    small = PandA(rank_appearance=16, rank_parts=6, mixing=mixing).fit(FeatureSource(celeba, "relu2", range(64)))
    z = capture(celeba, celeba.sample(range(70, 73)), "relu2")
    seen = []
    solve = ref.solve_parts
    monkeypatch.setattr(ref, "solve_parts", lambda m, *a, **k: seen.append(type(m).__name__) or solve(m, *a, **k))
    factored = refine_parts(small, z, steps=30, tol=0)
    monkeypatch.setattr(ref, "factor_pays", lambda rank, s: False)
    dense = refine_parts(small, z, steps=30, tol=0)
    assert seen == ["PsdFactor", "Tensor"]
    assert torch.equal(factored.shifts, dense.shifts)
    assert torch.allclose(factored.parts, dense.parts, atol=1e-5)
    assert (sample_errors(small, z, factored.parts) < sample_errors(small, z)).all()


@pytest.mark.parametrize("factored", [True, False])
def test_refinement_solves_in_the_features_precision(celeba, monkeypatch, factored):
    """float32 features are solved with float32 statistics (the line search still sums in float64): the same shifts
    and parts as the same features in float64, at a fraction of the products' cost."""
    import panda.refinement as ref
    from panda.model import PandA
    from panda.features import FeatureSource
    small = PandA(rank_appearance=16, rank_parts=6).fit(FeatureSource(celeba, "relu2", range(64)))
    z = capture(celeba, celeba.sample(range(70, 73)), "relu2")
    seen = []
    solve = ref.solve_parts
    monkeypatch.setattr(ref, "solve_parts", lambda m, *a, **k: seen.append(m.dtype) or solve(m, *a, **k))
    monkeypatch.setattr(ref, "factor_pays", lambda rank, s: factored)
    single, double = refine_parts(small, z, steps=30, tol=0), refine_parts(small, z.double(), steps=30, tol=0)
    assert seen == [torch.float32, torch.float64]
    assert torch.equal(single.shifts, double.shifts)
    assert torch.allclose(single.parts, double.parts, atol=1e-4)


def test_zero_steps_and_no_search_keep_the_global_parts(model, celeba):
    z = capture(celeba, celeba.sample([1]), model.layer_)
    parts, shifts = refine_parts(model, z, steps=0, radius=None, search=0)
    assert torch.equal(parts[0], model.parts_) and shifts.tolist() == [[0, 0]]


def test_refined_parts_stay_in_their_neighbourhood(model, celeba):
    z = capture(celeba, celeba.sample([2, 3]), model.layer_)
    refined, shifts = refine_parts(model, z, steps=30, radius=1)
    for parts, (dy, dx) in zip(refined, shifts.tolist()):
        start = shift_maps(model.part_maps(), dy, dx).flatten(1).T
        allowed = part_neighbourhood(start, (8, 8), 1)
        assert (parts[~allowed] == 0).all()
        assert allowed.sum() < allowed.numel()  # the constraint is not vacuous


def test_refinement_follows_shifted_content(model, celeba):
    """Translate the features by 2 positions: refinement starts from the global parts moved by that
    shift, and an edit with a refined part stays inside the moved part's region better than an edit
    with the global part (ROIR against the moved region, lower is better)."""
    seeds, shift = list(range(300, 306)), (0, 2)
    z, (refined, shifts) = refine(model, celeba, seeds, steps=50, shift=shift)
    assert (shifts == torch.tensor(shift)).all(1).float().mean() >= 0.8
    assert (sample_errors(model, z, refined) < sample_errors(model, z)).all()
    better = 0
    for k in range(model.n_parts):
        cmp = compare_refinement(model, celeba, seeds, k, model.top_appearances(k, 1)[0], 2.0, shift=shift,
                                 refined=(z, (refined, shifts)))
        better += cmp.roir_refined < cmp.roir_global
    assert better >= 6, f"refinement lowered the ROIR for only {better} of 8 parts"
    picture = refine_figure(model, cmp, seeds, 50)  # draws the data it is given
    assert picture.width > 7 * 128 and picture.height > len(seeds) * 128


def test_edit_with_refined_parts(model, celeba):
    seeds, e = [11, 12], [Edit(part=2, appearance=1, alpha=2.0)]
    _, (parts, _) = refine(model, celeba, seeds, steps=20)
    with_refined, with_global = edit(model, celeba, seeds, e, parts=parts), edit(model, celeba, seeds, e)
    assert with_refined.shape == with_global.shape == (2, 3, 64, 64)
    assert not torch.allclose(with_refined, with_global)
    assert torch.equal(edit(model, celeba, seeds, e, parts=model.parts_.expand(2, -1, -1)), with_global)
    with pytest.raises(PandaError, match="refine the images you edit"):
        edit(model, celeba, [11], e, parts=parts)


def test_search_alone_finds_a_known_translation(model, celeba):
    z = capture(celeba, celeba.sample([7, 8, 9]), model.layer_)
    for shift in [(1, 0), (0, -2), (-1, 1)]:
        _, shifts = refine_parts(model, shift_maps(z, *shift), steps=0, search=2)
        assert (shifts == torch.tensor(shift)).all(1).sum() >= 2, (shift, shifts.tolist())


def test_a_translation_must_gain_more_than_min_gain(model, celeba):
    """best_translation keeps the untranslated parts unless the best translation lowers the sample's relative error
    (the objective on M_i normalised by ||Z_i||^2) by more than min_gain."""
    from panda.factorisation import parts_objective
    from panda.refinement import MIN_TRANSLATION_GAIN, _sample_matrices, best_translation
    z = capture(celeba, celeba.sample(range(300000, 300040)), model.layer_).flatten(2)
    a, grid = model.appearances_, tuple(model.layer_shape_[1:])
    gains, kept = [], 0
    for zi in z:
        m, _ = _sample_matrices(a, zi, None, False)
        f0 = float(parts_objective(m, model.parts_.float()))
        p, t = best_translation(m, model.parts_, grid, 2, min_gain=0.0)
        gain = f0 - float(parts_objective(m, p))
        gains.append(gain)
        p2, t2 = best_translation(m, model.parts_, grid, 2)  # the default margin
        assert t2 == (t if gain > MIN_TRANSLATION_GAIN else (0, 0))
        kept += t2 == (0, 0)
        assert best_translation(m, model.parts_, grid, 2, min_gain=1.0)[1] == (0, 0)
    # both sides of the margin occur on these aligned samples: the test decides something
    assert any(0 < g <= MIN_TRANSLATION_GAIN for g in gains) and kept < len(gains)
    with pytest.raises(PandaError, match="min_gain=-0.1"):
        refine_parts(model, z[:1].reshape(1, *model.layer_shape_), min_gain=-0.1)
    with pytest.raises(PandaError, match="min_gain=nan"):
        refine_parts(model, z[:1].reshape(1, *model.layer_shape_), min_gain=float("nan"))


def test_shift_wraps_round():
    m = torch.zeros(4, 4)
    m[1, 3] = 1
    moved = shift_maps(m, 0, 2)
    assert moved[1, 1] == 1 and moved.sum() == 1
    with pytest.raises(PandaError, match="smaller shift"):
        shift_maps(torch.zeros(1, 1, 4, 4), 0, 4)


def test_bad_refinement_arguments(model, celeba):
    z = capture(celeba, celeba.sample([1]), model.layer_)
    with pytest.raises(PandaError, match="translation range"):
        refine_parts(model, z, search=8)
    with pytest.raises(PandaError, match="radius"):
        refine_parts(model, z, radius=-1)
    with pytest.raises(PandaError, match="radius must be a whole number, got 1.5"):
        refine_parts(model, z, radius=1.5)  # was a TypeError from torch's pad


# ----------------------------------------------------------------------------- removal
def test_rasterise_mask_averages_coverage(tmp_path):
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[:32, :16] = 1
    cells = rasterise_mask(mask, (8, 8))
    assert cells.shape == (8, 8)
    assert torch.allclose(cells[:4, :2], torch.ones(4, 2)) and cells[4:].sum() == 0
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "m.png")
    assert torch.equal(rasterise_mask(tmp_path / "m.png", (8, 8)), cells)


@pytest.mark.parametrize("mask,match", [
    (np.zeros((8, 8)), "empty"),
    (np.full((8, 8), 2.0), r"\[0, 1\]"),
    (np.full((8, 8), np.nan), "finite"),
    (np.zeros((2, 8, 8)), "2-D"),
    ("/nonexistent/mask.png", "does not exist"),
])
def test_bad_masks_refused(mask, match):
    with pytest.raises(PandaError, match=match):
        rasterise_mask(mask, (8, 8))


def test_region_needs_exactly_one_of_part_and_mask(model):
    with pytest.raises(PandaError, match="either a part or a mask"):
        region_for(model)
    with pytest.raises(PandaError, match="either a part or a mask"):
        region_for(model, 0, np.ones((8, 8)))


def test_towards_background_known_answer():
    x = torch.zeros(1, 3, 16, 16)
    x[:, 2] = 1.0  # blue everywhere
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[6:10, 6:10] = True
    x[:, :, region] = torch.tensor([1.0, 0.0, 0.0])[:, None]  # a red square
    fixed = x.clone()
    fixed[:, :, region] = torch.tensor([0.0, 0.0, 1.0])[:, None]
    before, after = towards_background(x, fixed, region, ring=2)
    assert before.item() == pytest.approx(2 ** 0.5) and after.item() == pytest.approx(0.0)


def test_removal_changes_the_region_most(model, celeba):
    lat = celeba.sample(range(8))
    x0 = celeba.synthesize(lat)
    k = 0
    region = region_for(model, part=k)
    x1 = remove(model, celeba, lat, region, alpha=1.0)
    mask = (upsample(region[None], 64)[0] > 0.5).float()
    change = ((x1 - x0) ** 2).sum(1)
    inside = (change * mask).sum() / mask.sum()
    outside = (change * (1 - mask)).sum() / (1 - mask).sum()
    assert inside > 3 * outside


def test_towards_background_takes_one_mask_per_sample():
    x = torch.zeros(2, 3, 16, 16)
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 8:12, 8:12] = True
    x[0, :, 2:6, 2:6] = 1.0
    before, after = towards_background(x, torch.zeros_like(x), masks, ring=2)
    assert before[0].item() == pytest.approx(3 ** 0.5) and before[1].item() == 0
    assert after.abs().max() == 0


def test_per_sample_regions_and_chosen_fill(model, celeba):
    lat = celeba.sample(range(4))
    regions = torch.stack([region_for(model, part=k) for k in (0, 1, 2, 3)])
    masks = upsample(regions, 64) > 0.5
    together = remove(model, celeba, lat, regions, alpha=1.0, background=5, sign=1.0)
    alone = remove(model, celeba, lat[1:2], regions[1], alpha=1.0, background=5, sign=1.0)
    assert torch.allclose(together[1:2], alone, atol=1e-6)
    found = choose_fill(model, celeba, lat, regions, masks, candidates=3)
    assert len(found.table) == 6 and found.gain == max(found.table.values())
    # the search runs every fill and image in shared batches; each gain is what removing with that fill does
    for (j, s), gain in found.table.items():
        removed = celeba.to_unit(remove(model, celeba, lat, regions, alpha=1.0, background=j, sign=s)).cpu()
        before, after = towards_background(celeba.render(lat), removed, masks)
        assert gain == pytest.approx(1 - float(after.sum() / before.sum()), abs=1e-5)


def test_background_search_picks_its_best_candidate(model, celeba):
    found = find_background(model, celeba, range(4), candidates=4)
    assert found.gain == max(found.table.values())
    assert len(found.table) == 8
    ranked = found.ranked(3)
    assert ranked[0] == (found.appearance, found.sign, found.gain) and len(ranked) == 3
    assert ranked[0][2] >= ranked[1][2] >= ranked[2][2]
    assert model.background_ is not None and model.background_sign_ in (1.0, -1.0)


def test_raced_background_search_keeps_the_screened_best_and_measures_them_on_every_sample(model, celeba):
    """Racing: all 16 fills on the first RACE_SCREEN samples, the best RACE_KEEP of them on all 6; their gains are the
    exhaustive search's, the others' those of a search on the screening samples alone."""
    seeds = range(RACE_MIN_SAMPLES)
    raced = find_background(model, celeba, seeds, candidates=8)
    full = find_background(model, celeba, seeds, candidates=8, race=False)
    screen = find_background(model, celeba, seeds[:RACE_SCREEN], candidates=8, race=False)
    assert len(full.table) == 16 and not full.screened
    assert len(raced.table) == RACE_KEEP and set(raced.screened) == set(full.table) - set(raced.table)
    kept = sorted(screen.table, key=lambda t: -screen.table[t])[:RACE_KEEP]
    assert set(raced.table) == set(kept)
    for fill, gain in raced.table.items():
        assert gain == pytest.approx(full.table[fill], abs=1e-5)
    for fill, gain in raced.screened.items():
        assert gain == pytest.approx(screen.table[fill], abs=1e-5)
    assert raced.gain == max(raced.table.values())
    few = find_background(model, celeba, seeds[:RACE_MIN_SAMPLES - 1], candidates=8)  # too few samples to race
    assert len(few.table) == 16 and not few.screened
    with pytest.raises(PandaError, match="candidates=0"):
        find_background(model, celeba, seeds, candidates=0)
    with pytest.raises(PandaError, match="no images asked for"):  # not a perfect score on nothing
        find_background(model, celeba, [], candidates=8)


# ----------------------------------------------------------------------------- localisation
def test_localize_is_a_transposed_z(model, celeba):
    lat = celeba.sample([4, 5])
    maps = localize(model, celeba, lat)
    z = capture(celeba, lat, model.layer_)
    assert maps.shape == (2, 256, 8, 8)
    assert torch.allclose(maps, torch.einsum("cr,nchw->nrhw", model.appearances_, z), atol=1e-4)
    assert strongest(maps[0], 3) == torch.argsort((maps[0] ** 2).flatten(1).sum(1), descending=True)[:3].tolist()


def test_border_appearance_concentrates_on_the_border_in_new_samples(model, celeba):
    """The appearance that the fit's statistics place on the grid's border (highest border score among
    the 16 strongest) has more of its energy on the border than the border's share of the area, on
    samples the fit never saw."""
    top = torch.argsort(model.appearance_energy_, descending=True)[:16]
    j = int(top[torch.argmax(model.background_scores_[top])])
    assert model.background_scores_[j] > 1.2
    maps = localize(model, celeba, range(10_000, 10_032))[:, j]
    ring = border_mask(8, 8)
    share = float((maps[:, ring] ** 2).sum() / (maps ** 2).sum())
    assert share > 1.1 * float(ring.float().mean())


def test_localize_appearance_out_of_range(model, celeba):
    with pytest.raises(PandaError, match="appearance 256 is out of range"):
        localize_figure(model, localisation(model, celeba, [0]), 256, [0])


def test_removal_result_measures_what_it_removed(model, celeba):
    """removal() returns data: the fill it searched for this region, and the colour distances that
    remove_figure only draws; the search's best fill is the one it used."""
    result = removal(model, celeba, [0, 1], region_for(model, part=0), alpha=1.0)
    assert result.removed.shape == result.original.shape == (2, 3, 64, 64)
    assert (result.appearance, result.sign) == result.search.ranked(1)[0][:2]
    before, after = towards_background(result.original, result.removed, result.masks)
    assert result.distance_after == pytest.approx(float(after.mean()))
    assert result.distance_after < result.distance_before
    fills = candidate_fills(model, celeba, [0, 1], result.regions, result.search, 1.0, top=2)
    assert torch.allclose(fills[0][3], result.removed, atol=1e-6)
    assert remove_figure(result, [0, 1]).height > 2 * 128
