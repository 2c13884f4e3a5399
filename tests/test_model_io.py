import json
import os
import re
from pathlib import Path

import pytest
import torch

import panda
from panda import PandaError
from panda.fileio import atomic_write
from panda.model import PandA


def test_save_load_round_trip_is_exact(model, factor_file):
    loaded = PandA.load(factor_file)
    from panda.model import _TENSORS
    for name in _TENSORS:
        assert torch.equal(getattr(model, name + "_"), getattr(loaded, name + "_"))
    assert (loaded.background_, loaded.background_sign_) == (model.background_, model.background_sign_)
    assert loaded.layer_shape_ == model.layer_shape_
    assert loaded.feature_scale_ == model.feature_scale_
    assert loaded.generator_hash_ == model.generator_hash_
    assert loaded.heldout_error_ == model.heldout_error_


def test_metadata_is_readable_json(factor_file):
    from safetensors import safe_open
    with safe_open(str(factor_file), "pt") as fh:
        meta = json.loads(fh.metadata()["panda"])
    assert meta["generator"] == "dcgan-celeba" and meta["layer"] == "relu2"
    assert meta["rank_parts"] == 8 and meta["n_samples"] == 256 and meta["panda_version"] == panda.__version__


def test_mismatched_generator_or_layer_refused(factor_file, digiface, celeba):
    loaded = PandA.load(factor_file)
    with pytest.raises(PandaError, match="fitted on generator 'dcgan-celeba'"):
        loaded.check_compatible(digiface)
    with pytest.raises(PandaError, match="fitted at layer 'relu2', not 'relu3'"):
        loaded.check_compatible(celeba, "relu3")
    loaded.check_compatible(celeba, "relu2")


def test_corrupt_file_refused(tmp_path, factor_file):
    bad = tmp_path / "bad.safetensors"
    data = factor_file.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(PandaError, match="not a readable panda factor file"):
        PandA.load(bad)
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(PandaError, match="fit the factors again"):
        PandA.load(bad)


def test_missing_file_refused(tmp_path):
    with pytest.raises(PandaError, match="does not exist"):
        PandA.load(tmp_path / "nope.safetensors")
    with pytest.raises(PandaError, match="is a folder: give the path of the factor file inside it"):
        PandA.load(tmp_path)  # it exists: "does not exist" would mislead


def test_numpy_integer_hyper_parameters_fit_and_save(tmp_path):
    import numpy as np
    maps = torch.randn(12, 4, 4, 4)
    model = PandA(rank_parts=np.int64(3), n_init=np.int32(2), max_iter=np.int64(2)).fit(maps)  # a rank from an array
    assert model.parts_.shape == (16, 3) and type(model.rank_parts) is int
    back = PandA.load(model.save(tmp_path / "f.safetensors"))  # metadata is JSON: a numpy int would not serialise
    assert back.n_parts == 3 and back.n_init == 2


def test_get_and_set_params_as_scikit_learn_has_them(tmp_path):
    """get_params gives the constructor's parameters (an unfitted copy refits the same), set_params changes them with
    the constructor's conversions and refuses unknown names; a loaded file gives those it was fitted with."""
    import numpy as np
    maps = torch.randn(12, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    model = PandA(rank_parts=3, max_iter=3, mixing=True, random_state=5)
    params = model.get_params()
    assert params["rank_parts"] == 3 and params["mixing"] is True and set(params) >= {"rank_appearance", "reseed"}
    fitted = model.fit(maps)  # model itself, fitted
    copy = PandA(**fitted.get_params()).fit(maps)
    assert torch.equal(copy.parts_, fitted.parts_) and copy.get_params() == params
    back = PandA.load(fitted.save(tmp_path / "f.safetensors"))
    assert {k: back.get_params()[k] for k in ("rank_parts", "max_iter", "mixing", "random_state")} == \
        {"rank_parts": 3, "max_iter": 3, "mixing": True, "random_state": 5}
    assert model.set_params(rank_parts=np.int64(2), tol=0.01) is model and type(model.rank_parts) is int
    assert model.get_params() == params | {"rank_parts": 2, "tol": 0.01} and model.parts_.shape == (16, 3)
    assert model.fit(maps).parts_.shape == (16, 2)
    with pytest.raises(PandaError, match="no parameter 'rank'.*rank_parts"):
        model.set_params(rank=3)


def test_the_fits_settings_are_recorded_and_read_back(tmp_path):
    """max_iter, tol and mixing_directions go into the file, as n_init and reseed do: the file says how it was fitted
    (and the loaded estimator's parameters refit it so); files from before them read as the defaults then."""
    from click.testing import CliRunner
    from safetensors.torch import save_file

    from panda.cli import main
    from panda.model import _TENSORS, tensor_digest
    maps = torch.randn(12, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    model = PandA(rank_appearance=4, rank_parts=3, max_iter=2, tol=0.01, mixing=True, mixing_directions=2).fit(maps)
    back = PandA.load(model.save(tmp_path / "f.safetensors"))
    assert (back.max_iter, back.tol, back.mixing, back.mixing_directions) == (2, 0.01, True, 2)
    assert (back.rank_appearance, back.rank_parts, back.n_init, back.reseed) == (4, 3, 4, 0)
    r = CliRunner().invoke(main, ["info", str(tmp_path / "f.safetensors")])
    assert "of at most 2 (tol 0.01)" in r.output and "fitted, 2 directions of their own" in r.output, r.output
    plain = PandA(rank_parts=3).fit(maps)
    meta = plain.metadata()
    for key in ("max_iter", "tol", "mixing_directions"):
        del meta[key]
    tensors = {name: getattr(plain, name + "_").clone() for name in _TENSORS}
    save_file(tensors, str(tmp_path / "old.safetensors"),
              metadata={"panda": json.dumps(dict(meta, tensor_sha256=tensor_digest(tensors)))})
    old = PandA.load(tmp_path / "old.safetensors")
    assert (old.max_iter, old.tol, old.mixing_directions) == (30, 1e-4, None)
    _rewrite(plain, tmp_path / "bad.safetensors", meta={"tol": -1})
    with pytest.raises(PandaError, match="'tol' is -1, it must be a finite number >= 0"):
        PandA.load(tmp_path / "bad.safetensors")


def test_foreign_safetensors_refused(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(PandaError, match="not written by panda"):
        PandA.load(path)


def _rewrite(model, path, meta=None, checksum=True, **changes):
    """A factor file with changed tensors or metadata; with a matching checksum (as a buggy writer would leave it)
    so that the value checks behind the checksum are reached."""
    from safetensors.torch import save_file
    from panda.model import _TENSORS, tensor_digest
    tensors = {name: getattr(model, name + "_").clone() for name in _TENSORS}
    tensors.update(changes)
    metadata = dict(model.metadata(), **(meta or {}))
    if checksum:
        metadata["tensor_sha256"] = tensor_digest(tensors)
    save_file(tensors, str(path), metadata={"panda": json.dumps(metadata)})


def test_damaged_values_refused(tmp_path, model):
    path = tmp_path / "f.safetensors"
    p = model.parts_.clone(); p[0, 0] = float("nan")
    _rewrite(model, path, parts=p)
    with pytest.raises(PandaError, match="NaN or inf"):
        PandA.load(path)
    p = model.parts_.clone(); p[0, 0] = -1
    _rewrite(model, path, parts=p)
    with pytest.raises(PandaError, match="negative"):
        PandA.load(path)
    _rewrite(model, path, appearances=model.appearances_ * 2)
    with pytest.raises(PandaError, match="orthonormal"):
        PandA.load(path)
    _rewrite(model, path, parts=model.parts_[:, :3].contiguous())
    with pytest.raises(PandaError, match="shape"):
        PandA.load(path)


def test_save_to_unwritable_place_is_a_clear_error(tmp_path, model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PandaError, match="cannot write the factor file"):
        model.save(blocker / "sub" / "f.safetensors")


def test_part_names_round_trip_and_label(model, tmp_path):
    named = PandA.load(model.save(tmp_path / "n.safetensors"))
    assert named.part_label(2) == "part 2"
    named.part_names_ = {2: "eyes", 5: "nose/mouth"}
    again = PandA.load(named.save(tmp_path / "n.safetensors"))
    assert again.part_names_ == {2: "eyes", 5: "nose/mouth"}
    assert again.part_label(2) == "part 2 (eyes)" and again.part_label(3) == "part 3"


def test_which_names_were_given_by_hand_round_trips_and_follows_the_parts(model, tmp_path):
    import copy
    named = copy.deepcopy(model)
    named.part_names_ = {1: "mouth"}  # as FaceMesh names them
    named.name_part(2, "eyes")
    named.name_part(5, "left cheek")
    assert named.hand_named_ == {2, 5}
    back = PandA.load(named.save(tmp_path / "f.safetensors"))
    assert back.part_names_ == {1: "mouth", 2: "eyes", 5: "left cheek"} and back.hand_named_ == {2, 5}
    back.name_part(5, None)
    assert back.hand_named_ == {2} and model.hand_named_ == frozenset()  # no model shares another's
    moved = back.reorder_parts([2, 0, 1, 3, 4, 5, 6, 7])
    assert moved.part_names_ == {0: "eyes", 2: "mouth"} and moved.hand_named_ == {0}
    _rewrite(named, tmp_path / "bad.safetensors", meta={"hand_named": [3]})  # a part without a name
    with pytest.raises(PandaError, match="named by hand is not readable"):
        PandA.load(tmp_path / "bad.safetensors")


def test_names_for_missing_parts_refused(model, tmp_path):
    path = tmp_path / "f.safetensors"
    _rewrite(model, path, meta={"part_names": {"99": "eyes"}})
    with pytest.raises(PandaError, match="outside 0..7"):
        PandA.load(path)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write(path, "old")

    def killed(fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, killed)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left
    mask = os.umask(0o022)
    try:
        atomic_write(path, b"new")
    finally:
        os.umask(mask)
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_flipped_bit_in_the_tensors_is_refused(tmp_path, model):
    path = model.save(tmp_path / "f.safetensors")
    raw = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")  # safetensors: 8-byte header length, JSON header, then the data
    raw[header + (len(raw) - header) // 2] ^= 0x04  # one bit in the middle of the tensor bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(PandaError, match="checksum"):
        PandA.load(path)
    _rewrite(model, path, checksum=False)  # a file that says version 2 but carries no checksum
    with pytest.raises(PandaError, match="checksum"):
        PandA.load(path)
    _rewrite(model, path, meta={"format_version": 1}, checksum=False)  # files from before checksums still load
    assert torch.equal(PandA.load(path).parts_, model.parts_)


@pytest.mark.parametrize("key,value,match", [
    ("layer_shape", "256x8x8", "layer_shape"),
    ("background", "3", "background"),
    ("background_sign", 0, "background_sign.*[+]1 or -1"),
    ("feature_scale", float("nan"), "feature_scale"),
    ("feature_scale", -2.0, "feature_scale"),
    ("feature_scale", 1e300, "feature_scale"),
    ("rank_parts", 2.5, "rank_parts"),
    ("error_history", "low", "error_history"),
    ("mixing", "yes", "mixing.*true or false"),
])
def test_metadata_of_the_wrong_type_is_one_clear_error(tmp_path, model, key, value, match):
    path = tmp_path / "f.safetensors"
    _rewrite(model, path, meta={key: value})
    with pytest.raises(PandaError, match=match):
        PandA.load(path)


def test_check_output_file_refuses_before_any_work(tmp_path):
    from panda.fileio import check_output_file
    existing = tmp_path / "f.safetensors"
    existing.write_text("x")
    for bad, match in [("", "empty"), (tmp_path, "is a folder"), (existing / "x.safetensors", "is a file"),
                       (existing, "already exists")]:
        with pytest.raises(PandaError, match=match):
            check_output_file(bad)
    assert check_output_file(existing, overwrite=True) == existing
    assert check_output_file(tmp_path / "new" / "deeper" / "f.safetensors")
    assert not (tmp_path / "new").exists()  # nothing created
    assert list(tmp_path.iterdir()) == [existing]  # not even a probe file left behind
    if Path("/proc/self").is_dir():  # os.access says yes to root here; creating a file does not
        with pytest.raises(PandaError, match="files cannot be created|not writable"):
            check_output_file("/proc/panda-test.md")


def test_publish_folder_replaces_a_folder_whole(tmp_path):
    from panda.fileio import PAGE_MARKER, publish_folder, staging_folder
    final = tmp_path / "demo"
    staging = staging_folder(final)
    (staging / "old.png").write_text("old")
    publish_folder(staging, final)
    staging = staging_folder(final)  # a folder panda wrote: replaced as a whole
    (staging / "new.png").write_text("new")
    assert final.is_dir() and (final / "old.png").exists()  # untouched until published
    assert publish_folder(staging, final) == final
    assert sorted(p.name for p in final.iterdir()) == sorted([PAGE_MARKER, "new.png"])
    assert (final / PAGE_MARKER).read_text() == "new.png\n"  # the files it was published with
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no staging or old copy left


def test_a_folder_of_ones_own_files_is_never_replaced_by_a_page(tmp_path, monkeypatch):
    from panda.fileio import publish_folder, staging_folder
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(PandaError, match=r"holds files panda did not write \(notes.txt\)"):
        staging_folder(mine)
    monkeypatch.chdir(mine)
    with pytest.raises(PandaError, match="holds files panda did not write"):
        staging_folder(".")  # the folder one is in
    assert (mine / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    page = tmp_path / "page"  # a page, then a file of one's own put beside its pictures: kept, the page refused
    staging = staging_folder(page)
    (staging / "index.html").write_text("<html>")
    publish_folder(staging, page)
    (page / ".DS_Store").write_bytes(b"\0")  # a file browser's: no reason to refuse
    publish_folder(staging_folder(page), page)
    (page / "my_selection.png").write_text("mine")
    with pytest.raises(PandaError, match="my_selection.png"):
        staging_folder(page)
    older = tmp_path / "older"  # a demo written before the list: its index, factors and pictures only
    older.mkdir()
    for name in ("index.html", "factors.safetensors", "parts.png"):
        (older / name).write_bytes(b"x")
    publish_folder(staging_folder(older), older)
    (older / "x.png").write_bytes(b"x")
    (older / ".panda-page").unlink()
    (older / "notes.md").write_text("mine")
    with pytest.raises(PandaError, match="notes.md"):
        staging_folder(older)
    (tmp_path / "empty").mkdir()
    publish_folder(staging_folder(tmp_path / "empty"), tmp_path / "empty")


def test_kill_9_while_saving_leaves_no_temporary_file(tmp_path):
    """A writer killed at random moments of a large write: the target is old or new, whole, and nothing else is left
    but, if the kill came in the instant between naming the file and renaming it, that one name, which the next write
    of the file removes."""
    import signal
    import subprocess
    import sys
    import time
    target = tmp_path / "big.bin"
    script = ("import sys\nfrom panda.fileio import atomic_write\n"
              "for i in range(10**6):\n    atomic_write(sys.argv[1], bytes([i % 256]) * (8 << 20))\n")
    from panda.fileio import atomic_write
    atomic_write(target, b"\xff" * (8 << 20))
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script, str(target)])
        time.sleep(2.5 + 0.17 * trial)  # importing panda takes about 2 s; then a write every few tens of ms
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = sorted(p.name for p in tmp_path.iterdir() if p.name != "big.bin")
        assert target.is_file() and (not left or re.fullmatch(rf"\.big\.bin\.{proc.pid}\.[0-9a-f]+\.tmp", left[0])), left
        assert len(left) <= 1
        data = target.read_bytes()
        assert len(data) == 8 << 20 and data == data[:1] * len(data)
        atomic_write(target, data)  # the next write removes what the killed one may have left
        assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]


def test_a_name_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    """The instant between naming the unnamed file and renaming it, made to last: a kill there leaves the name; a
    running writer's name is kept."""
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".f.bin.{int(dead.stdout)}.7f00.tmp"
    live = tmp_path / f".f.bin.{os.getpid()}.7f01.tmp"
    other = tmp_path / ".g.bin.1.7f02.tmp"  # another file's: not this write's business
    for p in (stale, live, other):
        p.write_bytes(b"x")
    atomic_write(tmp_path / "f.bin", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["f.bin", live.name, other.name])


def test_a_mixing_round_trips_and_older_files_keep_their_version(tmp_path, model, mixed_model, celeba):
    from panda.features import FeatureSource, capture
    from safetensors import safe_open
    path = mixed_model.save(tmp_path / "mixed.safetensors")
    loaded = PandA.load(path)
    assert loaded.mixing and torch.equal(loaded.mixing_, mixed_model.mixing_)
    assert "with mixing W" in repr(loaded) and "mixing" not in repr(model)
    with safe_open(str(path), "pt") as fh:
        assert json.loads(fh.metadata()["panda"])["format_version"] == 3
    plain = PandA.load(model.save(tmp_path / "plain.safetensors"))  # no mixing: still version 2, W = I
    with safe_open(str(tmp_path / "plain.safetensors"), "pt") as fh:
        assert json.loads(fh.metadata()["panda"])["format_version"] == 2 and "mixing" not in fh.keys()
    assert plain.mixing_ is None and not plain.mixing
    # reconstruction and score use W: the held-out error is that of A W A^T Z P P^T, below the plain model's
    z = capture(celeba, celeba.sample(range(900, 904)), "relu2")
    a, p, w = loaded.appearances_, loaded.parts_, loaded.mixing_
    assert torch.allclose(loaded.reconstruct(z).flatten(2), a @ w @ (a.T @ z.flatten(2) @ p) @ p.T, atol=1e-4)
    assert mixed_model.heldout_error_ < model.heldout_error_
    assert loaded.score(FeatureSource.heldout(celeba, "relu2", 64)) == pytest.approx(mixed_model.heldout_error_)


def test_a_damaged_mixing_is_refused(tmp_path, mixed_model):
    from safetensors.torch import save_file
    from panda.model import _TENSORS, tensor_digest
    path = tmp_path / "f.safetensors"
    w = mixed_model.mixing_
    skew = torch.zeros_like(w)
    skew[0, 1] = 1.0
    for bad, match in ((w + skew, "not symmetric positive semi-definite"), (-w, "not symmetric positive semi-definite"),
                       (w[:3, :3].contiguous(), "shape"), (w * float("nan"), "NaN or inf")):
        tensors = {name: getattr(mixed_model, name + "_").clone() for name in _TENSORS}
        tensors["mixing"] = bad
        meta = dict(mixed_model.metadata(), tensor_sha256=tensor_digest(tensors))
        save_file(tensors, str(path), metadata={"panda": json.dumps(meta)})
        with pytest.raises(PandaError, match=match):
            PandA.load(path)
    tensors = {name: getattr(mixed_model, name + "_").clone() for name in _TENSORS}  # the mixing dropped: not W = I
    save_file(tensors, str(path), metadata={"panda": json.dumps(dict(mixed_model.metadata(),
                                                                    tensor_sha256=tensor_digest(tensors)))})
    with pytest.raises(PandaError, match=r"lacks the tensors \['mixing'\]"):
        PandA.load(path)


def test_as_arrays_keeps_data_and_leaves_objects_out():
    import dataclasses
    from typing import NamedTuple

    import numpy as np

    from panda.fileio import as_arrays

    class Pair(NamedTuple):
        parts: torch.Tensor
        shifts: torch.Tensor

    @dataclasses.dataclass
    class Result:
        images: torch.Tensor
        gain: float
        pair: Pair
        table: dict
        note: object = None
        anything: object = dataclasses.field(default_factory=object)

    got = as_arrays(Result(torch.ones(2, 3), 0.5, Pair(torch.zeros(2, 4), torch.zeros(2, 2, dtype=torch.long)),
                           {(3, 1.0): 0.25, (4, -1.0): 0.5}))
    assert set(got) == {"images", "gain", "pair_parts", "pair_shifts", "table_keys", "table_values"}
    assert got["table_keys"].tolist() == [[3, 1.0], [4, -1.0]] and got["table_values"].tolist() == [0.25, 0.5]
    assert got["pair_shifts"].dtype == np.int64 and got["images"].shape == (2, 3)
