"""The ROIR benchmark: landmark masks, baselines and the protocol end to end (small)."""

import math

import pytest
import torch

from panda import baselines
from panda.evaluation import run_roir
from panda.generators import Latents
from panda.landmarks import REGIONS, FaceMeshMasker, RegionMasks, cross_check, load_onet, onet_points
from panda.methods import METHODS
from panda.metrics import METRICS
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
    g = torch.Generator().manual_seed(0)
    low = torch.randn(60, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 60, generator=g, dtype=torch.float64)
    sparse = torch.zeros(60, 60, dtype=torch.float64)
    idx = torch.randperm(3600, generator=g)[:100]
    sparse.view(-1)[idx] = 10 * torch.randn(100, generator=g, dtype=torch.float64)
    l_hat, s_hat = baselines.robust_pca(low + sparse)
    assert torch.linalg.norm(l_hat - low) / torch.linalg.norm(low) < 1e-3
    assert baselines._rank(l_hat) == 3


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


def test_bench_end_to_end_small(digiface, tmp_path):
    res = run_roir(digiface, n=16, n_calib=8, budget=1, n_train=300, n_jacobian=2, ganspace_samples=400, progress=False)
    assert res.n_test >= 12
    assert {r.method for r in res.rows} == set(METHODS)
    assert len(res.rows) == len(METHODS) * len(REGIONS)
    for r in res.rows:
        if r.method == "StyleSpace":  # reported through the registry's availability, not a special case
            assert not r.available and "needs a StyleGAN" in r.label and not r.scores
        else:
            assert set(r.scores) == set(METRICS)  # every registered metric, for every method
            mean, _, n = r.scores["ROIR"]
            assert mean > 0 and math.isfinite(mean) and n > 0
            assert 0 <= r.scores["inside share"][0] <= 1
            assert 0.02 < r.change < 0.1  # matched magnitude (target 0.05) holds on the test faces
    paths = write_outputs(res, tmp_path)
    assert all(p.is_file() for p in paths)
    text = (tmp_path / "roir.md").read_text()
    assert "n/a (needs a StyleGAN generator)" in text and "inside share" in text
    assert (tmp_path / "roir.csv").read_text().count("\n") == 1 + len(res.rows)


def test_a_registered_method_joins_the_benchmark(digiface):
    """Adding a baseline is one registration: the protocol runs it and the rows report it."""
    from panda.methods import Candidate, Method, register_method

    def propose(_state, ctx, region):
        return [Candidate("identity", lambda lat, a: ctx.generator.synthesize(lat))]

    register_method(Method("Nothing", lambda g: None, lambda ctx: (None, 0.0), propose))
    try:
        res = run_roir(digiface, n=8, n_calib=8, budget=1, n_train=200, n_jacobian=2, ganspace_samples=200, progress=False)
        text = markdown(res)
    finally:
        del METHODS["Nothing"]
    row = res.row("Nothing", "eyes")
    assert row.available and row.label == "identity" and row.change == 0  # an edit that changes nothing
    assert "| Nothing |" in text


def test_bench_cli_rejects_bad_numbers(tmp_path):
    from click.testing import CliRunner

    from panda.cli import main
    r = CliRunner().invoke(main, ["bench", "roir", "--n", "0", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--n" in r.output and ">=1" in r.output.replace(" ", "")
    r = CliRunner().invoke(main, ["bench", "roir", "--target", "1.5", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--target" in r.output


def test_name_parts_cli_saves_names(factor_file, tmp_path):
    import shutil

    from click.testing import CliRunner

    from panda.cli import main
    from panda.model import PandA
    path = tmp_path / "f.safetensors"
    shutil.copy(factor_file, path)
    r = CliRunner().invoke(main, ["name-parts", str(path), "--n", "12"])
    assert r.exit_code == 0, r.output
    names = PandA.load(path).part_names_
    assert set("/".join(names.values()).split("/")) == {"eyes", "nose", "mouth"}
