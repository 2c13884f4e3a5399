"""The README's Python example runs as written: users copy it first, and a stale line fails on their machine."""

import re
from pathlib import Path

import numpy as np
from PIL import Image

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README has one Python example; this test runs it"
    # smaller data than the README's, for a test's time; everything else as written
    code = blocks[0].replace("range(5000)", "range(256)").replace('"relu2", 256)', '"relu2", 64)')
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
