import importlib.util
import re
from pathlib import Path

import pytest
import torch

import panda
from panda import PandaError
from panda.features import capture, iter_features, modified, render_and_capture
from panda.generators import GENERATORS, GeneratorAdapter, GeneratorSpec, register_generator


@pytest.mark.parametrize("name,size", [("dcgan-celeba", 64), ("dcgan-digiface", 64), ("dcgan-eyes", 128)])
def test_builtin_generators_load_and_render(name, size):
    g = panda.load_generator(name)
    images = g.synthesize(g.sample([0, 1]))
    assert images.shape == (2, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1
    # a trained generator gives different images for different seeds, with real contrast
    assert (images[0] - images[1]).abs().mean() > 0.05
    assert images.std() > 0.2
    assert g.default_layer in g.layer_shapes()
    assert g.weight_hash == GENERATORS[name].weights.sha256
    assert g.spec is GENERATORS[name]


def test_seeds_are_reproducible_and_follow_stylegan_convention(celeba):
    import numpy as np
    a, b = celeba.sample([3, 7]), celeba.sample([3, 7])
    assert torch.equal(a.z, b.z)
    assert np.allclose(a.z[0].numpy(), np.random.RandomState(3).randn(100).astype(np.float32))


def test_conditional_generator_takes_a_class():
    g = panda.load_generator("dcgan-eyes")
    lat = g.sample([0, 1, 2], class_index=1)
    assert lat.labels.tolist() == [1, 1, 1]
    x_blue = g.synthesize(lat)
    lat.labels[:] = 6
    assert (g.synthesize(lat) - x_blue).abs().mean() > 1e-3
    with pytest.raises(PandaError, match="out of range"):
        g.sample([0], class_index=8)


def test_unconditional_generator_refuses_a_class(celeba):
    with pytest.raises(PandaError, match="unconditional"):
        celeba.sample([0], class_index=0)


def test_layer_shapes_list_hookable_layers(digiface):
    shapes = digiface.layer_shapes()
    assert shapes["main.5"] == (256, 8, 8)
    assert shapes["main.8"] == (128, 16, 16)


def test_capture_matches_a_manual_forward(celeba):
    lat = celeba.sample([0, 1])
    z = capture(celeba, lat, "relu2")
    m = celeba.module
    x = lat.z[:, :, None, None]
    manual = m.relu2(m.batchNorm2(m.convTr2(m.relu1(m.batchNorm1(m.convTr1(x))))))
    assert torch.allclose(z, manual)
    assert (z >= 0).all()


def _hook_count(module):
    return sum(len(m._forward_hooks) for m in module.modules())


def test_hooks_leave_the_generator_unchanged(celeba):
    lat = celeba.sample([0, 1])
    before = celeba.synthesize(lat)
    capture(celeba, lat, "relu2")
    with modified(celeba, "relu2", lambda z: z * 0):
        changed = celeba.synthesize(lat)
    with pytest.raises(RuntimeError):
        with modified(celeba, "relu2", lambda z: (_ for _ in ()).throw(RuntimeError("boom"))):
            celeba.synthesize(lat)
    assert not torch.equal(before, changed)
    assert _hook_count(celeba.module) == 0
    assert torch.equal(celeba.synthesize(lat), before)


@pytest.mark.parametrize("name,layer", [("celeba", "relu2"), ("digiface", "main.4")])
def test_render_and_capture_is_render_and_capture_in_one_pass(request, name, layer):
    gen = request.getfixturevalue(name)
    lat = gen.sample([3, 4, 5])
    gen.layer_module(layer)  # the layer list, made once per generator by a forward pass of its own
    calls = []
    first = next(m for m in gen.module.modules() if not list(m.children()))  # the generator's first layer
    handle = first.register_forward_hook(lambda *_: calls.append(1))
    try:
        images, z = render_and_capture(gen, lat, layer)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert torch.equal(images, gen.render(lat)) and images.device.type == "cpu"
    assert torch.equal(z, capture(gen, lat, layer))
    assert _hook_count(gen.module) == 0


def test_iter_features_batches_cover_all_seeds(celeba):
    chunks = list(iter_features(celeba, "relu3", list(range(10)), batch_size=4))
    assert [c.shape for c in chunks] == [(4, 128, 256), (4, 128, 256), (2, 128, 256)]


def test_unknown_generator_lists_valid_ones():
    with pytest.raises(PandaError, match=r"registered name \(dcgan-celeba, dcgan-digiface, dcgan-eyes\)"):
        panda.load_generator("stylegan9")


def test_unknown_layer_lists_valid_ones(celeba):
    with pytest.raises(PandaError, match=r"unknown layer 'relu9'.*relu2 \(256x8x8\)"):
        celeba.layer_module("relu9")


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "generateme" else real(name, *a))
    with pytest.raises(PandaError, match="pip install --no-deps generateme==0.1.2"):
        panda.load_generator("dcgan-celeba")


def test_wrong_weight_hash_is_refused(monkeypatch):
    import dataclasses
    spec = GENERATORS["dcgan-digiface"]
    spec = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, sha256="0" * 64))
    monkeypatch.setitem(GENERATORS, "dcgan-digiface", spec)
    with pytest.raises(PandaError, match="force-reinstall"):
        panda.load_generator("dcgan-digiface")


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(PandaError, match="CUDA is not available"):
        panda.load_generator("dcgan-celeba", device="cuda")


def test_any_module_plugs_into_the_adapter():
    """A generator nobody built in: a tiny conv net called with z directly."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Unflatten(1, (4, 2, 2)), torch.nn.Upsample(scale_factor=2),
                              torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 3, 1), torch.nn.Tanh())
    g = GeneratorAdapter(net, name="toy", latent_dim=16)
    assert g.layer_shapes()["3"] == (6, 4, 4)
    z = capture(g, g.sample(range(5)), "3")
    assert z.shape == (5, 6, 4, 4)


class _FileWeights:
    """Weights from a local file (a test stand-in for a wheel's weight file)."""

    def __init__(self, path):
        self.path = path

    def state_dict(self):
        return torch.load(self.path, weights_only=True), "toy-hash"


def test_one_spec_adds_a_generator_everywhere(tmp_path):
    """Registering one spec makes a generator loadable by name and a choice of every CLI command."""
    from click.testing import CliRunner

    from panda.cli import main

    def build():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Unflatten(1, (4, 2, 2)), torch.nn.Upsample(scale_factor=2),
                                   torch.nn.Conv2d(4, 3, 3, padding=1), torch.nn.Tanh())

    torch.save(build().state_dict(), tmp_path / "toy.pt")
    register_generator(GeneratorSpec(name="toy", description="a toy", build=build, weights=_FileWeights(tmp_path / "toy.pt"),
                                     latent_dim=16, default_layer="3", forward=lambda m, z, onehot: m(z)))
    try:
        g = panda.load_generator("toy")
        assert g.layer_shapes()["3"] == (3, 4, 4) and g.weight_hash == "toy-hash" and g.spec.sefa_weight is None
        r = CliRunner().invoke(main, ["layers", "toy"])
        assert r.exit_code == 0 and "(default)" in r.output, r.output
        with pytest.raises(ValueError, match="registered twice"):
            register_generator(GENERATORS["toy"])
    finally:
        del GENERATORS["toy"]
    r = CliRunner().invoke(main, ["layers", "toy"])
    assert r.exit_code == 2 and "toy" in r.output


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "my_generator.py"


@pytest.fixture
def registry_restored(monkeypatch):
    """Whatever a test registers (files, plugins) is gone after it; installed plugins are looked for anew."""
    import panda.generators as generators
    before = dict(GENERATORS)
    monkeypatch.setattr(generators, "_plugins_loaded", False)
    yield
    GENERATORS.clear()
    GENERATORS.update(before)


def test_your_own_generator_on_every_command_through_generators_from(tmp_path, registry_restored):
    """examples/my_generator.py: the user's own module and checkpoint, registered by a file that every command runs
    with --generators-from; factor files fitted on it need it again, and say so."""
    from click.testing import CliRunner

    from panda.cli import main
    run = CliRunner().invoke

    def registered(*args):  # one process runs each command here: what a file registers goes again before the next
        GENERATORS.pop("my-dcgan", None)
        return run(main, [str(a) for a in args] + ["--generators-from", str(EXAMPLE)])

    r = registered("layers", "my-dcgan")
    assert r.exit_code == 0 and re.search(r"main\.5\s+256 x\s+8 x 8\s+\(default\)", r.output), r.output
    assert "registered my-dcgan" in r.output
    mine, theirs = panda.load_generator("my-dcgan"), panda.load_generator("dcgan-digiface")
    assert torch.equal(mine.render([0, 1]), theirs.render([0, 1]))  # the same network, written by the user
    assert mine.weight_hash == theirs.weight_hash  # provenance: the checkpoint's sha256
    f = tmp_path / "mine.safetensors"
    r = registered("fit", "--generator", "my-dcgan", "-n", 64, "-rs", 4, "--background-samples", 0, "--out", f, "-q")
    assert r.exit_code == 0 and f.is_file(), r.output
    GENERATORS.pop("my-dcgan")
    r = run(main, ["edit", str(f), "--part", "1", "--seeds", "0", "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "'my-dcgan'" in r.output and "--generators-from FILE.py" in r.output, r.output
    r = registered("edit", f, "--part", 1, "--seeds", "0", "--out", tmp_path / "e")
    assert r.exit_code == 0 and (tmp_path / "e" / "edit_part1_app0.png").is_file(), r.output
    GENERATORS.pop("my-dcgan")
    r = run(main, ["layers", "my-dcgan"])  # not registered: the message says how to register one's own
    assert r.exit_code == 2 and "--generators-from" in r.output and "panda.generators" in r.output, r.output
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    r = run(main, ["layers", "my-dcgan", "--generators-from", str(empty)])
    assert r.exit_code == 2 and "registered no generator" in r.output and "register_generator" in r.output


def _toy_build():
    return torch.nn.Sequential(torch.nn.Unflatten(1, (4, 2, 2)), torch.nn.Upsample(scale_factor=2),
                               torch.nn.Conv2d(4, 3, 3, padding=1), torch.nn.Tanh())


def _plugin_package(root, value: str, code: str) -> None:
    """An installed package (as pip leaves one: a module and its .dist-info) with one panda.generators entry point."""
    (root / "toyplug.py").write_text(code)
    info = root / "toyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[panda.generators]\ntoy-ep = {value}\n")


TOY_PLUGIN = """
import torch
import panda

def build():
    return torch.nn.Sequential(torch.nn.Unflatten(1, (4, 2, 2)), torch.nn.Upsample(scale_factor=2),
                               torch.nn.Conv2d(4, 3, 3, padding=1), torch.nn.Tanh())

torch.manual_seed(0)
torch.save(build().state_dict(), WEIGHTS)
SPEC = panda.GeneratorSpec(name="toy-ep", description="a toy from a package", build=build,
                           weights=panda.LocalWeights(WEIGHTS), latent_dim=16, default_layer="2",
                           forward=lambda m, z, onehot: torch.sigmoid(m(z)), output_range=(0.0, 1.0))
def make():
    return SPEC
"""


@pytest.mark.parametrize("value", ["toyplug:SPEC", "toyplug:make"])
def test_an_installed_package_adds_generators_through_its_entry_point(tmp_path, monkeypatch, registry_restored, value):
    import sys
    root = tmp_path / "site"
    root.mkdir()
    _plugin_package(root, value, f"WEIGHTS = {str(tmp_path / 'toy.pt')!r}\n" + TOY_PLUGIN)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "toyplug", raising=False)
    assert "toy-ep" not in GENERATORS
    g = panda.load_generator("toy-ep")  # looked for in installed packages because no built-in has the name
    assert g.layer_shapes()["2"] == (3, 4, 4) and g.spec.description == "a toy from a package"
    assert len(g.weight_hash) == 64  # the file's sha256, recorded in factor files
    assert g.output_range == (0.0, 1.0)  # the spec's: a sigmoid network's images are drawn as they are
    images = g.synthesize(g.sample([0]))
    assert torch.equal(g.to_unit(images), images)


@pytest.mark.parametrize("code,match", [
    ("raise RuntimeError('no GPU here')\n", r"'toy-ep' \(toyplug:SPEC, package toyplug\) failed to load: "
                                             r"RuntimeError: no GPU here: fix or uninstall"),
    ("SPEC = 3\n", "gives a int, not a GeneratorSpec"),
])
def test_a_broken_plugin_is_named(tmp_path, monkeypatch, registry_restored, code, match):
    import sys
    root = tmp_path / "site"
    root.mkdir()
    _plugin_package(root, "toyplug:SPEC", code)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "toyplug", raising=False)
    with pytest.raises(PandaError, match=match):
        panda.load_generator("toy-ep")
    assert isinstance(panda.load_generator("dcgan-celeba"), GeneratorAdapter)  # built-ins never wait on plugins


def test_local_weights_refuse_what_they_cannot_load(tmp_path, registry_restored):
    from panda.generators import LocalWeights
    torch.manual_seed(0)
    torch.save({"g": _toy_build().state_dict(), "step": 3}, tmp_path / "ckpt.pt")
    state, digest = LocalWeights(tmp_path / "ckpt.pt", state_key="g").state_dict()
    assert set(state) == set(_toy_build().state_dict()) and len(digest) == 64
    assert LocalWeights(tmp_path / "ckpt.pt", sha256=digest, state_key="g").state_dict()[1] == digest
    for weights, match in ((LocalWeights(tmp_path / "none.pt"), "does not exist"),
                           (LocalWeights(tmp_path / "ckpt.pt", state_key="G"), r"no 'G' \(it holds g, step\)"),
                           (LocalWeights(tmp_path / "ckpt.pt", sha256="0" * 64, state_key="g"), "expected 0000")):
        with pytest.raises(PandaError, match=match):
            weights.state_dict()
    (tmp_path / "code.pt").write_bytes(b"not a torch file")
    with pytest.raises(PandaError, match=r"not a readable torch file.*save it with torch.save"):
        LocalWeights(tmp_path / "code.pt").state_dict()
    wrong = GeneratorSpec(name="wrong", description="keys of another network", latent_dim=16, default_layer="2",
                          build=lambda: torch.nn.Sequential(torch.nn.Linear(16, 3)),
                          weights=LocalWeights(tmp_path / "ckpt.pt", state_key="g"), forward=lambda m, z, c: m(z))
    with pytest.raises(PandaError, match="weights of generator 'wrong' do not fit the module its build\\(\\) makes"):
        wrong.load()


def test_a_module_without_a_file_is_hashed_by_its_weights():
    """Two random generators with the same name get different hashes, so factor files are not mixed up."""
    from panda.stylegan2 import Generator
    torch.manual_seed(0)
    a = GeneratorAdapter(Generator(8, 0, 8, 16, 3, channel_base=64, channel_max=8), name="sg", latent_dim=8)
    b = GeneratorAdapter(Generator(8, 0, 8, 16, 3, channel_base=64, channel_max=8), name="sg", latent_dim=8)
    assert a.weight_hash.startswith("state:") and a.weight_hash != b.weight_hash
    c = GeneratorAdapter(a.module, name="sg", latent_dim=8)
    assert c.weight_hash == a.weight_hash


def test_seeds_give_exactly_numpys_latents_for_many_seeds(celeba):
    """The fast path (one re-seeded RandomState) draws what a fresh np.random.RandomState(seed) would."""
    import numpy as np
    seeds = [0, 1, 2**32 - 1, 123456789, 7]
    z = celeba.sample(seeds).z.numpy()
    expected = np.stack([np.random.RandomState(s).randn(100) for s in seeds]).astype(np.float32)
    assert np.array_equal(z, expected)


def test_default_rank_parts_follow_the_generator(celeba):
    """With no R_S given, a registered generator's default layer gets the R_S its spec chose (the smallest giving the
    eyes, nose and mouth parts of their own, benchmarks/semantic_parts.md); any other layer 12, at most its positions."""
    assert celeba.rank_parts_for(None) == celeba.rank_parts_for("relu2") == celeba.spec.default_rank_parts == 40
    assert celeba.rank_parts_for("relu3") == 12
    assert celeba.rank_parts_for("convTr1") == 12  # 4 x 4 = 16 positions: 12 fits
    from panda.generators import GeneratorAdapter
    tiny = GeneratorAdapter(celeba.module, "hand-wrapped", 100, forward_fn=celeba.forward_fn, default_layer="convTr1")
    assert tiny.rank_parts_for(None) == 12
