"""Appearance transfer: the target gets the source's coefficients in the region, and nothing else moves."""

import numpy as np
import pytest
import torch

from panda import PandaError
from panda.features import capture
from panda.fileio import as_arrays
from panda.maps import upsample
from panda.transfer import (MIN_PART_SHARE, parts_basis, region_basis, region_coefficients, transfer, transfer_delta)


@pytest.fixture(scope="module")
def maps(model, celeba):
    """Feature maps of 3 targets (seeds 0-2) and 2 sources (seeds 50, 51) at the model's layer."""
    return (capture(celeba, celeba.latents([0, 1, 2]), model.layer_),
            capture(celeba, celeba.latents([50, 51]), model.layer_))


def test_transfer_gives_the_target_the_sources_coefficients(model, maps):
    """alpha = 1: the edited target's coefficients in the region are the source's, for every pair; alpha = 0.5 half
    way."""
    zt, zs = maps
    basis = parts_basis(model, [1, 3])
    ct, cs = region_coefficients(model, zt, basis), region_coefficients(model, zs, basis)
    assert ct.shape == (3, model.n_appearances, 2)
    for alpha in (1.0, 0.5):
        delta = transfer_delta(model, ct, cs, basis, alpha=alpha)
        assert delta.shape == (3, 2, *model.layer_shape_)
        for i in range(3):
            after = region_coefficients(model, zt[i:i + 1] + delta[i], basis)  # (2, R_C, 2): one per source
            want = ct[i] + alpha * (cs - ct[i])
            assert torch.allclose(after, want, atol=1e-3 * float(cs.abs().max()))
            assert not torch.allclose(after, ct[i].expand_as(after), atol=1e-3 * float(cs.abs().max()))


def test_transfer_from_an_image_to_itself_changes_nothing(model, maps):
    zt, _ = maps
    basis = parts_basis(model, [2])
    c = region_coefficients(model, zt, basis)
    delta = transfer_delta(model, c, c, basis)
    assert torch.equal(delta[torch.arange(3), torch.arange(3)], torch.zeros(3, *model.layer_shape_))


def test_the_change_lies_in_the_region_and_the_chosen_appearances(model, maps):
    zt, zs = maps
    region = torch.zeros(model.layer_shape_[1:])
    region[2:5, 1:4] = 1.0
    basis = region_basis(model, region)
    chosen = [0, 3, 7]
    delta = transfer_delta(model, region_coefficients(model, zt, basis, chosen),
                           region_coefficients(model, zs, basis, chosen), basis, appearances=chosen)
    assert delta.abs().amax() > 0
    assert delta[..., region == 0].abs().amax() == 0  # nothing outside the region's support
    others = [j for j in range(model.n_appearances) if j not in chosen]
    a = model.appearances_.cpu()
    inside = torch.einsum("cj,nmchw->nmjhw", a[:, others], delta)
    assert inside.abs().amax() < 1e-4 * delta.abs().amax()  # nothing in the other appearances


def test_region_basis_keeps_the_parts_inside_the_region(model):
    """Columns: the parts with at least MIN_PART_SHARE of their mass in the region, clipped to it; the last column
    (the region itself) only where no part qualifies."""
    p = model.part_maps().cpu()  # (R_S, H, W)
    region = torch.zeros(p.shape[1:])
    region[2:6, 1:7] = 1.0
    share = (region * p).flatten(1).sum(1) / p.flatten(1).sum(1)
    assert (share > 0).sum() > (share >= 0.6).sum()  # the thresholds below pick different sets
    for t in (0.0, MIN_PART_SHARE, 0.6):
        basis = region_basis(model, region, t)
        assert basis.shape == (p[0].numel(), model.n_parts + 1)
        kept = basis[:, :-1].abs().sum(0) > 0
        assert torch.equal(kept, (share >= t) & (share > 0))
        k = int(kept.nonzero()[0])
        assert torch.allclose(basis[:, k], (region * p[k]).flatten())
        assert basis[:, -1].abs().sum() == 0
    corner = torch.zeros_like(region)
    corner[0, 0] = 1.0
    if (region_basis(model, corner)[:, :-1].abs().sum(0) > 0).any():  # a part with 10% of its mass in that cell
        corner[0, 0] = 0.05  # a sliver of it
    lone = region_basis(model, torch.stack([region, corner]))
    assert lone.shape == (2, p[0].numel(), model.n_parts + 1)
    assert lone[1, :, :-1].abs().sum() == 0 and torch.equal(lone[1, :, -1], corner.flatten())


def test_a_map_missing_in_either_image_moves_nothing(model, maps):
    """Per-image regions: a basis map present in the target but empty in the source (a part outside the source's
    region) must not wipe the target's content there."""
    zt, zs = maps
    r = torch.zeros(model.layer_shape_[1:])
    r[3:6, 2:6] = 1.0
    tb = region_basis(model, r.expand(3, *r.shape))
    sb = tb[:2].clone()
    sb[:, :, :] = 0
    sb[:, :, -1] = r.flatten()  # the sources keep only the fallback column
    tb = tb.clone()
    tb[:, :, -1] = r.flatten()
    ct, cs = region_coefficients(model, zt, tb), region_coefficients(model, zs, sb)
    delta = transfer_delta(model, ct, cs, tb, sb)
    # only the column both have (the region map) moves: the change is exactly that column's transfer
    only = torch.zeros(tb.shape[-1], dtype=torch.bool)
    only[-1] = True
    want = transfer_delta(model, ct[..., only], cs[..., only], tb[..., only], sb[..., only])
    assert torch.allclose(delta, want, atol=1e-5)


def test_transfer_images_change_mostly_in_the_region(model, celeba):
    part = max(range(model.n_parts), key=lambda k: float(model.parts_[:, k].max() / model.parts_[:, k].sum()))
    result = transfer(model, celeba, [0, 1], [50, 51, 52], parts=[part])
    assert result.images.shape == (2, 3, 3, 64, 64) and result.sources.shape == (3, 3, 64, 64)
    assert result.shown.shape == (2, 64, 64) and result.source_shown.shape == (3, 64, 64)
    area = float((result.shown > 0.5).float().mean())
    assert result.share > 3 * area  # the change concentrates in the part
    assert result.closer > 0  # the region came closer to the source's
    assert result.appearances == list(range(model.n_appearances))
    still = transfer(model, celeba, [0, 1], [50], parts=[part], alpha=0.0)
    assert torch.allclose(still.images[:, 0], still.targets, atol=1e-5)


def test_face_regions_per_image(model, celeba):
    """A region of each image's own (as FaceMesh gives it): per-target and per-source maps and masks."""
    h, w = model.layer_shape_[1:]
    t = torch.zeros(2, h, w)
    t[:, 5:7, 2:6] = 1.0
    s = torch.zeros(3, h, w)
    s[:, 4:6, 2:6] = 1.0
    masks = upsample(t, 64) > 0.5
    result = transfer(model, celeba, [0, 1], [5, 6, 7], region=t, source_region=s, masks=masks, label="mouth")
    assert result.images.shape == (2, 3, 3, 64, 64) and result.label == "mouth"
    assert torch.equal(result.shown, masks.float())
    assert result.share > 0.5


@pytest.mark.parametrize("kwargs,match", [
    ({}, "either parts or a region"),
    ({"parts": [0], "region": torch.ones(8, 8)}, "either parts or a region"),
    ({"parts": []}, "at least one part"),
    ({"parts": [1, 1]}, "twice"),
    ({"parts": [99]}, "part"),
    ({"region": torch.ones(4, 4)}, "on the layer's grid"),
    ({"region": -torch.ones(8, 8)}, "non-negative"),
    ({"region": torch.full((8, 8), float("nan"))}, "finite"),
    ({"region": torch.ones(2, 8, 8)}, "source_region"),
    ({"region": torch.ones(3, 8, 8), "source_region": torch.ones(1, 8, 8)}, "3 target regions for 2 targets"),
    ({"parts": [0], "alpha": float("inf")}, "finite"),
    ({"parts": [0], "appearances": [10_000]}, "appearance"),
    ({"region": torch.ones(8, 8), "min_share": 1.5}, "min_share=1.5"),
])
def test_bad_transfers_are_refused(model, celeba, kwargs, match):
    with pytest.raises(PandaError, match=match):
        transfer(model, celeba, [0, 1], [2], **kwargs)


def test_parts_named(model):
    saved = dict(model.part_names_)
    try:
        model.part_names_ = {1: "eyes", 4: "eyes", 2: "mouth"}
        assert model.parts_named("eyes") == [1, 4] and model.parts_named("mouth") == [2]
        with pytest.raises(PandaError, match="eyes, mouth"):
            model.parts_named("nose")
    finally:
        model.part_names_ = saved


def test_save_arrays_of_a_transfer(model, celeba):
    arrays = as_arrays(transfer(model, celeba, [0], [1, 2], parts=[0]))
    assert arrays["images"].shape == (1, 2, 3, 64, 64) and np.isfinite(arrays["closer"])


def test_sample_specific_parts_read_and_write_where_each_image_has_them(model, maps):
    """target_parts / source_parts (refined parts, N x S x R_S): the global parts given per image change nothing;
    parts moved in one target move its change with them."""
    zt, zs = maps
    h, w = model.layer_shape_[1:]
    glob = model.parts_.cpu().float()
    same_t, same_s = glob.expand(3, *glob.shape), glob.expand(2, *glob.shape)
    basis = parts_basis(model, [1, 3])
    want = transfer_delta(model, region_coefficients(model, zt, basis), region_coefficients(model, zs, basis), basis)
    tb, sb = parts_basis(model, [1, 3], same_t), parts_basis(model, [1, 3], same_s)
    assert tb.shape == (3, h * w, 2)
    got = transfer_delta(model, region_coefficients(model, zt, tb), region_coefficients(model, zs, sb), tb, sb)
    assert torch.allclose(got, want, atol=1e-5)
    moved = same_t.clone()
    moved[0] = glob.view(h, w, -1).roll(3, dims=1).reshape(h * w, -1)  # target 0's parts 3 positions to the right
    tb = parts_basis(model, [1, 3], moved)
    got = transfer_delta(model, region_coefficients(model, zt, tb), region_coefficients(model, zs, sb), tb, sb)
    support = tb[0].abs().sum(1).view(h, w) > 0
    assert got[0][..., ~support].abs().amax() == 0 and got[0][..., support].abs().amax() > 0
    assert torch.allclose(got[1:], want[1:], atol=1e-5)


def test_transfer_with_refined_parts(model, celeba):
    from panda.refinement import refine
    (_, rt), (_, rs) = refine(model, celeba, [0, 1]), refine(model, celeba, [7])
    result = transfer(model, celeba, [0, 1], [7], parts=[2], target_parts=rt.parts, source_parts=rs.parts)
    assert result.images.shape == (2, 1, 3, 64, 64) and result.shown.shape == (2, 64, 64)
    for kwargs, match in (({"parts": [2], "target_parts": rt.parts[:1]}, "1 sets of target parts for 2 targets"),
                          ({"parts": [2], "source_parts": torch.zeros(1, 5, 5)}, "sample-specific parts must be"),
                          ({"region": torch.ones(8, 8), "target_parts": rt.parts}, "go with parts")):
        with pytest.raises(PandaError, match=match):
            transfer(model, celeba, [0, 1], [7], **kwargs)


def test_images_already_rendered_serve_as_the_originals(model, celeba, monkeypatch):
    """originals: the targets' and sources' images FaceMesh already looked at; the same transfer, no second render."""
    fresh = transfer(model, celeba, [0, 1], [5], parts=[2])
    images = (celeba.render([0, 1]), celeba.render([5]))
    monkeypatch.setattr(celeba, "render", lambda *a, **k: pytest.fail("rendered again"))
    given = transfer(model, celeba, [0, 1], [5], parts=[2], originals=images)
    assert torch.equal(given.images, fresh.images) and torch.equal(given.targets, fresh.targets)
    assert given.share == fresh.share and given.closer == fresh.closer
