import re

from PIL import Image

from panda.demo import run_demo


def test_demo_writes_an_index_whose_pictures_exist(tmp_path):
    index = run_demo(n_samples=128, rank_parts=4, out=tmp_path / "demo", progress=False, n_show=2, n_top=2)
    text = index.read_text()
    pngs = set(re.findall(r'src="([^"]+\.png)"', text))
    assert {"parts.png", "overview.png", "edit_part3.png", "part0_appearances.png", "refine.png", "remove_0.png",
            "localize_top.png", "localize_background.png", "edit_region.png", "ranks.png", "errors.png",
            "retrieve.png"} <= pngs
    for name in pngs:
        with Image.open(tmp_path / "demo" / name) as im:
            assert im.width > 100 and im.height > 100
    assert (tmp_path / "demo" / "factors.safetensors").is_file()
    assert "held-out" in text
    assert "How many parts" in text and "R_S = 4, 8, 12, 16, 24, 32, 40, 48" in text
    assert not list((tmp_path / "demo").glob(".*tmp"))  # no temporary files left behind


def test_report_draws_the_demo_page_for_factors_one_already_has(factor_file, tmp_path):
    """panda report FACTORS: the demo's sections from a factor file, without fitting; with no face part named the
    FaceMesh pictures are left out (said), and transfer shows a name of the user's own, else the first part."""
    import shutil

    from click.testing import CliRunner

    from panda.cli import main
    from panda.model import PandA
    f = tmp_path / "f.safetensors"
    shutil.copy(factor_file, f)
    model = PandA.load(f)
    model.name_part(3, "left eye")
    model.save(f)
    r = CliRunner().invoke(main, ["report", str(f), "--seeds", "300,302", "--n-top", "2", "-q", "--out",
                                  str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "r" / "index.html").read_text()
    pngs = set(re.findall(r'src="([^"]+\.png)"', text))
    assert {"parts.png", "overview.png", "edit_part7.png", "part0_appearances.png", "refine.png", "remove_0.png",
            "transfer_lefteye.png", "localize_top.png", "retrieve.png"} <= pngs
    assert "edit_region.png" not in pngs and "ranks.png" not in pngs  # no face part named; no --ranks
    for name in pngs:
        with Image.open(tmp_path / "r" / name) as im:
            assert im.width > 100 and im.height > 100
    assert "seeds 300, 302, not used for fitting" in text and "part 3: left eye" in text
    assert PandA.load(tmp_path / "r" / "factors.safetensors").part_names_ == {3: "left eye"}
    for seeds, match in (("0", "at least 2"), ("0-16", "at most 16")):
        r = CliRunner().invoke(main, ["report", str(factor_file), "--seeds", seeds, "--out", str(tmp_path / "s")])
        assert r.exit_code == 2 and match in r.output and not (tmp_path / "s").exists()


def test_report_draws_ones_own_latents_and_a_fit_without_a_background(factor_file, tmp_path):
    import numpy as np
    from click.testing import CliRunner

    from panda import PandA
    from panda.cli import main
    np.save(tmp_path / "z.npy", np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32))
    model = PandA.load(factor_file)
    model.set_background(None)  # as `panda fit --background-samples 0` leaves it
    f = model.save(tmp_path / "f.safetensors")
    r = CliRunner().invoke(main, ["report", str(f), "--latent", str(tmp_path / "z.npy"), "--n-top", "1",
                                  "-q", "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "r" / "index.html").read_text()
    assert "Samples shown: the 2 latents given" in text and "Latent 0: its six strongest concepts" in text
    assert "global choice: it has none" in text and "the fit has no global one" in text
    with Image.open(tmp_path / "r" / "parts.png") as im, Image.open(tmp_path / "r" / "edit_part0.png") as edit:
        assert im.height > 100 and edit.height > 100
    r = CliRunner().invoke(main, ["report", str(factor_file), "--latent", str(tmp_path / "z.npy"), "--seeds", "1-2",
                                  "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "not both" in r.output


def test_report_refuses_a_rank_sweep_without_training_seeds(celeba, tmp_path):
    import pytest
    import torch

    from panda import FeatureSource, PandA, PandaError
    from panda.demo import write_report
    torch.manual_seed(0)
    on_latents = PandA(rank_parts=4, max_iter=2).fit(FeatureSource(celeba, "relu2", celeba.sample(range(32))))
    assert on_latents.data_ == "latents"
    with pytest.raises(PandaError, match="fitted on latents"):
        write_report(on_latents, celeba, tmp_path / "r", [40, 41], ranks=True)
    assert not (tmp_path / "r").exists()
