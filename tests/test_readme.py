"""The README's Python example runs as written: users copy it first, and a stale line fails on their machine."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands(heading: str) -> list[str]:
    """The `panda ...` lines of the first bash block after ``heading`` in the README, continued lines joined and
    comments dropped."""
    text = README.read_text().split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    return [re.split(r"\s#", line)[0].strip() for line in block.splitlines() if line.startswith("panda ")]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README has one Python example; this test runs it"
    # smaller data than the README's, for a test's time; everything else as written
    code = (blocks[0].replace("range(5000)", "range(256)").replace('"relu2", 256)', '"relu2", 64)')
            .replace("range(5000, 10000)", "range(256, 512)"))
    assert code != blocks[0]
    monkeypatch.chdir(tmp_path)
    mask = Image.new("L", (64, 64), 0)  # the user's own files the example reads
    mask.paste(255, (16, 16, 40, 40))
    mask.save("box.png")
    rng = np.random.default_rng(0)
    np.save("maps.npy", rng.random((48, 16, 8, 8), dtype=np.float32))
    np.save("other_maps.npy", rng.random((8, 16, 8, 8), dtype=np.float32))
    scope: dict = {}
    try:
        exec(compile(code, str(README), "exec"), scope)
    finally:
        from panda.progress import log_stages
        log_stages(None)  # the example sends stage lines to print
    assert scope["t"].images.shape == (2, 3, 3, 64, 64) and scope["sweep"].images.shape == (2, 2, 3, 64, 64)
    assert (tmp_path / "celeba.safetensors").is_file() and len(list((tmp_path / "out" / "mine").glob("*.png"))) == 3


#: Commands of the README's command-line example that this test leaves out: they serve until stopped (serve), or fit
#: and draw everything for a minute (demo; tests/test_demo.py). `panda project` runs on a small StyleGAN2 fixture.
NOT_RUN = ("panda serve", "panda demo")

#: "Your own generator": each checkpoint the README names, as a file of that format from tests/fixtures/ (made from
#: the reference implementations on random weights, small).
OWN_CHECKPOINTS = {"ffhq.pkl": "stylegan2_nvlabs.pkl", "550000.pt": "stylegan2_rosinality.pt",
                   "biggan-deep-256": "biggan", "stylegan_ffhq1024.pth": "stylegan_genforce.pth"}


def test_readme_commands_run(tmp_path, monkeypatch):
    """Every command of the README's command-line example, in order, as written (in-process)."""
    import shlex
    import shutil

    from click.testing import CliRunner

    from panda.cli import main
    run = [c for c in readme_commands("## Command line") if not c.startswith(NOT_RUN)]
    assert len(run) >= 15 and any("transfer" in c for c in run)
    monkeypatch.chdir(tmp_path)
    mask = Image.new("L", (64, 64), 0)  # the user's own files the commands read
    mask.paste(255, (16, 16, 40, 40))
    mask.save("box.png")
    mask.save("region.png")
    np.savez("mine.npz", z=np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32))
    # `panda project`'s StyleGAN (a random-weight NVlabs pickle, 32 px) and photo (any size: it is resized)
    shutil.copy(Path(__file__).resolve().parent / "fixtures" / OWN_CHECKPOINTS["ffhq.pkl"], "ffhq.pkl")
    Image.fromarray((np.random.default_rng(1).random((80, 80, 3)) * 255).astype(np.uint8)).save("me.jpg")
    assert any(c.startswith("panda project") for c in run)
    for command in run:
        r = CliRunner().invoke(main, shlex.split(command)[1:])
        assert r.exit_code == 0, f"{command}\n{r.output}"
    assert (tmp_path / "me.safetensors").is_file()


def test_readme_own_generator_commands_run_on_a_checkpoint_of_each_format(tmp_path, monkeypatch):
    """'Your own generator': every command as written, on a file of each format it names (NVlabs pickle, rosinality,
    pytorch-pretrained-biggan folder, genforce), with fewer samples, and a class the small BigGAN fixture has."""
    import shlex
    import shutil

    from click.testing import CliRunner

    from panda.cli import main
    fixtures = Path(__file__).resolve().parent / "fixtures"
    commands = readme_commands("## Your own generator")
    assert len(commands) == 6 and all(any(name in c for name in OWN_CHECKPOINTS) for c in commands)
    monkeypatch.chdir(tmp_path)
    for name, fixture in OWN_CHECKPOINTS.items():
        (shutil.copytree if (fixtures / fixture).is_dir() else shutil.copy)(fixtures / fixture, name)
    for command in commands:
        args = shlex.split(command)[1:]
        if args[0] == "fit":  # a test's sample count; the fixture BigGAN has 5 classes, not ImageNet's 1,000
            args = [a for i, a in enumerate(args) if a != "-n" and (i == 0 or args[i - 1] != "-n")]
            args = ["3" if i and args[i - 1] == "--class" else a for i, a in enumerate(args)]
            args += ["-n", "48", "--background-samples", "2"]
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, f"{command}\n{r.output}"
    assert {p.name for p in tmp_path.glob("*.safetensors")} == {"ffhq.safetensors", "ros.safetensors",
                                                                "dogs.safetensors", "sg1.safetensors"}
    assert list((tmp_path / "out" / "edit").glob("*.png"))


BENCHMARKS = README.parent / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "common"))
def test_every_benchmark_script_imports_and_parses_its_options(script, monkeypatch, capsys):
    """The benchmark scripts are run by hand, minutes to hours each, so nothing else notices when a library change
    breaks one: each must import what it uses and answer --help."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--help"])
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as done:
        module.main()
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


def test_fit_speed_times_the_fits_stages_and_restores_them(monkeypatch):
    """The breakdown of a fit that fit_speed.py and stylegan_scale.py print (run once per GPU session, so a renamed
    stage must fail here, not there): every stage the fit calls is timed once (a stage inside another counts in the
    outer one), the stages and the rest add up to the total, and the library's functions are its own again
    afterwards."""
    import sys

    import torch

    import panda.factorisation as fac
    from panda.features import FeatureArray
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "fit_speed", raising=False)
    import common
    import fit_speed
    before = {name: getattr(fac, name) for name in common.STAGES}
    maps = FeatureArray(torch.rand(48, 16, 8, 8, generator=torch.Generator().manual_seed(0)), "x", batch_size=16)
    result = {}
    stages = common.staged_fit(lambda: result.setdefault(
        "fit", fac.panda_factorise(maps, 16, 4, stats=fac.data_stats(maps, grid=(8, 8)), n_iter_max=3)), "cpu")
    assert {name: getattr(fac, name) for name in common.STAGES} == before
    assert result["fit"].parts.shape == (64, 4)
    assert set(stages) == set(common.STAGES) | {"total", "rest"}
    for name in ("data_stats", "top_eigenvectors", "first_parts", "appearance_scatter"):  # R_C = C: no later P-step
        assert stages[name] > 0, name
    assert stages["solve_parts"] == 0  # called inside first_parts only: counted there
    assert abs(sum(v for k, v in stages.items() if k != "total") - stages["total"]) < 1e-9
    assert 0 <= stages["rest"] < stages["total"]
    row = {"generator": "g", "layer": "x", "shape": [16, 8, 8], "n": 48, "stages": stages}
    assert "| statistics pass |" in fit_speed.stages_table([row]) and "later P-steps" not in fit_speed.stages_table([row])


def test_a_benchmark_rerun_keeps_the_notes_written_below_its_figures(tmp_path, monkeypatch, capsys):
    """fit_speed.py, stylegan_scale.py, zoo_speed.py and projection_psnr.py write their whole markdown file: the
    notes a person added below the last run's table (from the line that starts "Notes") stay, once, after the new
    figures; a file without notes, or a new text with notes of its own, is written as given."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import common
    path = tmp_path / "bench.md"
    common.write_keeping_notes(path, "# Bench\n\n| a |\n|---|\n| 1 |\n")
    assert path.read_text() == "# Bench\n\n| a |\n|---|\n| 1 |\n" and "kept" not in capsys.readouterr().err
    path.write_text(path.read_text() + "\nNotes (run 1):\n- why 1 is 1.\n")
    common.write_keeping_notes(path, "# Bench\n\n| a |\n|---|\n| 2 |\n")
    assert path.read_text() == "# Bench\n\n| a |\n|---|\n| 2 |\n\nNotes (run 1):\n- why 1 is 1.\n"
    assert "kept the notes of the earlier bench.md (its lines 7-8)" in capsys.readouterr().err
    common.write_keeping_notes(path, "# Bench\n\n| a |\n|---|\n| 3 |\n\nNotes: new.\n")
    assert path.read_text().count("Notes") == 1 and path.read_text().endswith("Notes: new.\n")
    for script in ("fit_speed", "stylegan_scale", "zoo_speed", "projection_psnr"):
        assert "write_keeping_notes(" in (BENCHMARKS / f"{script}.py").read_text(), script


def test_readme_recipe_runs(tmp_path, monkeypatch):
    """'A fit to build on': its five commands in order, on fewer samples, ranks and faces (every option as written)."""
    import shlex

    from click.testing import CliRunner

    from panda.cli import main
    commands = readme_commands("## A fit to build on")
    assert [c.split()[1] for c in commands] == ["ranks", "fit", "name-parts", "fit", "compare"]
    smaller = {"ranks": ["-n", "256", "-rs", "4,8", "--heldout", "32"], "fit": ["-n", "256", "--background-samples", "0"]}
    monkeypatch.chdir(tmp_path)
    outputs = []
    for command in commands:
        args = shlex.split(command)[1:]
        args = [{"32": "8", "64": "16"}.get(a, a) if i and args[i - 1] in ("-rs", "--faces") else a
                for i, a in enumerate(args)] + smaller.get(args[0], [])
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, f"{command}\n{r.output}"
        outputs.append(r.output)
    assert "parts numbered after a.safetensors's" in outputs[3] and "matched one to one" in outputs[4]
