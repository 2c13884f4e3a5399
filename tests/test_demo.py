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
