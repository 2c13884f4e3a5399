"""Latent files: a person's own z, W or W+ latents, read, checked and drawn like seeds."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.numpy import save_file

import panda
from panda import PandaError
from panda.cli import main
from panda.latents import load_latents, save_latents

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def sg2():
    return panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl")


@pytest.fixture(scope="module")
def eyes():
    return panda.load_generator("dcgan-eyes")


def test_z_in_every_format_draws_the_seeds_images(celeba, tmp_path):
    z = celeba.sample([3, 8]).z.numpy()
    expected = celeba.render([3, 8])
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "one.npy", z[0])  # one latent, (latent_dim,)
    np.savez(tmp_path / "z.npz", z=z.astype(np.float64))  # float64 is read as float32
    save_file({"z": z}, str(tmp_path / "z.safetensors"))
    for name in ("z.npy", "z.npz", "z.safetensors"):
        assert torch.equal(celeba.render(load_latents(tmp_path / name, celeba)), expected), name
    assert torch.equal(celeba.render(load_latents(tmp_path / "one.npy", celeba)), expected[:1])


def test_w_and_w_plus_are_used_as_given(sg2, tmp_path):
    ws = sg2.to_w([1, 2])  # (2, num_ws, w_dim), truncated as the generator was loaded
    np.save(tmp_path / "wplus.npy", ws.numpy())
    np.savez(tmp_path / "w.npz", ws=ws[:, 0].numpy())  # W: one w for every layer
    assert torch.allclose(sg2.render(load_latents(tmp_path / "wplus.npy", sg2)), sg2.render([1, 2]), atol=1e-6)
    assert load_latents(tmp_path / "w.npz", sg2).ws.shape == ws[:, 0].shape
    assert torch.allclose(sg2.render(load_latents(tmp_path / "w.npz", sg2)), sg2.render([1, 2]), atol=1e-6)


def test_save_latents_round_trip_and_generator_check(sg2, celeba, tmp_path):
    lat = sg2.sample([4, 5])
    path = save_latents(lat, sg2, tmp_path / "mine.safetensors")
    assert torch.equal(load_latents(path, sg2).z, lat.z)
    with pytest.raises(PandaError, match="was made with generator 'stylegan2_nvlabs.pkl'"):
        load_latents(path, panda.load_generator(FIXTURES / "stylegan3_nvlabs.pkl"))
    with pytest.raises(PandaError, match="ending in .safetensors"):
        save_latents(lat, sg2, tmp_path / "mine.npz")


def test_class_labels_of_a_conditional_generator(eyes, tmp_path):
    lat = eyes.sample([0, 1, 2])
    np.savez(tmp_path / "lab.npz", z=lat.z.numpy(), labels=lat.labels.numpy())
    np.save(tmp_path / "nolab.npy", lat.z.numpy())
    got = load_latents(tmp_path / "lab.npz", eyes)
    assert torch.equal(got.labels, lat.labels) and torch.equal(eyes.render(got), eyes.render([0, 1, 2]))
    with pytest.raises(PandaError, match="conditional: put the classes in the file"):
        load_latents(tmp_path / "nolab.npy", eyes)
    eyes.set_class(5)
    try:
        assert load_latents(tmp_path / "nolab.npy", eyes).labels.tolist() == [5, 5, 5]
        with pytest.raises(PandaError, match="--class gives one more"):
            load_latents(tmp_path / "lab.npz", eyes)
    finally:
        eyes.class_index = None
    np.savez(tmp_path / "bad.npz", z=lat.z.numpy(), labels=np.array([0, 1, 99]))
    with pytest.raises(PandaError, match=r"class indices in 0\.\.7"):
        load_latents(tmp_path / "bad.npz", eyes)


def _write(path: Path, what) -> Path:
    if callable(what):
        what(path)
    else:
        path.write_bytes(what)
    return path


@pytest.mark.parametrize("name,what,match", [
    ("none.npy", None, "does not exist"),
    ("z.pt", b"\x80\x04", "is a pickle"),
    ("z.txt", b"0 1 2", "not '.txt'"),
    ("z.npy", b"not numpy", "not a readable .npy"),
    ("obj.npy", lambda p: np.save(p, np.array([{"z": 1}], dtype=object)), "not a readable .npy"),
    ("int.npy", lambda p: np.save(p, np.zeros((2, 100), dtype=np.int64)), "int64 values"),
    ("nan.npy", lambda p: np.save(p, np.full((2, 100), np.nan, dtype=np.float32)), "non-finite"),
    ("dim.npy", lambda p: np.save(p, np.zeros((2, 99), dtype=np.float32)), r"takes \(N, 100\)"),
    ("empty.npy", lambda p: np.save(p, np.zeros((0, 100), dtype=np.float32)), "N >= 1"),
    ("keys.npz", lambda p: np.savez(p, w=np.zeros((2, 100), dtype=np.float32)), r"holds \['w'\]"),
    ("both.npz", lambda p: np.savez(p, z=np.zeros((1, 100), np.float32), ws=np.zeros((1, 4, 8), np.float32)),
     "give z"),
    ("ws.npz", lambda p: np.savez(p, ws=np.zeros((1, 100), dtype=np.float32)), "no mapping network"),
    ("lab.npz", lambda p: np.savez(p, z=np.zeros((1, 100), np.float32), labels=np.zeros(1, np.int64)),
     "unconditional"),
])
def test_bad_latent_files_are_one_clear_error(celeba, tmp_path, name, what, match):
    path = tmp_path / name if what is None else _write(tmp_path / name, what)
    with pytest.raises(PandaError, match=match):
        load_latents(path, celeba)


def test_w_plus_of_the_wrong_shape(sg2, tmp_path):
    np.save(tmp_path / "w.npy", np.zeros((1, 3, 7), dtype=np.float32))
    with pytest.raises(PandaError, match=r"takes W \(N, 24\) or W\+ \(N, 8, 24\)"):
        load_latents(tmp_path / "w.npy", sg2)


def test_the_cli_edits_your_own_latents(celeba, factor_file, tmp_path):
    np.save(tmp_path / "mine.npy", celeba.sample([3, 5]).z.numpy())
    r = CliRunner().invoke(main, ["edit", str(factor_file), "--part", "1", "--latent", str(tmp_path / "mine.npy"),
                                  "--save-images", "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "e" / "images").glob("*.png"))
    assert names == ["edited_latent0.png", "edited_latent1.png"]
    # the same latents as seeds 3 and 5: the same edited pictures
    r = CliRunner().invoke(main, ["edit", str(factor_file), "--part", "1", "--seeds", "3,5", "--save-images",
                                  "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    for mine, seed in (("edited_latent0.png", "edited_3.png"), ("edited_latent1.png", "edited_5.png")):
        a = np.asarray(Image.open(tmp_path / "e" / "images" / mine))
        b = np.asarray(Image.open(tmp_path / "s" / "images" / seed))
        assert np.array_equal(a, b)
    r = CliRunner().invoke(main, ["parts", str(factor_file), "--latent", str(tmp_path / "none.npy"),
                                  "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "does not exist" in r.output and not (tmp_path / "p").exists()


def test_fit_on_your_own_latents_is_the_fit_on_the_same_seeds(celeba, tmp_path):
    from panda.model import PandA
    np.save(tmp_path / "z.npy", celeba.sample(range(64)).z.numpy())
    common = ["fit", "--layer", "relu2", "-rs", "4", "--max-iter", "3", "--background-samples", "0", "-q"]
    r = CliRunner().invoke(main, [*common, "--latent", str(tmp_path / "z.npy"), "--out", str(tmp_path / "mine.safetensors")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, [*common, "-n", "64", "--out", str(tmp_path / "seeds.safetensors")])
    assert r.exit_code == 0, r.output
    mine, seeds = PandA.load(tmp_path / "mine.safetensors"), PandA.load(tmp_path / "seeds.safetensors")
    assert mine.data_ == "latents" and seeds.data_ == "seeds" and mine.n_samples_ == 64
    assert torch.allclose(mine.parts_, seeds.parts_, atol=1e-5)
    assert mine.heldout_error_ == pytest.approx(seeds.heldout_error_, rel=1e-4)
    assert "64 given latents" in CliRunner().invoke(main, ["info", str(tmp_path / "mine.safetensors")]).output
    r = CliRunner().invoke(main, [*common, "-n", "10", "--latent", str(tmp_path / "z.npy"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not both" in r.output
