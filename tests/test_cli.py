import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import panda
from panda.cli import main, parse_seeds
from panda import PandaError
from panda.model import PandA


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_parse_seeds():
    assert parse_seeds("0,1,4-6") == [0, 1, 4, 5, 6]
    with pytest.raises(PandaError, match="0,1,4-6"):
        parse_seeds("a-b")
    with pytest.raises(PandaError, match="backwards"):
        parse_seeds("5-2")


@pytest.mark.parametrize("cmd", ["fit", "layers", "parts", "edit", "demo", "refine", "remove", "localize", "transfer",
                                 "ranks", "retrieve", "compare"])
def test_every_command_has_help_device_and_seed(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0
    assert "--device" in r.output and "--seed" in r.output


def test_layers_lists_shapes():
    r = run("layers", "dcgan-digiface")
    assert r.exit_code == 0
    assert re.search(r"main\.5\s+256 x\s+8 x 8", r.output)


def test_fit_parts_edit_end_to_end(tmp_path):
    f = tmp_path / "f.safetensors"
    r = run("fit", "-n", 128, "-rs", 6, "--layer", "relu2", "--out", f, "-q")
    assert r.exit_code == 0, r.output
    assert "held-out" in r.output and f.is_file()
    r = run("parts", f, "--seeds", "0-2", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    img = Image.open(tmp_path / "p" / "parts.png")
    assert img.width > 6 * 128 and img.height > 3 * 128
    r = run("edit", f, "--part", 2, "--seeds", "0-1", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "e").glob("edit_part2_app*.png"))) == 1
    r = run("edit", f, "--edit", "2,0,1", "--edit", "3,1,-1", "--seeds", "0", "--out", tmp_path / "e2")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "e2" / "edit.png").is_file()


@pytest.mark.parametrize("args,match", [
    (["fit", "--generator", "nope"], "dcgan-celeba"),
    (["fit", "--layer", "relu9", "-n", 4], "Valid layers"),
    (["fit", "-rs", 65, "--layer", "relu2", "-n", 4], "rank_parts=65"),
    (["fit", "-rc", 999, "--layer", "relu2", "-n", 4], "rank_appearance=999"),
    (["layers", "nope"], "dcgan-digiface"),
])
def test_bad_fit_input_exits_non_zero_with_one_line(tmp_path, args, match):
    r = run(*args, "--out", tmp_path / "x.safetensors") if args[0] == "fit" else run(*args)
    assert r.exit_code == 2
    assert match in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output  # one line, nothing printed before it
    assert not (tmp_path / "x.safetensors").exists()


def test_fit_at_a_layer_too_large_for_memory_is_one_line(tmp_path, monkeypatch):
    from panda import factorisation
    monkeypatch.setattr(factorisation, "available_memory", lambda device: 1 << 20)
    r = run("fit", "--layer", "relu3", "-n", 4, "--out", tmp_path / "x.safetensors")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "16x16 = 256 positions" in r.output and "at most about 15x15" in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("args,match", [
    (["--part", 99], "part 99 is out of range"),
    (["--part", 0, "--appearance", 9999], "appearance 9999 is out of range"),
    (["--part", 0, "--alpha", "nan"], "finite"),
    (["--part", 0, "--alpha", "inf"], "finite"),
    ([], "say which part"),
    (["--edit", "1,2"], "PART,APPEARANCE,ALPHA"),
    (["--part", 0, "--region", "mouth"], "--part and --region both say what to edit: give only one"),
    (["--edit", "1,2,1", "--region", "eyes", "--part", 1], "--part and --edit and --region all say what to edit"),
])
def test_bad_edit_input_writes_nothing(factor_file, tmp_path, args, match):
    out = tmp_path / "out"
    r = run("edit", factor_file, *args, "--out", out)
    assert r.exit_code == 2 and match in r.output
    assert not out.exists() or not any(out.iterdir())


def test_corrupt_factor_file_on_the_cli(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    r = run("parts", bad, "--out", tmp_path / "p")
    assert r.exit_code == 2 and "not a readable panda factor file" in r.output


def test_unwritable_output_directory(factor_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("parts", factor_file, "--out", blocker / "sub")
    assert r.exit_code == 2 and "cannot write to the output folder" in r.output


def said_whether_it_removed(output: str) -> bool:
    """A remove command's output notes a removal that moved the region's colour away from its surroundings, and only
    then: checked on every remove run below."""
    before, after = map(float, re.search(r"surroundings: ([\d.]+) before, ([\d.]+) after", output).groups())
    return ("note: " in output) == (after >= before)


def test_refine_remove_localize_commands(factor_file, tmp_path):
    r = run("refine", factor_file, "--part", 1, "--shift", "0,2", "--seeds", "0-1", "--steps", 20, "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    assert "reconstruction error" in r.output and (tmp_path / "r" / "refine_part1.png").is_file()
    r = run("remove", factor_file, "--part", 2, "--seeds", "0-1", "--out", tmp_path / "rm")
    assert r.exit_code == 0, r.output
    assert "before" in r.output and (tmp_path / "rm" / "remove_part2.png").is_file()
    assert said_whether_it_removed(r.output), r.output
    assert "runners-up" in r.output and (tmp_path / "rm" / "remove_part2_candidates.png").is_file()  # auto shows them
    r = run("remove", factor_file, "--part", 2, "--background", "-3", "--seeds", "0", "--out", tmp_path / "neg")
    assert r.exit_code == 0, r.output
    assert "appearance 3 (-1)" in r.output and not (tmp_path / "neg" / "remove_part2_candidates.png").exists()
    assert said_whether_it_removed(r.output), r.output
    r = run("remove", factor_file, "--region", "eyes", "--background", "global", "--seeds", "0-1", "--out", tmp_path / "rm")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rm" / "remove_eyes.png").is_file()
    assert said_whether_it_removed(r.output), r.output
    mask = tmp_path / "mask.png"
    img = Image.new("L", (64, 64), 0)
    img.paste(255, (20, 20, 44, 44))
    img.save(mask)
    r = run("remove", factor_file, "--mask", mask, "--background", 3, "--seeds", "0", "--out", tmp_path / "rm")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rm" / "remove_mask.png").is_file()
    assert said_whether_it_removed(r.output), r.output
    r = run("localize", factor_file, "--appearance", 3, "--seeds", "0-2", "--out", tmp_path / "l")
    assert r.exit_code == 0 and (tmp_path / "l" / "localize_app3.png").is_file()
    r = run("localize", factor_file, "--top", 4, "--seed", 7, "--out", tmp_path / "l")
    assert r.exit_code == 0 and (tmp_path / "l" / "localize_top_seed7.png").is_file()
    np.save(tmp_path / "z.npy", np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32))
    r = run("localize", factor_file, "--top", 4, "--latent", tmp_path / "z.npy", "--out", tmp_path / "l")
    assert r.exit_code == 0 and (tmp_path / "l" / "localize_top_latent0.png").is_file(), r.output


def test_pictures_name_a_latent_as_such_not_as_a_seed():
    from panda.figures import sample_label, seed_labels
    assert sample_label(7) == "seed 7" and sample_label(np.int64(7)) == "seed 7"
    assert sample_label("latent 0") == "latent 0" and seed_labels([3, "projected"]) == ["seed 3", "projected"]


@pytest.mark.parametrize("args,match", [
    (["refine", "--part", 0, "--generator", "dcgan-digiface"], "fitted on generator 'dcgan-celeba'"),
    (["refine", "--part", 0, "--shift", "0,9"], "smaller shift"),
    (["refine", "--part", 0, "--shift", "x"], "DY,DX"),
    (["refine", "--part", 12], "part 12 is out of range"),
    (["refine", "--part", 0, "--radius", -1], "radius=-1"),
    (["refine", "--part", 0, "--steps", -1], "steps=-1"),
    (["refine", "--part", 0, "--search", 8], "translation range"),
    (["refine", "--part", 0, "--min-gain", -1], "min_gain=-1"),
    (["refine", "--part", 0, "--alpha", "nan"], "finite"),
    (["remove", "--part", 0, "--alpha", "inf"], "finite"),
    (["remove"], "exactly one of --part"),
    (["remove", "--part", 0, "--region", "eyes"], "exactly one of --part"),
    (["remove", "--part", 0, "--background", "sky"], "auto, global or an appearance index"),
    (["remove", "--part", 0, "--background", 999], "appearance 999 is out of range"),
    (["remove", "--part", 0, "--background", "-999"], "appearance 999 is out of range"),
    (["remove", "--part", 0, "--background", "+x"], "auto, global or an appearance index"),
    (["localize", "--appearance", 999], "appearance 999 is out of range"),
    (["localize"], "either --appearance"),
    (["localize", "--top", 0], "--top 0"),
    (["edit", "--part", 0, "--seeds", "0-4294967296"], "out of range"),
    (["edit", "--part", 0, "--seeds", "0-200000"], "more than 100000 seeds"),
    (["edit", "--part", 0, "--n-images", 0], "--n-images"),
    (["edit", "--region", "mouth", "--refine"], "--refine refines parts"),
    (["edit", "--edit", "0,1,1", "--part", 0, "--refine"], "not both"),
    (["remove", "--region", "eyes", "--refine"], "--refine refines parts"),
    (["remove", "--part", 99, "--refine"], "part 99 is out of range"),
])
def test_bad_application_input_writes_nothing(factor_file, tmp_path, args, match):
    out = tmp_path / "out"
    r = run(args[0], factor_file, *args[1:], "--out", out)
    assert r.exit_code == 2 and match in r.output, r.output
    assert not out.exists() or not any(out.iterdir())


def test_empty_mask_refused(factor_file, tmp_path):
    mask = tmp_path / "empty.png"
    Image.new("L", (64, 64), 0).save(mask)
    r = run("remove", factor_file, "--mask", mask, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "empty" in r.output


def test_fit_into_a_log_draws_no_bars(tmp_path):
    """Without -q bars show only on a terminal: a log or a pipe (here the runner's capture) would collect
    every redraw of every bar."""
    r = run("fit", "-n", 64, "-rs", 4, "-rc", 16, "--layer", "relu2", "--background-samples", 0,
            "--out", tmp_path / "f.safetensors")
    assert r.exit_code == 0, r.output
    assert "held-out" in r.output
    assert "extracting features" not in r.output and "it/s" not in r.output
    # instead, a timestamped line per stage: a log of a long fit shows how far it got
    assert re.search(r"^\d\d:\d\d:\d\d statistics of 64 samples \(C = 256, S = 64\)", r.output, re.M), r.output
    assert re.search(r"^\d\d:\d\d:\d\d iteration 2: error 0\.\d{4}", r.output, re.M), r.output
    r = run("fit", "-n", 64, "-rs", 4, "-rc", 16, "--layer", "relu2", "--background-samples", 0,
            "--out", tmp_path / "f.safetensors", "--overwrite", "-q")
    assert r.exit_code == 0 and "held-out" in r.output and "iteration 1:" not in r.output, r.output


def test_fit_with_mixing_writes_it_and_edits_still_run(tmp_path):
    f = tmp_path / "m.safetensors"
    r = run("fit", "-n", 64, "-rs", 4, "-rc", 16, "--layer", "relu2", "--mixing", "--background-samples", 0,
            "--out", f, "-q")
    assert r.exit_code == 0, r.output
    model = PandA.load(f)
    assert model.mixing and model.mixing_.shape == (16, 16)
    r = run("edit", f, "--part", 1, "--seeds", "0", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    r = run("fit", "-n", 64, "-rs", 4, "-rc", 16, "--layer", "relu2", "--mixing-directions", 4, "--out", f, "-q",
            "--overwrite")
    assert r.exit_code == 2 and "--mixing-directions applies to a fit with --mixing" in r.output
    r = run("fit", "-n", 64, "-rs", 4, "-rc", 16, "--layer", "relu2", "--mixing", "--mixing-directions", 4,
            "--background-samples", 0, "--out", f, "-q", "--overwrite")
    assert r.exit_code == 0, r.output
    assert PandA.load(f).mixing_.shape == (16, 16)


def test_fit_refuses_to_overwrite_before_fitting_and_name_parts_keeps_a_copy(tmp_path, factor_file):
    import shutil
    f = tmp_path / "f.safetensors"
    shutil.copy(factor_file, f)
    before = f.read_bytes()
    r = run("fit", "-n", 8, "--out", f)
    assert r.exit_code == 2 and "--overwrite" in r.output and "extracting" not in r.output
    assert f.read_bytes() == before
    r = run("fit", "-n", 16, "-rs", 4, "--layer", "relu2", "--background-samples", 0, "--out", f, "--overwrite", "-q")
    assert r.exit_code == 0, r.output
    assert f.read_bytes() != before


def test_save_images_writes_one_png_per_image_at_the_generator_resolution(factor_file, tmp_path):
    r = run("edit", factor_file, "--part", 1, "--seeds", "3,5", "--save-images", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "e" / "images").glob("*.png"))
    assert [p.name for p in files] == ["edited_3.png", "edited_5.png"]
    assert Image.open(files[0]).size == (64, 64)
    # into a log (the runner's capture is no terminal): a stage line per chunk written instead of a bar
    assert re.search(r"^\d\d:\d\d:\d\d edited images: 2 of 2 samples written$", r.output, re.M), r.output
    r = run("remove", factor_file, "--part", 2, "--background", "global", "--seeds", "3", "--save-images",
            "--out", tmp_path / "r", "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "images" / "removed_3.png").is_file()
    assert "samples written" not in r.output  # -q: quiet in a log too


@pytest.mark.parametrize("cmd", ["fit", "ranks", "parts", "edit", "refine", "remove", "localize", "transfer", "retrieve",
                                 "project", "demo"])
def test_every_command_that_draws_samples_takes_quiet(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0 and re.search(r"-q, --quiet\s", r.output), r.output


@pytest.mark.parametrize("args,match", [
    (["edit", "--part", 0, "--alpha", "1e300"], "beyond"),
    (["edit", "--part", 0, "--device", "meta"], "device 'meta'"),
    (["parts", "--seeds", "0-4294967295"], "more than"),
    (["parts", "--n-images", 0], "n-images"),
])
def test_hostile_values_are_one_line(factor_file, tmp_path, args, match):
    out = tmp_path / "out"
    r = run(args[0], factor_file, *args[1:], "--out", out)
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_a_decompression_bomb_mask_is_one_line(factor_file, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(bomb)  # 196 megapixels in a few kB
    r = run("remove", factor_file, "--mask", bomb, "--background", "global", "--seeds", "0", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "cannot read mask" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_name_parts_names_and_keeps_a_backup(tmp_path):
    """name-parts stores region names (only eyes, nose or mouth) into the file and keeps the old file as .bak."""
    from panda.landmarks import REGIONS
    from panda.model import PandA

    f = tmp_path / "f.safetensors"
    assert run("fit", "-n", 256, "--generator", "dcgan-digiface", "--background-samples", 0, "--out", f, "-q").exit_code == 0
    before = f.read_bytes()
    r = run("name-parts", f, "--n", 16, "--generator", "dcgan-digiface")
    assert r.exit_code == 0, r.output
    assert "saved into" in r.output and (tmp_path / "f.safetensors.bak").read_bytes() == before
    names = PandA.load(f).part_names_
    assert names and set(names.values()) <= set(REGIONS)
    # a name of the user's is kept when FaceMesh names the parts again, on its part, which FaceMesh leaves alone
    mine = min(names)
    assert run("name-parts", f, "--name", f"{mine}=left cheek").exit_code == 0
    assert run("name-parts", f, "--n", 16, "--generator", "dcgan-digiface").exit_code == 0
    again = PandA.load(f).part_names_
    assert again[mine] == "left cheek" and {k: v for k, v in again.items() if k != mine} == {
        k: v for k, v in names.items() if k != mine}
    # a region's name given by hand is the user's too: FaceMesh measures only the parts it named itself
    other = max(set(range(24)) - set(again))
    assert run("name-parts", f, "--name", f"{other}=eyes").exit_code == 0
    assert run("name-parts", f, "--n", 16, "--generator", "dcgan-digiface").exit_code == 0
    third = PandA.load(f)
    assert third.part_names_[other] == "eyes" and third.hand_named_ == {mine, other}
    assert {k: v for k, v in third.part_names_.items() if k not in (mine, other)} == {
        k: v for k, v in names.items() if k != mine}
    assert PandA.load(f).n_parts == 24  # the generator's own R_S at its default layer


def test_name_parts_by_hand_on_any_generator(tmp_path, factor_file):
    """--name PART=NAME: names of the user's own (any domain), kept beside the others; PART= removes one; then every
    command takes the name."""
    import shutil
    f = tmp_path / "f.safetensors"
    shutil.copy(factor_file, f)
    r = run("name-parts", f, "--name", "2=left eye", "--name", "5=iris", "--name", "6=iris")
    assert r.exit_code == 0, r.output
    assert PandA.load(f).part_names_ == {2: "left eye", 5: "iris", 6: "iris"}
    assert run("name-parts", f, "--name", "6=").exit_code == 0
    model = PandA.load(f)
    assert model.part_names_ == {2: "left eye", 5: "iris"} and model.parts_named("iris") == [5]
    r = run("edit", f, "--part", "left eye", "--seeds", "0", "--out", tmp_path / "e")
    assert r.exit_code == 0 and (tmp_path / "e" / "edit_part2_app0.png").is_file(), r.output
    for text, match in (("2=3", "start it with a letter"), ("2=a,b", "start it with a letter"), ("eyes", "PART=NAME"),
                        ("99=x", "part 99 is out of range"), ("x=eyes", "PART=NAME")):
        r = run("name-parts", f, "--name", text)
        assert r.exit_code == 2 and match in r.output, (text, r.output)
    assert PandA.load(f).part_names_ == {2: "left eye", 5: "iris"}  # a refused name changes nothing
    r = run("name-parts", f, "--name", "3=nose", "--n", "8", "--generator", "dcgan-digiface")
    assert r.exit_code == 2 and "--n, --generator would do nothing" in r.output, r.output


def test_save_arrays_writes_the_data_behind_each_picture(factor_file, model, tmp_path):
    cases = [("parts", [], "parts", {"images": (2, 3, 64, 64), "parts": (8, 8, 8)}),
             ("edit", ["--part", 1], "edit_part1_app*", {"images": (2, 5, 3, 64, 64), "alphas": (5,)}),
             ("edit", ["--edit", "1,2,1", "--edit", "3,0,-1"], "edit", {"edited": (2, 3, 64, 64), "edits": (2, 3)}),
             ("refine", ["--part", 1, "--steps", 5], "refine_part1", {"refined_parts": (2, 64, 8), "refined_shifts": (2, 2)}),
             ("remove", ["--part", 2], "remove_part2", {"removed": (2, 3, 64, 64), "masks": (2, 64, 64),
                                                        "search_table_keys": (32, 2), "search_table_values": (32,)}),
             ("localize", ["--appearance", 3], "localize_app3", {"maps": (2, 256, 8, 8), "images": (2, 3, 64, 64)})]
    for cmd, args, stem, shapes in cases:
        out = tmp_path / f"{cmd}{len(args)}"
        extra = ["--save-images"] if cmd == "edit" else []
        r = run(cmd, factor_file, *args, *extra, "--seeds", "4,9", "--save-arrays", "--out", out)
        assert r.exit_code == 0, r.output
        (png,) = out.glob(stem + ".png")
        with np.load(png.with_suffix(".npz")) as z:  # no pickle needed
            assert z["labels"].tolist() == ["4", "9"], cmd
            for key, shape in shapes.items():
                assert z[key].shape == shape, (cmd, key)
            if cmd == "parts":
                assert np.array_equal(z["parts"], model.part_maps().numpy())
            if cmd == "edit" and len(args) == 2:  # the column at alpha 1 is the image --save-images wrote
                saved = np.asarray(Image.open(out / "images" / "edited_4.png"), dtype=np.float32) / 255
                assert np.abs(z["images"][0, 3].transpose(1, 2, 0) - saved).max() <= 1 / 255 + 1e-6


def test_localize_saves_one_appearances_maps_of_every_sample(factor_file, model, celeba, tmp_path):
    """localize -j J --save-arrays with more samples than the picture shows: the picture and its full maps hold the
    first 16, and appearance J's maps of every sample asked for are saved too (panda.localisation.localize's), so
    that a concept can be localised in any number of images from the command line."""

    from panda.localisation import appearance_maps, localize
    r = run("localize", factor_file, "-j", 2, "--n-images", 20, "--save-arrays", "--out", tmp_path / "l")
    assert r.exit_code == 0, r.output
    assert "--save-arrays writes appearance 2's maps of all of them" in r.output
    expected = localize(model, celeba, range(20))[:, 2]
    with np.load(tmp_path / "l" / "localize_app2.npz") as z:
        assert z["maps"].shape == (16, model.n_appearances, 8, 8) and list(z["labels"]) == [str(i) for i in range(16)]
        assert z["appearance_maps"].shape == (20, 8, 8) and list(z["appearance_labels"]) == [str(i) for i in range(20)]
        assert np.abs(z["appearance_maps"] - expected.numpy()).max() < 1e-4 * float(expected.abs().max())
        assert np.abs(z["appearance_maps"][:16] - z["maps"][:, 2]).max() < 1e-4 * float(expected.abs().max())
    one_at_a_time = appearance_maps(model, celeba, [3, 4], 2, batch_size=1)  # batches do not change the maps
    assert one_at_a_time.shape == (2, 8, 8) and (one_at_a_time - expected[3:5]).abs().max() < 1e-4 * expected.abs().max()
    r = run("localize", factor_file, "-j", 2, "--n-images", 4, "--save-arrays", "--out", tmp_path / "m")
    with np.load(tmp_path / "m" / "localize_app2.npz") as z:  # all shown: their maps are all there already
        assert "appearance_maps" not in z and z["maps"].shape[0] == 4


def test_edit_and_remove_refine_each_sample_once(factor_file, tmp_path, monkeypatch):
    """edit --refine with --gif and --save-images: the sweep, its animation and the saved images use one refinement
    of the samples (each refinement is an S x S solve per image: 0.3 s at a StyleGAN's 64x64 layer), not three;
    remove --refine --save-images: one, not two."""
    from panda import cli
    calls = []
    real = cli.refine_images
    monkeypatch.setattr(cli, "refine_images", lambda model, gen, samples, *a, **k: calls.append(list(samples))
                        or real(model, gen, samples, *a, **k))
    r = run("edit", factor_file, "--part", 1, "-j", 2, "--refine", "--gif", "--save-images", "--seeds", "4,9",
            "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "e" / "edit_part1_app2_refined.gif").is_file() and (tmp_path / "e" / "images" / "edited_9.png").is_file()
    assert calls == [[4, 9]]
    calls.clear()
    r = run("remove", factor_file, "--part", 1, "--refine", "--background", 5, "--save-images", "--seeds", "4,9",
            "--out", tmp_path / "r")
    assert r.exit_code == 0 and (tmp_path / "r" / "images" / "removed_9.png").is_file(), r.output
    assert calls == [[4, 9]]
    assert cli._same_samples([4, 9], (4, 9)) and not cli._same_samples([4, 9], [9, 4])
    import torch
    from panda.generators import Latents
    z = torch.zeros(2, 4)
    assert cli._same_samples(Latents(z), Latents(z.clone())) and not cli._same_samples(Latents(z), Latents(z + 1))
    assert not cli._same_samples(Latents(z), [0, 1]) and not cli._same_samples(Latents(z), Latents(z, torch.tensor([0, 1])))


def test_edit_and_remove_with_each_images_own_parts(factor_file, model, celeba, tmp_path):
    """--refine: the edit and the removal use each image's refined part (panda.refinement.refine), exactly as the
    library computes them with those parts, and not the global part."""
    import torch

    from panda.editing import Edit, edit as edit_images, part_profile
    from panda.refinement import refine
    from panda.removal import remove

    own = refine(model, celeba, [4, 9])[1].parts
    edited = celeba.to_unit(edit_images(model, celeba, [4, 9], [Edit(1, 2, 1.5)], parts=own)).cpu()
    r = run("edit", factor_file, "--part", 1, "-j", 2, "-a", 1.5, "--refine", "--seeds", "4,9", "--save-arrays",
            "--save-images", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "e" / "edit_part1_app2_refined.npz") as z:
        assert np.abs(z["images"][:, 3] - edited.numpy()).max() < 1e-5  # the column at alpha 1.5
    saved = np.asarray(Image.open(tmp_path / "e" / "images" / "edited_9.png"), dtype=np.float32) / 255
    assert np.abs(edited[1].numpy().transpose(1, 2, 0) - saved).max() <= 1 / 255 + 1e-6
    glob = celeba.to_unit(edit_images(model, celeba, [4, 9], [Edit(1, 2, 1.5)])).cpu()
    assert np.abs(glob.numpy() - edited.numpy()).max() > 0.05  # refining changed the edit
    r = run("edit", factor_file, "--edit", "1,2,1.5", "--edit", "3,0,-1", "--refine", "--seeds", "4,9",
            "--save-arrays", "--out", tmp_path / "e")
    assert r.exit_code == 0 and (tmp_path / "e" / "edit_refined.png").is_file(), r.output
    with np.load(tmp_path / "e" / "edit_refined.npz") as z:
        both = edit_images(model, celeba, [4, 9], [Edit(1, 2, 1.5), Edit(3, 0, -1)], parts=own)
        assert np.abs(z["edited"] - celeba.to_unit(both).cpu().numpy()).max() < 1e-5
    r = run("remove", factor_file, "--part", 1, "--refine", "--background", 5, "--seeds", "4,9", "--save-arrays",
            "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    regions = torch.stack([part_profile(model, 1, p) for p in own])
    with np.load(tmp_path / "r" / "remove_part1_refined.npz") as z:
        expected = celeba.to_unit(remove(model, celeba, [4, 9], regions, 1.5, 5, 1.0)).cpu().numpy()
        assert np.abs(z["removed"] - expected).max() < 1e-5


def test_info_says_what_a_factor_file_holds(factor_file, model, tmp_path):
    import json
    r = run("info", factor_file)
    assert r.exit_code == 0, r.output
    assert "generator 'dcgan-celeba'" in r.output and "relu2 (256 x 8 x 8)" in r.output
    assert f"R_S = {model.n_parts} parts" in r.output and f"held-out {model.heldout_error_:.4f}" in r.output
    assert f"appearance {'+' if model.background_sign_ > 0 else '-'}{model.background_}" in r.output
    r = run("info", factor_file, "--parts")
    part_lines = [line for line in r.output.splitlines() if line.lstrip().startswith("part ") and "area" in line]
    assert len(part_lines) == model.n_parts
    assert part_lines[2].split()[-5:] == [str(j) for j in model.top_appearances(2, 5, by="specific")]
    from panda.editing import part_profile  # the area is the one an edit's measurement calls the part's
    assert f"area {100 * float((part_profile(model, 2) > 0.5).float().mean()):3.0f}%" in part_lines[2]
    meta = json.loads(run("info", factor_file, "--json").output)
    assert meta["rank_parts"] == model.n_parts and meta["layer_shape"] == [256, 8, 8]
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a factor file")
    r = run("info", broken)
    assert r.exit_code == 2 and "not a readable panda factor file" in r.output and "Traceback" not in r.output


def test_edit_a_mask_of_your_own(factor_file, tmp_path):
    mask = tmp_path / "box.png"
    box = np.zeros((64, 64), dtype=np.uint8)
    box[36:52, 20:44] = 255
    Image.fromarray(box).save(mask)
    r = run("edit", factor_file, "--mask", mask, "--appearance", 3, "--seeds", "1,2", "--save-arrays", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "e" / "edit_mask_app3.png").is_file()
    with np.load(tmp_path / "e" / "edit_mask_app3.npz") as z:
        assert z["images"].shape == (2, 5, 3, 64, 64) and z["region"].shape == (64, 64) and z["appearance"] == 3
    r = run("edit", factor_file, "--mask", mask, "--seeds", "1", "--out", tmp_path / "d")  # default: ranked for the mask
    assert r.exit_code == 0 and "calibration samples" in r.output, r.output
    for bad, match in ((["--part", 1], "one of --part"), (["--no-sweep"], "drawn as a sweep")):
        r = run("edit", factor_file, "--mask", mask, *bad, "--out", tmp_path / "x")
        assert r.exit_code == 2 and match in r.output and not (tmp_path / "x").exists()


def test_edit_a_face_region_found_in_each_image(factor_file, tmp_path, monkeypatch):
    """--region: FaceMesh's mouth in each image; the default appearance is ranked on the calibration faces FaceMesh
    finds (one of them has none: its region is left out, not refused). With --gif and --save-images the samples'
    regions are found once, not three times."""
    from panda import cli
    calls, real = [], cli._region
    monkeypatch.setattr(cli, "_region", lambda model, gen, samples, *a, **k: calls.append(list(samples))
                        or real(model, gen, samples, *a, **k))
    r = run("edit", factor_file, "--region", "mouth", "--seeds", "1,2", "--gif", "--save-images", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert "calibration samples" in r.output and len(list((tmp_path / "e").glob("edit_mouth_app*.png"))) == 1
    assert len(list((tmp_path / "e").glob("edit_mouth_app*.gif"))) == 1 and len(list((tmp_path / "e" / "images").glob("*.png"))) == 2
    assert calls == [[1, 2]]


def test_gif_animates_one_edit_there_and_back(factor_file, tmp_path):
    from panda.cli import GIF_STEPS
    r = run("edit", factor_file, "--part", 2, "--appearance", 1, "--alpha", 2, "--seeds", "3,4", "--gif",
            "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "g" / "edit_part2_app1.gif") as gif:
        assert gif.n_frames == 2 * GIF_STEPS - 2 and gif.info["loop"] == 0
        frames = []
        for t in (0, GIF_STEPS // 2, GIF_STEPS - 1, 2 * GIF_STEPS - 3):  # -2x, 0, +2x, and back next to -2x
            gif.seek(t)
            frames.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
    assert np.abs(frames[0] - frames[1]).mean() > 1 and np.abs(frames[2] - frames[1]).mean() > 1  # the edit shows
    assert np.abs(frames[3] - frames[0]).mean() < np.abs(frames[2] - frames[0]).mean()  # on its way back
    r = run("edit", factor_file, "--edit", "1,2,1", "--edit", "3,0,1", "--gif", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--gif animates one edit" in r.output and not (tmp_path / "x").exists()


def test_transfer_table_by_part_index_name_mask_and_face_region(factor_file, tmp_path):
    """`panda transfer`: a table of targets x sources, by part index, by part name, by mask and by FaceMesh region;
    images and arrays on request."""
    named = PandA.load(factor_file)
    named.part_names_ = {1: "eyes", 5: "eyes"}
    named_file = named.save(tmp_path / "named.safetensors")
    r = run("transfer", factor_file, "--part", 2, "--seeds", "0-1", "--sources", "5-7", "--save-images", "--save-arrays",
            "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    assert "closer to the source" in r.output
    table = Image.open(tmp_path / "t" / "transfer_parts2.png")
    assert table.width > 4 * 128 and table.height > 3 * 128  # a column of targets and 3 sources; a row of sources + 2
    assert len(list((tmp_path / "t" / "images").glob("transfer_*_from_*.png"))) == 6
    with np.load(tmp_path / "t" / "transfer_parts2.npz") as data:
        assert data["images"].shape == (2, 3, 3, 64, 64) and list(data["labels"]) == ["0", "1"]
    r = run("transfer", named_file, "--part", "eyes", "--seeds", "0", "--sources", "5", "--out", tmp_path / "t")
    assert r.exit_code == 0 and (tmp_path / "t" / "transfer_parts1_5.png").is_file(), r.output
    r = run("transfer", factor_file, "--part", 2, "--refine", "--seeds", "0", "--sources", "5", "--out", tmp_path / "t")
    assert r.exit_code == 0 and (tmp_path / "t" / "transfer_parts2_refined.png").is_file(), r.output
    mask = tmp_path / "mask.png"
    img = Image.new("L", (64, 64), 0)
    img.paste(255, (16, 36, 48, 52))
    img.save(mask)
    r = run("transfer", factor_file, "--mask", mask, "--alpha", 0.5, "-j", 0, "-j", 3, "--seeds", "0", "--sources", "5",
            "--out", tmp_path / "t")
    assert r.exit_code == 0 and (tmp_path / "t" / "transfer_mask.png").is_file(), r.output
    r = run("transfer", factor_file, "--region", "mouth", "--seeds", "1,2", "--sources", "5", "--out", tmp_path / "t")
    assert r.exit_code == 0 and (tmp_path / "t" / "transfer_mouth.png").is_file(), r.output


def test_edit_remove_and_refine_take_part_names(factor_file, tmp_path, celeba):
    """--part NAME (`panda name-parts`): one part so named is that part; several are edited or filled as their union."""

    from panda.editing import DEFAULT_ALPHAS, region_sweep
    from panda.regions import region_for
    named = PandA.load(factor_file)
    named.part_names_ = {1: "eyes", 5: "eyes", 3: "mouth"}
    f = named.save(tmp_path / "named.safetensors")
    for part, out in (("mouth", "n"), (3, "i")):
        r = run("edit", f, "--part", part, "--appearance", 2, "--seeds", "0,1", "--out", tmp_path / out)
        assert r.exit_code == 0, r.output
    by_name, by_index = (np.asarray(Image.open(tmp_path / out / "edit_part3_app2.png")) for out in ("n", "i"))
    assert np.array_equal(by_name, by_index)  # the one mouth part, as if given by index
    r = run("edit", f, "--part", "eyes", "--appearance", 2, "--seeds", "0,1", "--save-arrays", "--out", tmp_path / "u")
    assert r.exit_code == 0 and "'eyes' names parts 1, 5" in r.output, r.output
    union = (region_for(named, part=1) + region_for(named, part=5)).clamp(max=1.0)
    expected = celeba.to_unit(region_sweep(named, celeba, [0, 1], union, 2, [a * 1.0 for a in DEFAULT_ALPHAS]))
    with np.load(tmp_path / "u" / "edit_eyes_app2.npz") as data:
        assert np.allclose(data["images"], expected.numpy(), atol=1e-5)
    r = run("remove", f, "--part", "eyes", "--background", "global", "--seeds", "0", "--save-arrays",
            "--out", tmp_path / "r")
    assert r.exit_code == 0 and (tmp_path / "r" / "remove_eyes.png").is_file(), r.output
    with np.load(tmp_path / "r" / "remove_eyes.npz") as data:
        assert np.allclose(data["regions"][0], union.numpy())  # the fill went where both parts are
    for args in (["refine", f, "--part", "eyes"], ["edit", f, "--part", "eyes", "--refine"],
                 ["remove", f, "--part", "eyes", "--refine"]):
        r = run(*args, "--seeds", "0", "--out", tmp_path / "x")
        assert r.exit_code == 2 and "'eyes' names parts 1, 5, and refinement fits one part" in r.output, r.output
    r = run("refine", f, "--part", "mouth", "--seeds", "0", "--steps", 2, "--out", tmp_path / "m")
    assert r.exit_code == 0 and (tmp_path / "m" / "refine_part3.png").is_file(), r.output
    r = run("edit", f, "--part", "eyes", "--region", "mouth", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--part and --region both say what to edit" in r.output
    # --edit takes the name of one part; a name for several is refused, naming them
    for edits, out in ((["--edit", "mouth,2,1", "--edit", "1,0,-1"], "en"), (["--edit", "3,2,1", "--edit", "1,0,-1"], "ei")):
        r = run("edit", f, *edits, "--seeds", "0", "--save-arrays", "--out", tmp_path / out)
        assert r.exit_code == 0, r.output
    with np.load(tmp_path / "en" / "edit.npz") as a, np.load(tmp_path / "ei" / "edit.npz") as b:
        assert a["edits"].tolist() == b["edits"].tolist() == [[3, 2, 1], [1, 0, -1]]
        assert np.array_equal(a["edited"], b["edited"])
    r = run("edit", f, "--edit", "eyes,2,1", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "'eyes' names parts 1, 5: an edit adds an appearance to one part" in r.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args,match", [
    ([], "exactly one of --part"),
    (["--part", 0, "--region", "eyes"], "exactly one of --part"),
    (["--part", 99], "part 99 is out of range"),
    (["--part", "nose"], "no part is named 'nose'"),
    (["--part", 0, "-j", 999], "appearance 999 is out of range"),
    (["--part", 0, "--alpha", "nan"], "finite"),
    (["--part", 0, "--seeds", "0-20", "--sources", "0-30"], "16 targets x 31 sources is more than 400 images"),
    (["--part", 0, "--source-latent", "missing.npy"], "missing.npy"),
    (["--region", "eyes", "--refine"], "--refine refines parts"),
])
def test_bad_transfer_input_writes_nothing(factor_file, tmp_path, args, match):
    out = tmp_path / "out"
    r = run("transfer", factor_file, *args, "--out", out)
    assert r.exit_code == 2 and match in r.output, r.output
    assert not out.exists()


def test_many_samples_stream_their_images_and_draw_the_first_rows(factor_file, tmp_path, monkeypatch):
    """More samples than a figure shows: the figure and arrays hold the first FIGURE_ROWS, --save-images writes
    every sample's result, computed a chunk at a time (here chunks of 8 for 20 samples), the same as one call."""
    import torch

    import panda
    from panda import cli
    from panda.editing import Edit, edit as edit_images
    from panda.regions import region_for
    from panda.removal import remove
    monkeypatch.setattr(cli, "CHUNK", 8)
    monkeypatch.setattr(cli, "FIGURE_ROWS", 6)
    g = panda.load_generator("dcgan-celeba")
    model = PandA.load(factor_file)
    r = run("edit", factor_file, "--part", 2, "--appearance", 1, "--alpha", 1.5, "--seeds", "0-19", "--save-images",
            "--save-arrays", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert "first 6 of 20 samples" in r.output
    saved = sorted((tmp_path / "e" / "images").glob("edited_*.png"))
    assert len(saved) == 20
    with np.load(tmp_path / "e" / "edit_part2_app1.npz") as data:
        assert data["images"].shape[0] == 6 and len(data["labels"]) == 6
    assert Image.open(tmp_path / "e" / "edit_part2_app1.png").height < 8 * 132  # 6 rows, not 20
    want = g.to_unit(edit_images(model, g, [17], [Edit(2, 1, 1.5)]))[0]
    got = torch.from_numpy(np.asarray(Image.open(tmp_path / "e" / "images" / "edited_17.png"), dtype=np.float32) / 255)
    assert (got.permute(2, 0, 1) - want).abs().max() <= 1 / 255 + 1e-6  # the 3rd chunk's, as one call gives it
    box = tmp_path / "box.png"
    img = Image.new("L", (64, 64), 0)
    img.paste(255, (16, 32, 48, 56))
    img.save(box)
    r = run("edit", factor_file, "--mask", box, "-j", 3, "--alpha", 2, "--seeds", "0-9", "--save-images",
            "--out", tmp_path / "m")
    assert r.exit_code == 0 and len(list((tmp_path / "m" / "images").glob("edited_*.png"))) == 10, r.output
    from panda.editing import region_sweep
    from panda.regions import rasterise_mask
    want = g.to_unit(region_sweep(model, g, [9], rasterise_mask(box, (8, 8)), 3, [2.0]))[0, 0]
    got = torch.from_numpy(np.asarray(Image.open(tmp_path / "m" / "images" / "edited_9.png"), dtype=np.float32) / 255)
    assert (got.permute(2, 0, 1) - want).abs().max() <= 1 / 255 + 1e-6
    r = run("edit", factor_file, "--edit", "2,1,1", "--edit", "3,0,-1", "--seeds", "0-9", "--save-images",
            "--out", tmp_path / "s")
    assert r.exit_code == 0 and len(list((tmp_path / "s" / "images").glob("edited_*.png"))) == 10, r.output
    r = run("remove", factor_file, "--part", 2, "--seeds", "0-9", "--save-images", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    assert "fill chosen on the first 6 samples" in r.output
    assert len(list((tmp_path / "r" / "images").glob("removed_*.png"))) == 10
    fill = re.search(r"background appearance (\d+) \(([+-]1)\)", r.output)
    want = g.to_unit(remove(model, g, [9], region_for(model, part=2), 1.5, int(fill.group(1)), float(fill.group(2))))[0]
    got = torch.from_numpy(np.asarray(Image.open(tmp_path / "r" / "images" / "removed_9.png"), dtype=np.float32) / 255)
    assert (got.permute(2, 0, 1) - want).abs().max() <= 1 / 255 + 1e-6
    # transfer: the table holds the first 6 targets; --save-images gives all 10 each source, 8 // 3 = 2 targets a
    # chunk, each image as one call for that target gives it (sources' parts refined once, targets' per chunk)
    from panda.transfer import transfer
    r = run("transfer", factor_file, "--part", 2, "--refine", "--seeds", "0-9", "--sources", "30-32", "--save-images",
            "--save-arrays", "--out", tmp_path / "t")
    assert r.exit_code == 0 and "first 6 of 10 samples" in r.output, r.output
    saved = sorted((tmp_path / "t" / "images").glob("transfer_*_from_*.png"))
    assert len(saved) == 30 and (tmp_path / "t" / "images" / "transfer_9_from_32.png") in saved
    with np.load(tmp_path / "t" / "transfer_parts2_refined.npz") as data:
        assert data["images"].shape[:2] == (6, 3)
    from panda.refinement import refine
    want = transfer(model, g, [8, 9], [30, 31, 32], parts=[2], target_parts=refine(model, g, [8, 9])[1].parts,
                    source_parts=refine(model, g, [30, 31, 32])[1].parts).images[1, 2]
    got = torch.from_numpy(np.asarray(Image.open(tmp_path / "t" / "images" / "transfer_9_from_32.png"),
                                      dtype=np.float32) / 255)
    assert (got.permute(2, 0, 1) - want).abs().max() <= 1 / 255 + 1e-6
    # refine: the figure compares the first 6; --save-images writes every sample's edit with the global and its own
    # part, 8 // 2 = 4 samples a chunk (the last chunk: seeds 8 and 9, as one call for them gives them)
    from panda.refinement import compare_refinement
    r = run("refine", factor_file, "--part", 2, "-j", 1, "-a", 1.5, "--seeds", "0-9", "--save-images",
            "--out", tmp_path / "rf")
    assert r.exit_code == 0 and "first 6 of 10 samples; --save-images writes all of them" in r.output, r.output
    assert len(list((tmp_path / "rf" / "images").glob("global_*.png"))) == 10
    assert len(list((tmp_path / "rf" / "images").glob("refined_*.png"))) == 10
    last = compare_refinement(model, g, [8, 9], 2, 1, 1.5)
    for kind, want in (("global", last.with_global[1]), ("refined", last.with_refined[1])):
        got = torch.from_numpy(np.asarray(Image.open(tmp_path / "rf" / "images" / f"{kind}_9.png"), dtype=np.float32) / 255)
        assert (got.permute(2, 0, 1) - want).abs().max() <= 1 / 255 + 1e-6, kind
    r = run("localize", factor_file, "--appearance", 3, "--seeds", "0-9", "--save-arrays", "--out", tmp_path / "l")
    assert r.exit_code == 0 and "first 6 of 10 samples; --save-arrays writes appearance 3's maps" in r.output, r.output
    with np.load(tmp_path / "l" / "localize_app3.npz") as data:
        assert data["maps"].shape[0] == 6 and data["appearance_maps"].shape == (10, 8, 8)
    r = run("localize", factor_file, "--appearance", 3, "--seeds", "0-9", "--out", tmp_path / "l2")
    assert r.exit_code == 0 and "first 6 of 10 samples; the others are not used (--save-arrays" in r.output, r.output


def test_streamed_images_stop_with_how_many_were_written(tmp_path, monkeypatch):
    import torch

    from panda import cli
    monkeypatch.setattr(cli, "CHUNK", 2)

    def produce(samples, labels):
        if 4 in samples:
            raise PandaError("FaceMesh found no face in seeds [4]: leave them out of --seeds.")
        return torch.zeros(len(samples), 3, 8, 8)

    with pytest.raises(PandaError, match=r"no face in seeds \[4\].*\(4 image\(s\) were written"):
        cli._export_all(tmp_path, [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], "edited", produce, False)
    assert len(list((tmp_path / "images").glob("edited_*.png"))) == 4


def test_transfer_between_classes_of_a_conditional_generator(factor_file, tmp_path):
    """--source-class: the sources drawn from another class (dcgan-eyes: blue irises given to brown eyes)."""
    eyes = tmp_path / "eyes.safetensors"
    r = run("fit", "--generator", "dcgan-eyes", "-n", 64, "-rs", 4, "--background-samples", 0, "--out", eyes, "-q")
    assert r.exit_code == 0, r.output
    assert "class" not in PandA.load(eyes).generator_source_  # classes drawn per seed
    green = tmp_path / "green.safetensors"
    r = run("fit", "--generator", "dcgan-eyes", "--class", "green", "-n", 16, "-rs", 4, "--max-iter", 2,
            "--background-samples", 0, "--out", green, "-q")
    assert r.exit_code == 0 and PandA.load(green).generator_source_["class"] == "green", r.output
    assert "seeds of class green" in run("info", green).output  # the file says what its seeds drew
    # commands on it draw that class, as they take its truncation and noise; --class any: each seed's own
    for extra, out, expected in (([], "g", panda.load_generator("dcgan-eyes", class_="green")),
                                 (["--class", "any"], "a", panda.load_generator("dcgan-eyes"))):
        r = run("edit", green, "--edit", "1,0,1", "--no-sweep", "--seeds", "0-3", "--save-arrays", *extra,
                "--out", tmp_path / out)
        assert r.exit_code == 0, r.output
        with np.load(tmp_path / out / "edit.npz") as data:
            assert np.allclose(data["original"], expected.render([0, 1, 2, 3]).numpy(), atol=1e-6)
    r = run("transfer", eyes, "--part", 1, "--class", "brown", "--source-class", "blue", "--seeds", "0-1",
            "--sources", "20,21", "--save-images", "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "t" / "images").glob("transfer_*_from_20blue.png"))) == 2
    for args, match in ((["--source-class", "purple"], "unknown class 'purple'"),
                        (["--source-class", "blue", "--source-latent", "z.npy"], "brings its own labels")):
        r = run("transfer", eyes, "--part", 1, *args, "--out", tmp_path / "x")
        assert r.exit_code == 2 and match in r.output, r.output
    r = run("transfer", factor_file, "--part", 1, "--source-class", "blue", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "unconditional" in r.output, r.output
