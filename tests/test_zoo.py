"""The generator zoo: checkpoints in their users' formats, loaded safely and equal to the reference code.

Fixtures (tests/fixtures/, made by make_zoo_fixtures.py from the reference implementations on random
weights) hold tiny checkpoints and the images and one feature map the reference computed from them.
"""

import io
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

import panda
from panda import PandaError
from panda.checkpoints import PersistentObject, SafeUnpickler, load_checkpoint, safe_unpickle
from panda.cli import main
from panda.features import FeatureSource, capture
from panda.generators import Latents
from panda.model import PandA

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHECKPOINTS = {"stylegan2_nvlabs": "stylegan2_nvlabs.pkl", "stylegan2_nvlabs_cond": "stylegan2_nvlabs_cond.pkl",
               "stylegan3_nvlabs": "stylegan3_nvlabs.pkl", "stylegan3r_nvlabs_cond": "stylegan3r_nvlabs_cond.pkl",
               "stylegan2_rosinality": "stylegan2_rosinality.pt", "biggan": "biggan",
               "progan_genforce": "progan_genforce.pth", "stylegan_genforce": "stylegan_genforce.pth"}
#: (fixture, truncation) pairs the reference computed images for
CASES = [(n, p) for n in CHECKPOINTS for p in ((1.0,) if n == "progan_genforce" else (1.0, 0.4) if n == "biggan" else (1.0, 0.7))]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def fixture_latents(g, ref) -> Latents:
    lat = g.sample([0, 1, 2], class_index=0 if g.classes else None)
    return lat if g.classes is None else Latents(lat.z, ref["classes"])


@pytest.mark.parametrize("name,psi", CASES)
def test_images_equal_the_reference(name, psi):
    ref = load_file(FIXTURES / f"{name}_ref.safetensors")
    with safe_open(str(FIXTURES / f"{name}_ref.safetensors"), "pt") as fh:
        layer = fh.metadata()["feature_layer"]
    g = panda.load_generator(FIXTURES / CHECKPOINTS[name], truncation_psi=psi)
    images = g.synthesize(fixture_latents(g, ref))
    assert images.shape == ref[f"images_psi{psi:g}"].shape
    assert rel_err(images, ref[f"images_psi{psi:g}"]) < 1e-4
    if psi == 1.0:  # one intermediate feature map: the layer panda factorises by default
        assert g.default_layer == layer
        assert rel_err(capture(g, fixture_latents(g, ref), layer), ref["feature"]) < 1e-4


def test_psi_changes_the_image_and_noise_modes_differ():
    path = FIXTURES / "stylegan2_nvlabs.pkl"
    one, low = (panda.load_generator(path, truncation_psi=p).synthesize(Latents(torch.randn(2, 16))) for p in (1, 0.5))
    assert rel_err(one, low) > 1e-2
    lat = panda.load_generator(path).sample([0])
    const = panda.load_generator(path, noise_mode="const")
    assert torch.equal(const.synthesize(lat), const.synthesize(lat))  # const noise reproduces an image
    rnd = panda.load_generator(path, noise_mode="random")
    assert not torch.equal(rnd.synthesize(lat), rnd.synthesize(lat))


def test_checkpoint_provenance(tmp_path):
    path = FIXTURES / "stylegan2_nvlabs.pkl"
    g = panda.load_generator(path, truncation_psi=0.7)
    assert g.source == {"format": "nvlabs-pickle", "file": path.name, "truncation_psi": 0.7, "noise_mode": "const"}
    assert g.weight_hash == panda.fileio.sha256_of(path) and g.default_layer == "synthesis.b16.conv1"


def test_conditional_class_by_index_or_name():
    g = panda.load_generator(FIXTURES / "stylegan2_nvlabs_cond.pkl", class_=2)
    assert g.sample([0, 1]).labels.tolist() == [2, 2]
    with pytest.raises(PandaError, match="class 9 is out of range"):
        g.set_class(9)
    with pytest.raises(PandaError, match="unknown class 'sky'"):
        g.set_class("sky")
    with pytest.raises(PandaError, match="unconditional"):
        panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl", class_=0)
    eyes = panda.load_generator("dcgan-eyes", class_="green")
    assert eyes.sample([0, 5]).labels.tolist() == [5, 5]


# ------------------------------------------------------------------------------ a fit on a StyleGAN
def test_fit_edit_and_refuse_another_checkpoint_on_the_cli(tmp_path):
    ckpt = FIXTURES / "stylegan2_nvlabs.pkl"
    f = tmp_path / "sg2.safetensors"
    r = CliRunner().invoke(main, ["fit", "--generator", str(ckpt), "--trunc", "0.7", "-n", "48", "-rs", "4", "--out", str(f), "-q"])
    assert r.exit_code == 0, r.output
    model = PandA.load(f)
    assert model.layer_ == "synthesis.b16.conv1" and model.generator_source_["truncation_psi"] == 0.7
    r = CliRunner().invoke(main, ["parts", str(f), "--seeds", "0-1", "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "give it with --generator PATH" in r.output and "stylegan2_nvlabs.pkl" in r.output
    r = CliRunner().invoke(main, ["edit", str(f), "--generator", str(ckpt), "--part", "1", "--seeds", "0-1", "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output  # truncation comes from the factor file
    r = CliRunner().invoke(main, ["edit", str(f), "--generator", str(ckpt), "--trunc", "1", "--part", "1", "--out", str(tmp_path / "e2")])
    assert r.exit_code == 2 and "truncation psi 0.7" in r.output
    other = FIXTURES / "stylegan2_rosinality.pt"
    r = CliRunner().invoke(main, ["edit", str(f), "--generator", str(other), "--part", "1", "--out", str(tmp_path / "e3")])
    assert r.exit_code == 2 and "fitted on checkpoint 'stylegan2_nvlabs.pkl'" in r.output


def test_stylegan3_fit_and_edit_in_python():
    g = panda.load_generator(FIXTURES / "stylegan3_nvlabs.pkl", truncation_psi=0.8)
    model = PandA(rank_parts=4).fit(FeatureSource(g, g.default_layer, range(48)))
    assert model.layer_shape_ == (32, 40, 40) and (model.parts_ >= 0).all()
    from panda.editing import Edit, edit
    x0, x1 = g.synthesize(g.sample([5])), edit(model, g, [5], [Edit(0, model.top_appearances(0, 1)[0], 1.0)])
    assert x1.shape == (1, 3, 32, 32) and not torch.allclose(x0, x1)
    assert torch.equal(edit(model, g, [5], [Edit(0, 0, 0.0)]), x0)  # alpha 0 reproduces the image


def test_an_edit_on_a_stylegan_stays_in_its_part():
    g = panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl")
    model = PandA(rank_parts=4).fit(FeatureSource(g, g.default_layer, range(64)))
    from panda.editing import Edit, edit, part_profile
    from panda.maps import upsample
    from panda.metrics import change_inside_fraction
    k = int(model.part_maps().flatten(1).max(1).values.argmax())
    x0 = g.render(range(100, 104))
    x1 = g.to_unit(edit(model, g, range(100, 104), [Edit(k, model.top_appearances(k, 1)[0], 2.0)])).cpu()
    region = (upsample(part_profile(model, k)[None], 32)[0] > 0.5).float()
    assert float(change_inside_fraction(x0, x1, region).mean()) > float(region.mean())


def test_transfer_on_a_stylegan_with_w_plus_latents():
    """Appearance transfer through a StyleGAN2 checkpoint, on W+ latents: a source's part given to a target changes
    the target mostly there, and a target given its own part is unchanged."""
    g = panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl")
    model = PandA(rank_parts=4).fit(FeatureSource(g, g.default_layer, range(64)))
    from panda.transfer import transfer
    k = int(model.part_maps().flatten(1).max(1).values.argmax())
    ws = Latents.from_w(g.to_w(range(100, 103)))
    result = transfer(model, g, ws[:2], ws[1:], parts=[k])
    assert result.images.shape == (2, 2, 3, 32, 32)
    assert torch.allclose(result.images[1, 0], result.targets[1], atol=1e-5)  # target 1 from itself
    area = float((result.shown > 0.5).float().mean())
    assert result.share > area and result.closer > 0


# -------------------------------------------------------------------------------- bad checkpoints
def _persistent_pickle(tmp_path, meta_for, name="bad.pkl") -> Path:
    """Write a pickle of NVlabs persistent objects without the reference code: a stand-in
    ``torch_utils.persistence._reconstruct_persistent_obj`` exists only while pickling."""
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: the safe loader maps the name to its recorder
        raise AssertionError

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj, pkg.persistence = _reconstruct_persistent_obj, mod

    class Obj:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    sys.modules.update({"torch_utils": pkg, "torch_utils.persistence": mod})
    try:
        path = tmp_path / name
        path.write_bytes(pickle.dumps(meta_for(Obj), protocol=4))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return path


def _as_objects(Obj, record: PersistentObject, module_src: str, **override):
    """A recorded persistent object (tree) as picklable stand-ins carrying ``module_src``."""
    state = dict(record.state, **override)
    state["_modules"] = {k: _as_objects(Obj, v, module_src) if isinstance(v, PersistentObject) else v
                         for k, v in (record.state.get("_modules") or {}).items()}
    return Obj(dict(type="class", version=4, module_src=module_src, class_name=record.class_name, state=state))


def test_embedded_code_is_never_run(tmp_path):
    """A pickle whose module source would write a file loads with no file written."""
    marker = tmp_path / "pwned"
    src = f"open({str(marker)!r}, 'w').write('ran')\n"
    good = safe_unpickle(FIXTURES / "stylegan2_nvlabs.pkl")["G_ema"]
    path = _persistent_pickle(tmp_path, lambda Obj: {"G_ema": _as_objects(Obj, good, src)})
    g = load_checkpoint(path)  # the same network, its embedded source ignored
    assert g.layer_shapes()["synthesis.b16.conv1"] == (32, 16, 16)
    assert not marker.exists()


def test_other_globals_are_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "exploit.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Exploit()}, protocol=4))
    with pytest.raises(PandaError, match="asks for (posix|os).system"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(PandaError, match="builtins.eval"):
        SafeUnpickler(io.BytesIO(pickle.dumps(eval))).load()


@pytest.mark.parametrize("make,match", [
    (lambda tmp: (tmp / "t.pkl").write_bytes((FIXTURES / "stylegan2_nvlabs.pkl").read_bytes()[:5000]), "damaged or"),
    (lambda tmp: (tmp / "t.pkl").write_bytes(pickle.dumps({"D": 1}, protocol=4)), "not an NVlabs training snapshot"),
    (lambda tmp: (tmp / "t.pt").write_bytes(_torch_bytes({"model": {}})), "no 'g_ema'"),
    (lambda tmp: (tmp / "t.pt").write_bytes(_torch_bytes({"g_ema": {"style.1.weight": torch.zeros(2, 2)}})), "stylegan2-pytorch"),
    (lambda tmp: (tmp / "t.pt").write_bytes(_torch_bytes({"g_ema": _NotATensor()})), "holds objects other than tensors"),
    (lambda tmp: (tmp / "t.txt").write_text("hello"), "Supported: nvlabs-pickle"),
])
def test_bad_files_give_one_clear_error(tmp_path, make, match):
    make(tmp_path)
    (path,) = [p for p in tmp_path.iterdir()]
    with pytest.raises(PandaError, match=match):
        load_checkpoint(path)


class _NotATensor:
    """An object torch.save pickles by class, which a weights_only load refuses."""


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_unknown_class_and_mismatched_shapes(tmp_path):
    good = safe_unpickle(FIXTURES / "stylegan2_nvlabs.pkl")["G_ema"]
    path = _persistent_pickle(tmp_path, lambda Obj: {"G_ema": Obj(dict(type="class", version=4, module_src="",
                                                                       class_name="Discriminator", state={}))}, "a.pkl")
    with pytest.raises(PandaError, match="not a StyleGAN2 or StyleGAN3 generator"):
        load_checkpoint(path)
    path = _persistent_pickle(tmp_path, lambda Obj: {"G_ema": _as_objects(Obj, good, "", _init_kwargs=dict(good.init_kwargs, w_dim=8))},
                              "b.pkl")  # a StyleGAN2 whose arguments do not fit its weights
    with pytest.raises(PandaError, match="do not fit"):
        load_checkpoint(path)


@pytest.mark.parametrize("kwargs,match", [
    ({"truncation_psi": float("nan")}, "finite"),
    ({"noise_mode": "loud"}, "noise mode"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(PandaError, match=match):
        panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl", **kwargs)


def test_biggan_truncation_and_files():
    with pytest.raises(PandaError, match=r"BigGAN truncation must be in \(0, 1\]"):
        panda.load_generator(FIXTURES / "biggan", truncation_psi=1.5)
    by_file = panda.load_generator(FIXTURES / "biggan" / "pytorch_model.bin")
    by_folder = panda.load_generator(FIXTURES / "biggan")
    assert by_file.weight_hash == by_folder.weight_hash and by_file.source["format"] == "biggan"
    z = panda.load_generator(FIXTURES / "biggan", truncation_psi=0.5).sample([0]).z
    assert z.abs().max() <= 1.0  # truncated noise: |z| <= 2 * truncation
    assert torch.allclose(2 * z, by_folder.sample([0]).z, atol=1e-6)


def test_progan_refuses_truncation():
    with pytest.raises(PandaError, match="ProGAN has no truncation"):
        panda.load_generator(FIXTURES / "progan_genforce.pth", truncation_psi=0.7)


def test_registered_dcgan_refuses_truncation():
    with pytest.raises(PandaError, match="no truncation"):
        panda.load_generator("dcgan-celeba", truncation_psi=0.5)


@pytest.mark.parametrize("args,match", [
    (["layers", "missing.pkl"], "does not exist"),
    (["layers", "tests"], "is a folder"),
    (["fit", "--generator", str(FIXTURES / "stylegan2_nvlabs.pkl"), "--trunc", "nan"], "not a finite number"),
    (["fit", "--generator", str(FIXTURES / "stylegan2_nvlabs_cond.pkl"), "--class", "7"], "class 7 is out of range"),
    (["fit", "--generator", "dcgan-celeba", "--class", "1"], "unconditional"),
])
def test_bad_generator_input_on_the_cli(tmp_path, args, match):
    r = CliRunner().invoke(main, args + (["--out", str(tmp_path / "x.safetensors")] if args[0] == "fit" else []))
    assert r.exit_code == 2 and match in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "x.safetensors").exists()


# ------------------------------------------------------------------------- baselines on a StyleGAN
def test_bench_runs_on_a_stylegan_with_every_method(tmp_path):
    """The whole ROIR pipeline on a random-weight StyleGAN2 (fixed boxes as regions: it draws no faces). The
    numbers mean nothing here; every method, StyleSpace included, must produce a row."""
    from panda.evaluation import run_roir
    from panda.landmarks import BoxMasker
    from panda.methods import METHODS
    from panda.tables import write_outputs
    g = panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl")
    res = run_roir(g, n=10, n_calib=8, budget=2, n_train=100, n_jacobian=2, ganspace_samples=300, progress=False,
                   masker=BoxMasker(), cross_check=False)
    assert {r.method for r in res.rows} == set(METHODS)
    for r in res.rows:
        assert r.available and r.tried > 0, r.label
        if r.chosen:  # random weights draw no faces: an edit may well be specific to no box ("none")
            assert torch.isfinite(torch.tensor(r.score("ROIR")[0])) and r.change > 0
    assert any(r.chosen for r in res.rows)
    from panda.methods import BenchContext
    ctx = BenchContext(g, res.faces, budget=1)
    for name in ("GANSpace", "SeFa"):  # StyleGAN baselines work in W
        state, _ = METHODS[name].setup(ctx)
        assert "(W)" in METHODS[name].propose(state, ctx, "eyes", res.faces)[0].label
    assert all(p.is_file() for p in write_outputs(res, tmp_path))


def test_style_gradients_match_finite_differences():
    from panda.baselines import style_gradients, style_offsets
    g = panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl")
    lat = g.sample([4])
    channels, maps = style_gradients(g, lat)
    assert maps.shape == (len(channels), 1, 32, 32)
    k = channels.index(("synthesis.b16.conv1.affine", 5))
    eps = 1e-3  # small: leaky ReLU kinks make larger steps differ from the derivative
    d = torch.zeros(g.module.synthesis.b16.conv1.affine.weight.shape[0])
    d[5] = eps
    with style_offsets(g, {"synthesis.b16.conv1.affine": d}):
        up = g.synthesize(lat).mean(1)[0]
    with style_offsets(g, {"synthesis.b16.conv1.affine": -d}):
        down = g.synthesize(lat).mean(1)[0]
    fd = ((up - down) / (2 * eps)).abs()
    assert (maps[k, 0] - fd).abs().max() < 0.01 * fd.max()


def test_region_overlap_known_answer():
    from panda.baselines import region_overlap
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, :2, :2] = 1.0  # channel 0 acts in the top-left quarter
    maps[1, 0, 2:, 2:] = 1.0  # channel 1 in the bottom-right
    region = torch.zeros(1, 4, 4, dtype=torch.bool)
    region[0, :2, :2] = True
    assert region_overlap(maps, region).tolist() == [1.0, 0.0]


def test_w_and_w_plus_latents():
    """Synthesis from W+ reproduces synthesis from z (truncation included); a single w is broadcast to every layer."""
    g = panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl", truncation_psi=0.7)
    lat = g.sample([0, 1])
    ws = g.to_w(lat)
    assert ws.shape == (2, g.module.num_ws, 24)
    assert torch.equal(g.synthesize(Latents.from_w(ws, latent_dim=16)), g.synthesize(lat))
    one = g.synthesize(Latents.from_w(ws[:, 0], latent_dim=16))  # W: mapping output is the same w on every layer
    assert torch.allclose(one, g.synthesize(lat), atol=1e-5)
    with pytest.raises(PandaError, match="W\\+ latents of shape"):
        g.synthesize(Latents.from_w(torch.zeros(2, 3, 24), latent_dim=16))
    with pytest.raises(PandaError, match="no mapping network"):
        panda.load_generator("dcgan-celeba").to_w([0])


def test_feature_layers_are_the_ones_users_mean():
    sg2 = panda.load_generator(FIXTURES / "stylegan2_nvlabs.pkl").feature_layers()
    assert "synthesis.b16.conv1" in sg2 and not any(n.endswith("torgb") or n == "synthesis" for n in sg2)
    sg1 = panda.load_generator(FIXTURES / "stylegan_genforce.pth")
    names = sg1.feature_layers()
    assert list(names) == [f"synthesis.layer{i}" for i in range(12)]  # not their noise/style sub-layers
    assert "synthesis.layer5.style" in sg1.layer_shapes()  # still hookable by name
    r = CliRunner().invoke(main, ["layers", str(FIXTURES / "stylegan2_nvlabs.pkl")])
    assert r.exit_code == 0 and "torgb" not in r.output and "more with --all" in r.output
    r = CliRunner().invoke(main, ["layers", str(FIXTURES / "stylegan2_nvlabs.pkl"), "--all"])
    assert "synthesis.b16.torgb" in r.output


def test_w_plus_on_genforce_stylegan():
    """genforce's StyleGAN truncates after its mapping network: W+ comes from the truncation module."""
    g = panda.load_generator(FIXTURES / "stylegan_genforce.pth", truncation_psi=0.7)
    ws = g.to_w([0, 1])
    assert ws.shape == (2, 12, 16) and type(g.w_module()).__name__ == "Truncation"
    assert torch.equal(g.synthesize(Latents.from_w(ws)), g.synthesize(g.sample([0, 1])))
