"""Projection: the StyleGAN latent that reproduces an image, and editing it."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import panda
from panda import PandaError
from panda.cli import main
from panda.drawing import to_pil
from panda.latents import load_latents
from panda.projection import project, psnr, save_latent

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def sg3():
    return panda.load_generator(FIXTURES / "stylegan3_nvlabs.pkl")


def test_projection_recovers_a_generated_image(sg3):
    target = sg3.render([7])[0]
    result = project(sg3, target, space="w+", steps=80)
    assert result.losses[-1] < 0.2 * result.losses[0]
    assert result.psnr > 30 and result.psnr == pytest.approx(psnr(result.reconstruction, target))
    assert result.ws.shape == (1, sg3.module.num_ws, 16)
    assert torch.allclose(sg3.render(result.latents())[0], result.reconstruction, atol=1e-5)


def test_w_space_shares_one_latent(sg3):
    result = project(sg3, sg3.render([3])[0], space="w", steps=10)
    assert torch.equal(result.ws[:, 0], result.ws[:, -1])


def test_latent_file_round_trip_and_refusal(sg3, tmp_path):
    result = project(sg3, sg3.render([7])[0], steps=5)
    path = save_latent(result, sg3, tmp_path / "me.safetensors")
    assert torch.equal(load_latents(path, sg3).ws, result.ws)
    with pytest.raises(PandaError, match="was made with generator 'stylegan3_nvlabs.pkl'"):
        load_latents(path, panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl"))
    with pytest.raises(PandaError, match="does not exist"):
        load_latents(tmp_path / "none.safetensors", sg3)


@pytest.mark.parametrize("kwargs,match", [({"space": "s"}, "'w', 'w\\+' \\(StyleGANs\\) or 'z'"), ({"steps": 0}, "steps=0"),
                                          ({"lr": float("nan")}, "lr=nan")])
def test_bad_projection_arguments(sg3, kwargs, match):
    with pytest.raises(PandaError, match=match):
        project(sg3, sg3.render([1])[0], **kwargs)


def test_a_generator_without_a_mapping_is_projected_in_z():
    """The bundled DCGAN: from the closest of 64 seeds, z optimised on its shell; an image the generator drew (seed
    777, not among the starts) is found again, and the latent found renders the reconstruction."""
    g = panda.load_generator("dcgan-celeba")
    target = g.render([777])[0]
    result = project(g, target, steps=150)
    assert result.space == "z" and result.ws is None and result.z.shape == (1, 100) and result.labels is None
    assert result.losses[-1] < 0.2 * result.losses[0] and result.psnr > 25
    assert torch.allclose(g.render(result.latents())[0], result.reconstruction, atol=1e-5)
    norms = g.sample(range(64)).z.norm(dim=1)  # it stays on the shell of the start it came from
    assert float((norms - result.z.norm()).abs().min()) < 1e-3
    with pytest.raises(PandaError, match="no mapping network, so no W space"):
        project(g, target, space="w+", steps=1)
    with pytest.raises(PandaError, match="n_kept=0"):
        project(g, target, steps=1, n_kept=0)


def test_a_conditional_generator_is_projected_with_a_class():
    g = panda.load_generator("dcgan-eyes")
    target = g.render(g.sample([4242]))[0]
    result = project(g, target, steps=20, n_starts=16, n_kept=2)
    assert result.labels is not None and result.labels.shape == (1,) and 0 <= int(result.labels[0]) < len(g.classes)
    assert torch.allclose(g.render(result.latents())[0], result.reconstruction, atol=1e-5)


def test_the_projection_picture_never_replaces_the_photo(tmp_path):
    """A PNG photo named like the latent file (me.png, me.safetensors) stays; before, the comparison picture was
    written to me.png over it. A DCGAN photo projects in z, and the latent found edits on the command line."""
    g = panda.load_generator("dcgan-celeba")
    photo = tmp_path / "me.png"
    to_pil(panda.load_generator("dcgan-digiface").render([31])[0]).save(photo)
    before = photo.read_bytes()
    r = CliRunner().invoke(main, ["project", str(photo), "--generator", "dcgan-celeba", "--steps", "5",
                                  "--out", str(tmp_path / "me.safetensors"), "-q"])
    assert r.exit_code == 0, r.output
    assert photo.read_bytes() == before and (tmp_path / "me_projection.png").is_file()
    latents = load_latents(tmp_path / "me.safetensors", g)
    assert latents.z.shape == (1, 100) and latents.ws is None
    r = CliRunner().invoke(main, ["project", str(photo), "--generator", "dcgan-celeba", "--out", str(tmp_path / "me.png")])
    assert r.exit_code == 2 and ".safetensors" in r.output and photo.read_bytes() == before


def test_project_a_photo_then_edit_it_on_the_cli(sg3, tmp_path):
    photo = tmp_path / "photo.png"
    to_pil(sg3.render([9])[0]).resize((80, 60)).save(photo)  # not square, not the generator's size
    ckpt = str(FIXTURES / "stylegan3_nvlabs.pkl")
    r = CliRunner().invoke(main, ["project", str(photo), "--generator", ckpt, "--steps", "20", "--out", str(tmp_path / "me.safetensors"), "-q"])
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.output and (tmp_path / "me_projection.png").is_file()
    r = CliRunner().invoke(main, ["project", str(photo), "--generator", ckpt, "--steps", "2", "--out", str(tmp_path / "me.safetensors")])
    assert r.exit_code == 2 and "already exists: pass --overwrite" in r.output  # a projection is not lost silently
    f = tmp_path / "f.safetensors"
    r = CliRunner().invoke(main, ["fit", "--generator", ckpt, "-n", "32", "-rs", "3", "--background-samples", "0", "--out", str(f), "-q"])
    assert r.exit_code == 0, r.output
    for cmd in (["edit", "--part", "1"], ["localize", "--appearance", "2"], ["remove", "--part", "1"]):
        r = CliRunner().invoke(main, [cmd[0], str(f), "--generator", ckpt, "--latent", str(tmp_path / "me.safetensors"),
                                      *cmd[1:], "--out", str(tmp_path / cmd[0])])
        assert r.exit_code == 0, r.output
        assert list((tmp_path / cmd[0]).glob("*.png"))
    r = CliRunner().invoke(main, ["project", str(tmp_path / "missing.png"), "--generator", ckpt])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_the_explorer_shows_the_latents_of_a_file(sg3, tmp_path):
    """serve --latent: the page's sample number indexes the file's latents; beyond them, 400."""
    import io
    import json
    import urllib.error
    import urllib.request

    import numpy as np
    from PIL import Image
    from test_serve import serving

    from panda.drawing import to_pil
    from panda.features import FeatureSource
    from panda.generators import Latents
    from panda.model import PandA
    from panda.serve import create_app
    result = project(sg3, sg3.render([7])[0], steps=5)
    latents = Latents.from_w(torch.cat([result.ws, sg3.to_w([3])]), latent_dim=sg3.latent_dim)
    model = PandA(rank_parts=3).fit(FeatureSource(sg3, sg3.default_layer, range(32)))
    with pytest.raises(PandaError, match="no index into the 2 latents"):
        create_app(model, sg3, seed=2, latents=latents)
    for base, _ in serving(create_app(model, sg3, latents=latents)):
        pngs = []
        for seed in (0, 1):
            with urllib.request.urlopen(f"{base}/api/original.png?seed={seed}&full=1") as r:
                pngs.append(np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB")))
        for seed, png in enumerate(pngs):  # the file's latents, in order
            assert np.array_equal(png, np.asarray(to_pil(sg3.render(latents[seed:seed + 1])[0])))
        assert not np.array_equal(pngs[0], pngs[1])
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/api/original.png?seed=2")
        assert err.value.code == 400
        with urllib.request.urlopen(f"{base}/api/edit.png?seed=1&part=1&appearance=0&alpha=1") as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{base}/") as r:
            assert b"&#34;latents&#34;: 2" in r.read()
        # retrieval ranks the file's latents (both of them by default), by index
        with urllib.request.urlopen(f"{base}/api/retrieve.json?seed=0&part=1&appearance=0") as r:
            found = json.loads(r.read())
        assert found["n"] == 2 and sorted(found["most"]) == [0, 1]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/api/retrieve.json?seed=0&part=1&appearance=0&n=3")
        assert err.value.code == 400


def test_fit_without_background_search_and_batch_from_image_size(tmp_path):
    from panda.model import PandA
    f = tmp_path / "f.safetensors"
    r = CliRunner().invoke(main, ["fit", "--generator", str(FIXTURES / "stylegan2_nvlabs.pkl"), "-n", "32", "-rs", "3",
                                  "--background-samples", "0", "--out", str(f), "-q"])
    assert r.exit_code == 0, r.output
    assert "generator batch 256" in r.output and "kept in memory" in r.output
    assert PandA.load(f).background_ is None
    from panda.stylegan2 import Generator
    from panda.generators import GeneratorAdapter
    big = GeneratorAdapter(Generator(8, 0, 8, 256, 3, channel_base=256, channel_max=8), "sg256", 8,
                           forward_fn=lambda m, z, c: m(z, c))
    assert big.default_batch == 16
