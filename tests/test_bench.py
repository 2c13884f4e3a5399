"""The ROIR benchmark: landmark masks, baselines and the protocol end to end (small)."""

import math
import os
import sys

import pytest
import torch

from panda import PandaError, baselines
from panda.evaluation import run_roir
from panda.generators import Latents
from panda.landmarks import CELLS, REGIONS, FaceMeshMasker, RegionMasks, cross_check, face_cells, load_onet, onet_points
from panda.maps import grow
from panda.methods import METHODS
from panda.metrics import METRICS, Cells, cell_rms, specificity
from panda.tables import markdown, write_outputs


@pytest.fixture(scope="module")
def faces(digiface):
    x = digiface.to_unit(digiface.synthesize(digiface.sample(range(24))))
    return x, FaceMeshMasker()(x, regions=("eyes", "nose", "mouth", "forehead"))


def test_facemesh_masks_sit_on_small_regions(faces):
    x, rm = faces
    assert rm.found.float().mean() > 0.8
    for region in ("eyes", "nose", "mouth"):
        area = rm.masks[region][rm.found].float().mean((1, 2))
        assert (area > 0).all() and (area < 0.15).all()
    # eyes above nose above mouth (image rows grow downwards)
    rows = {r: (rm.masks[r][rm.found].float() * torch.arange(64.0)[:, None]).sum((1, 2)) / rm.masks[r][rm.found].float().sum((1, 2))
            for r in ("eyes", "nose", "mouth")}
    assert (rows["eyes"] < rows["nose"]).all() and (rows["nose"] < rows["mouth"]).all()


def test_mediapipe_start_up_chatter_is_dropped_and_the_rest_passed_on(capfd):
    from panda.landmarks import _without_mediapipe_chatter
    with _without_mediapipe_chatter():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                    b"W0000 00:00:1795752836.945981    9203 inference_feedback_manager.cc:114] Feedback manager\n"
                    b"E0000 00:00:1795752836.945981    9203 graph.cc:1] a real error\n")
        sys.stderr.write("python's own line\n")
    err = capfd.readouterr().err
    assert "a real error" in err and "python's own line" in err
    assert "XNNPACK" not in err and "Feedback manager" not in err
    os.write(2, b"after\n")  # the descriptor is back where it was
    assert capfd.readouterr().err == "after\n"


def test_facemesh_prints_nothing_and_stops_catching_stderr_once_it_has_seen_a_face(celeba, capfd):
    masker = FaceMeshMasker()
    assert not masker.settled
    first = masker.landmarks(celeba.render(range(4)))
    assert masker.settled == any(p is not None for p in first) and masker.settled  # these four have faces
    masker.landmarks(celeba.render(range(4, 8)))  # uncaught now: MediaPipe's one-off warning came with the first
    err = capfd.readouterr().err
    assert "W0000" not in err and "XNNPACK" not in err and "landmark_projection" not in err, err


def test_forehead_sits_above_the_eyes(faces):
    _, rm = faces
    fore, eyes = rm.masks["forehead"][rm.found].float(), rm.masks["eyes"][rm.found].float()
    row = torch.arange(64.0)[:, None]
    assert ((fore * row).sum((1, 2)) / fore.sum((1, 2)) < (eyes * row).sum((1, 2)) / eyes.sum((1, 2))).all()
    top = lambda m: (m.sum(2) > 0).float().argmax(1)  # first row with any pixel  # noqa: E731
    assert (top(fore) <= top(eyes) - 4).all()  # it reaches well above them, up to the hairline


def test_onet_points_agree_with_facemesh(faces):
    x, rm = faces
    prob, pts = onet_points(load_onet(), x, rm.boxes)
    check = cross_check(rm, prob, pts)
    assert check["n_kept"] >= 18
    assert check["nose"] > 0.9 and check["eyes"] > 0.8


def test_cross_check_counts_points_inside():
    masks = {"eyes": torch.zeros(1, 8, 8, dtype=torch.bool), "nose": torch.zeros(1, 8, 8, dtype=torch.bool),
             "mouth": torch.zeros(1, 8, 8, dtype=torch.bool)}
    masks["nose"][0, 4, 4] = True
    pts = torch.tensor([[[1.0, 1.0], [6.0, 1.0], [4.0, 4.0], [2.0, 6.0], [6.0, 6.0]]])
    out = cross_check(RegionMasks(torch.tensor([True]), masks), torch.tensor([0.99]), pts)
    assert out["nose"] == 1.0 and out["eyes"] == 0.0 and out["mouth"] == 0.0


def test_sefa_directions_are_orthonormal_eigenvectors(digiface):
    w = digiface.spec.sefa_weight(digiface.module)
    d = baselines.sefa(w)
    assert torch.allclose(d @ d.T, torch.eye(100), atol=1e-4)
    wn = w.double().reshape(100, -1)
    wn = wn / wn.norm(dim=0)
    gram = wn @ wn.T
    energies = [float(v.double() @ gram @ v.double()) for v in d[:5]]
    assert energies == sorted(energies, reverse=True)


def test_robust_pca_recovers_low_rank_plus_sparse():
    """On a symmetric low-rank + sparse matrix (what a Jacobian Gram matrix is), with PCP's standard weight."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(60, 3, generator=g, dtype=torch.float64)
    low = u @ u.T
    sparse = torch.zeros(60, 60, dtype=torch.float64)
    idx = torch.randperm(3600, generator=g)[:50]
    sparse.view(-1)[idx] = 10 * torch.randn(50, generator=g, dtype=torch.float64)
    sparse = sparse + sparse.T
    l_hat, s_hat = baselines.robust_pca(low + sparse, lam=1 / 60 ** 0.5)
    assert torch.linalg.norm(l_hat - low) / torch.linalg.norm(low) < 1e-3
    assert baselines._rank(l_hat) == 3
    # batched: each matrix as if alone, whatever the others need
    batch = torch.stack([low + sparse, 2 * low, low + 3 * sparse])
    lb, sb = baselines.robust_pca(batch, lam=1 / 60 ** 0.5)
    for i in range(3):
        li, si = baselines.robust_pca(batch[i], lam=1 / 60 ** 0.5)
        assert torch.allclose(lb[i], li) and torch.allclose(sb[i], si)


def test_robust_pca_step_size_is_lowrankgans():
    """mu = m n / (4 ||M||_1) with the matrix 1-norm (largest column sum), as numpy's ord=1 in LowRankGAN's code: the
    first singular value threshold is 1/mu. With the entrywise sum instead, mu is n times smaller and a rank-one
    matrix of this size would be thresholded to nothing in one step."""
    v = torch.ones(50, dtype=torch.float64)
    low, _ = baselines.robust_pca(torch.outer(v, v), max_iter=1)
    # eigenvalue 50, threshold 1/mu = 4 * 50 / 2500 = 0.08: L after one step is (50 - 0.08)/50 of M
    assert torch.allclose(low, torch.outer(v, v) * (50 - 0.08) / 50)


def test_resefa_maximises_the_inside_outside_ratio():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(10, 10, generator=g, dtype=torch.float64)
    b = torch.randn(10, 10, generator=g, dtype=torch.float64)
    inside, outside = a @ a.T, b @ b.T + torch.eye(10, dtype=torch.float64)
    d = baselines.resefa(inside, outside, tau=0).double()
    ratio = lambda v: float(v @ inside @ v / (v @ outside @ v))  # noqa: E731
    assert ratio(d[0]) >= max(ratio(torch.randn(10, generator=g, dtype=torch.float64)) for _ in range(200))
    assert ratio(d[0]) > ratio(d[-1])


def test_lowrankgan_directions_lie_in_the_background_null_space():
    """By construction the directions are orthogonal to the row space of the background's low-rank
    part L_b (RPCA of its Gram matrix); they also have a component along the region's L_f."""
    g = torch.Generator().manual_seed(2)
    jb = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 10, generator=g, dtype=torch.float64)
    jf = torch.randn(50, 10, generator=g, dtype=torch.float64)
    inside, outside = jf.T @ jf / 50, jb.T @ jb / 200
    d = baselines.lowrankgan(inside, outside).double()
    low_b, _ = baselines.robust_pca(outside)
    assert (low_b @ d.T).norm() < 1e-6 * low_b.norm()  # directions are float32
    assert float((d @ inside * d).sum(1).min()) > 0


def test_jacobian_matches_finite_differences(digiface):
    lat = digiface.sample([3])
    (j,) = baselines.jacobians(digiface, lat)
    v = torch.zeros(100); v[7] = 1e-3
    fd = (digiface.synthesize(Latents(lat.z + v)) - digiface.synthesize(Latents(lat.z - v))).mean(1).flatten() / 2e-3
    assert torch.allclose(j[:, 7].float(), fd, atol=2e-2)


def test_bench_end_to_end_small(digiface, tmp_path, monkeypatch):
    import panda.methods
    rankings = []  # PandA + mask ranks its appearances on the calibration faces once per region, not again for the test
    ranking = panda.methods.region_appearances
    monkeypatch.setattr(panda.methods, "region_appearances", lambda *a, **k: rankings.append(1) or ranking(*a, **k))
    res = run_roir(digiface, n=16, n_calib=8, budget=4, n_train=300, n_jacobian=2, ganspace_samples=400, progress=False)
    assert len(rankings) == len(REGIONS)
    assert res.n_test >= 12 and res.dilations == (2, 4)
    assert {r.method for r in res.rows} == set(METHODS)
    assert len(res.rows) == len(METHODS) * len(REGIONS)
    chosen = 0
    for r in res.rows:
        if r.method == "StyleSpace":  # reported through the registry's availability, not a special case
            assert not r.available and "needs a StyleGAN" in r.label and not r.scores
        elif not r.chosen:  # no candidate specific to the region: "none", with nothing measured
            assert r.label.startswith("none") and not r.scores and r.tried > 0 and r.eligible == 0
        else:
            chosen += 1
            assert set(r.scores) == {2, 4} and all(set(v) == set(METRICS) for v in r.scores.values())
            mean, _, n = r.score("ROIR")
            assert mean > 0 and math.isfinite(mean) and n > 0
            assert r.score("ROIR", 4)[0] < mean  # the same edit against wider masks leaves less outside
            assert 0 <= r.score("inside share")[0] <= 1
            assert 0.02 < r.change < 0.1  # matched magnitude (target 0.05) holds on the test faces
            assert 0 < r.eligible <= r.tried and set(r.split) == set(CELLS)
    assert chosen >= 6
    assert all(res.row("PandA", region).chosen for region in REGIONS)
    assert res.per_image_s["ReSeFa"] > 0 and "PandA" not in res.per_image_s
    paths = write_outputs(res, tmp_path)
    assert all(p.is_file() for p in paths)
    assert (tmp_path / "cells" / "eyes_PandA.png").is_file()
    text = (tmp_path / "roir.md").read_text()
    assert "n/a (needs a StyleGAN generator)" in text and "inside share" in text and "specificity" in text
    assert "| PandA | +4 px |" in text
    assert (tmp_path / "roir.csv").read_text().count("\n") == 1 + 2 * len(res.rows)  # a line per dilation


def _box_edit(ctx, box):
    """An 'edit' that brightens a fixed box of the image (fractions of the side) and nothing else."""
    def apply(lat, a, rows):
        x = ctx.generator.synthesize(lat)
        size = x.shape[-1]
        x0, y0, x1, y1 = (round(v * size) for v in box)
        out = x.clone()
        out[..., y0:y1, x0:x1] += 0.1 * a
        return out
    return apply


def test_an_edit_of_another_region_gets_none(digiface):
    """Specificity gates the choice: an edit that brightens only the eyes box is chosen for the eyes and is "none"
    for the nose and the mouth, however low its ROIR against them would be (the mouth box does not overlap it)."""
    from panda.landmarks import BoxMasker
    from panda.methods import Candidate, Method, register_method

    eyes = BoxMasker.DEFAULT["eyes"]
    register_method(Method("EyesOnly", lambda g: None, lambda ctx: (None, 0.0),
                           lambda _s, ctx, region, faces: [Candidate("eyes box", _box_edit(ctx, eyes))]))
    try:
        res = run_roir(digiface, n=6, n_calib=6, budget=1, n_train=200, n_jacobian=2, ganspace_samples=200,
                       progress=False, masker=BoxMasker(), cross_check=False)
        text = markdown(res)
    finally:
        del METHODS["EyesOnly"]
    assert res.row("EyesOnly", "eyes").chosen
    assert res.row("EyesOnly", "eyes").score("ROIR")[0] < 1e-3  # nothing outside the box changed
    assert res.row("EyesOnly", "eyes").score("specificity")[0] > 100
    for region in ("nose", "mouth"):
        row = res.row("EyesOnly", region)
        assert not row.chosen and row.label.startswith("none") and row.tried == 2 and row.eligible == 0
    assert "| EyesOnly | +2 px | 0.00 +- 0.00 | none | none |" in text


def test_face_cells_split_every_pixel_once():
    g = torch.Generator().manual_seed(3)
    masks = {r: torch.rand(4, 16, 16, generator=g) > 0.7 for r in REGIONS}
    masks["face"] = torch.rand(4, 16, 16, generator=g) > 0.3
    for first in (None, "nose"):
        cells = face_cells(masks, first)
        assert list(cells) == list(CELLS)
        assert (torch.stack(list(cells.values())).sum(0) == 1).all()  # disjoint and covering
    assert torch.equal(face_cells(masks, "nose")["nose"], masks["nose"])  # the target keeps its whole mask
    assert not torch.equal(face_cells(masks)["nose"], masks["nose"])  # otherwise the eyes come first


def test_specificity_and_cell_rms():
    x0 = torch.zeros(2, 3, 8, 8)
    cells = {"a": torch.zeros(2, 8, 8, dtype=torch.bool), "b": torch.zeros(2, 8, 8, dtype=torch.bool)}
    cells["a"][:, :4] = True
    cells["b"][:, 4:] = True
    x1 = x0.clone()
    x1[:, :, :4] = 0.2  # all of a's pixels by 0.2
    x1[:, :, 4:6] = 0.1  # half of b's by 0.1: RMS 0.1 / sqrt(2)
    rms = cell_rms(x0, x1, cells)
    assert torch.allclose(rms["a"], torch.full((2,), 0.2)) and torch.allclose(rms["b"], torch.full((2,), 0.1 / 2 ** 0.5))
    assert torch.allclose(specificity(x0, x1, Cells("a", cells)), torch.full((2,), 2 * 2 ** 0.5))
    assert torch.allclose(specificity(x0, x1, Cells("b", cells)), torch.full((2,), 1 / (2 * 2 ** 0.5)))


def test_grow_widens_masks_by_whole_pixels():
    m = torch.zeros(1, 11, 11, dtype=torch.bool)
    m[0, 5, 5] = True
    for px in (1, 2, 3):
        g = grow(m, px)
        rows = torch.nonzero(g[0])[:, 0]
        assert int(rows.min()) == 5 - px and int(rows.max()) == 5 + px  # reaches px along the axes
        assert bool(g[0, 5 - px, 5 - px]) == (px == 1)  # and, beyond a 3 x 3 square, cuts its corners (an octagon)
    assert torch.equal(grow(m, 0), m)


def test_resefa_per_image_matches_one_at_a_time():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, 8, 8, generator=g, dtype=torch.float64)
    b = torch.randn(3, 8, 8, generator=g, dtype=torch.float64)
    inside, outside = a @ a.transpose(1, 2), b @ b.transpose(1, 2) + torch.eye(8, dtype=torch.float64)
    batch = baselines.resefa(inside, outside, tau=1e-3)
    for i in range(3):
        one = baselines.resefa(inside[i], outside[i], tau=1e-3)
        assert torch.allclose((batch[i] * one).sum(1).abs(), torch.ones(8), atol=1e-4)  # same directions, up to sign


def test_part_regions_locate_parts(digiface):
    """Shares of each part's mass over the five cells sum to 1; a part is named after its highest-lift cell."""
    from panda.fitting import fit_factors
    from panda.landmarks import FaceMeshMasker, face_set
    from panda.naming import part_regions

    model = fit_factors(digiface, "main.5", None, 12, 300, 0, n_heldout=0, background_samples=0)
    faces = face_set(digiface, 20_000_000, 12, FaceMeshMasker(), None)
    pr = part_regions(model, faces)
    assert pr.share.shape == (12, len(CELLS)) and torch.allclose(pr.share.sum(1), torch.ones(12), atol=1e-4)
    assert torch.allclose(pr.area.sum(), torch.tensor(1.0), atol=1e-4)
    for k, name in pr.names().items():
        assert name in REGIONS and pr.cell(k) == name and 0 < pr.purity(k) <= 1
    s = pr.summary()
    assert s["distinct"] == len(set(pr.names().values()))
    assert all(s[r]["lift"] > 1 for r in REGIONS)  # the best part for a region is denser there than uniform


def test_a_registered_method_joins_the_benchmark(digiface):
    """Adding a baseline is one registration: the protocol runs it and the rows report it."""
    from panda.methods import Candidate, Method, register_method

    def propose(_state, ctx, region, faces):
        return [Candidate("identity", lambda lat, a, rows: ctx.generator.synthesize(lat))]

    register_method(Method("Nothing", lambda g: None, lambda ctx: (None, 0.0), propose))
    try:
        res = run_roir(digiface, n=8, n_calib=8, budget=1, n_train=200, n_jacobian=2, ganspace_samples=200, progress=False)
        text = markdown(res)
    finally:
        del METHODS["Nothing"]
    row = res.row("Nothing", "eyes")
    # an edit that changes nothing is specific to no region: "none", reported in its row
    assert row.available and not row.chosen and row.tried == 2
    assert "| Nothing | +2 px | none | none | none |" in text


def test_setup_cost_times_every_method(tmp_path):
    """On a tiny random StyleGAN2 (the cost's shape, not its size): every figure is measured and positive, the
    Jacobian is scaled from the tangents measured to the whole latent, and the table says so."""
    from panda.checkpoints import random_stylegan2
    from panda.setup_cost import time_setup
    from panda.tables import setup_cost_markdown

    g = random_stylegan2(16)
    cost = time_setup(g, "synthesis.b8.conv1", n_train=8, rank_parts=2, tangents=4, chunk=2)
    assert cost.latent_dim == 512 and cost.resolution == 16 and cost.tangents == 4
    for v in (cost.panda_extract_s, cost.panda_fit_s, cost.jacobian_s, cost.resefa_solve_s, cost.rpca_step_s):
        assert v > 0
    assert cost.lowrankgan_s > cost.lowrankgan_min_s == cost.jacobian_s and cost.resefa_s > cost.jacobian_s
    text = setup_cost_markdown([cost])
    assert "4 of 512 tangent directions" in text and f"{cost.resefa_s / cost.panda_s:.1f}x" in text


def test_your_own_method_from_a_file_against_panda_alone(tmp_path):
    """`panda bench roir --methods-from FILE --method PandA --method NAME`: the example plugin registers a method,
    the run compares only the two named, and the tables list those two; bad plugins and names stop in one line."""
    from pathlib import Path

    from click.testing import CliRunner

    from panda.cli import main
    example = Path(__file__).resolve().parent.parent / "examples" / "roir_my_method.py"
    run = CliRunner().invoke
    try:
        r = run(main, ["bench", "roir", "--generator", "dcgan-digiface", "--n", 8, "--n-calib", 8, "--budget", 2,
                       "--n-train", 200, "--methods-from", str(example), "--method", "PandA", "--method", "Random z",
                       "--out", str(tmp_path / "b"), "-q"])
        assert r.exit_code == 0, r.output
        text = (tmp_path / "b" / "roir.md").read_text()
        assert "| Random z | +2 px |" in text and "| PandA | +2 px |" in text
        assert "GANSpace" not in text and "ReSeFa" not in text  # no rows, and no settings of methods not run
        assert "; Random z with 2 random unit directions in z" in text  # the user's method says how it ran
        assert "; PandA at main.5 with R_S = 24, 200 training samples" in text
        r = run(main, ["bench", "roir", "--methods-from", str(example), "--out", str(tmp_path / "c")])
        assert r.exit_code == 2 and "registered twice" in r.output  # the same file run again in one process
    finally:
        METHODS.pop("Random z", None)
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('oops')\n")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    (tmp_path / "mine.txt").write_text("x = 1\n")
    for args, match in ((["--methods-from", str(bad)], "RuntimeError: oops"),
                        (["--methods-from", str(empty)], "registered no method"),
                        (["--methods-from", str(tmp_path / "nope.txt")], "nope.txt' does not exist: give a Python file"),
                        (["--methods-from", str(tmp_path / "mine.txt")], "is not a Python file"),
                        (["--method", "Nope"], "unknown method(s) 'Nope'")):
        r = run(main, ["bench", "roir", *args, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and match in r.output, r.output
        assert not (tmp_path / "x").exists()
    with pytest.raises(PandaError, match="unknown method"):
        run_roir(None, methods=["Nope"])
