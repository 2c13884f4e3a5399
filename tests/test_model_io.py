import json
import os

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


def test_foreign_safetensors_refused(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(PandaError, match="not written by panda"):
        PandA.load(path)


def _rewrite(model, path, **changes):
    from safetensors.torch import save_file
    from panda.model import _TENSORS
    tensors = {name: getattr(model, name + "_").clone() for name in _TENSORS}
    tensors.update(changes)
    save_file(tensors, str(path), metadata={"panda": json.dumps(model.metadata())})


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


def test_names_for_missing_parts_refused(model, tmp_path):
    path = tmp_path / "f.safetensors"
    meta = model.metadata() | {"part_names": {"99": "eyes"}}
    from safetensors.torch import save_file

    from panda.model import _TENSORS
    save_file({n: getattr(model, n + "_").contiguous() for n in _TENSORS}, str(path), metadata={"panda": json.dumps(meta)})
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
