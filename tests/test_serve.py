"""The browser explorer, driven in a real (headless) Chromium."""

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from panda import PandaError
from panda.drawing import png_bytes, to_pil
from panda.serve import allowed_hosts, create_app, port_free, server_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(app):
    """Run ``app`` on a free local port in a thread; yields (base url, port)."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(server_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}", port
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(model, celeba):
    yield from serving(create_app(model, celeba, seed=3))


def test_api_returns_pngs_and_clear_errors(server):
    base, _ = server
    with urllib.request.urlopen(f"{base}/api/edit.png?seed=3&part=1&appearance=2&alpha=1.5") as r:
        body = r.read()
        assert r.headers["content-type"] == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/api/edit.png?seed=3&part=99&appearance=2&alpha=1")
    assert err.value.code == 400 and b"part 99 is out of range" in err.value.read()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/api/localize.png?seed=3&appearance=999")
    assert err.value.code == 400


def test_port_in_use_is_a_clear_error(server):
    _, port = server
    with pytest.raises(PandaError, match=f"port {port} on 127.0.0.1 is in use"):
        port_free("127.0.0.1", port)


def test_cli_serve_port_in_use(server, factor_file):
    from click.testing import CliRunner

    from panda.cli import main
    _, port = server
    r = CliRunner().invoke(main, ["serve", str(factor_file), "--port", str(port)])
    assert r.exit_code == 2 and "is in use" in r.output


def test_cli_serve_saves_names_into_the_file_it_serves_and_shows_edits_as_its_command(factor_file, monkeypatch):
    from click.testing import CliRunner

    import panda.cli
    served = {}
    monkeypatch.setattr(panda.cli, "run_server", lambda *args: served.setdefault("args", args))
    r = CliRunner().invoke(panda.cli.main, ["serve", str(factor_file), "--port", "8123", "--seed", "4",
                                            "--noise-mode", "const", "--generator", "dcgan-celeba"])
    assert r.exit_code == 0, r.output
    assert served["args"][-3] == str(factor_file) and served["args"][-1] is False  # --allow-naming not given
    # the page's edits as a command: the factor file and the generator options given, not the server's own
    assert served["args"][-2] == f"panda edit {factor_file} --generator dcgan-celeba --noise-mode const"


def test_an_explorer_on_a_shared_address_names_parts_only_when_allowed(model, celeba, factor_file, monkeypatch, capsys):
    import uvicorn

    import panda.serve as served
    given = []
    real = served.create_app
    monkeypatch.setattr(served, "create_app", lambda *a, **k: given.append(k["factors"]) or real(*a, **k))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)  # built, not run
    for host, allow in (("127.0.0.1", False), ("0.0.0.0", False), ("0.0.0.0", True)):
        served.serve(model, celeba, host, free_port(), factors=factor_file, allow_naming=allow)
    assert given == [factor_file, None, factor_file]
    err = capsys.readouterr().err
    assert "not name parts: --allow-naming" in err and f"and name the parts in {factor_file}" in err


def get(url: str, headers: dict | None = None):
    """(status, headers, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_api_stacks_edits_downloads_full_size_and_reads_alpha_zero(server, celeba):
    base, _ = server
    one = get(f"{base}/api/edit.png?seed=3&part=1&appearance=2&alpha=1.5")[2]
    assert get(f"{base}/api/edit.png?seed=3&edits=1,2,1.5")[2] == one  # a stack of one is the same edit
    two = get(f"{base}/api/edit.png?seed=3&edits=1,2,1.5&part=4&appearance=0&alpha=2")[2]
    assert two != one
    status, _, body = get(f"{base}/api/edit.png?seed=3&edits=" + ";".join(["1,2,1"] * 17))
    assert status == 400 and b"at most 16" in body
    status, headers, body = get(f"{base}/api/edit.png?seed=3&part=1&appearance=2&alpha=1.5&full=1")
    assert status == 200 and "attachment" in headers["content-disposition"]
    from io import BytesIO

    from PIL import Image
    assert Image.open(BytesIO(body)).size == (celeba.image_size, celeba.image_size)  # the generator's resolution
    # alpha 0 removes nothing (it used to be read as 1); no alpha means the default strength
    original = get(f"{base}/api/original.png?seed=3")[2]
    assert get(f"{base}/api/remove.png?seed=3&part=1&alpha=0")[2] == original
    assert get(f"{base}/api/remove.png?seed=3&part=1")[2] != original
    status, _, body = get(f"{base}/api/edit.png?seed=3&part=1&appearance=2&alpha=1e300")
    assert status == 400 and b"alpha" in body


def _hex(mask) -> str:
    """The page's encoding of a painted region: cells row by row, four to a hex digit, first in the highest bit."""
    bits = [int(b) for b in mask.flatten().tolist()]
    bits += [0] * (-len(bits) % 4)
    return "".join(f"{8 * a + 4 * b + 2 * c + d:x}" for a, b, c, d in zip(*[iter(bits)] * 4))


def test_painted_regions_parse_exactly_and_refuse_bad_input():
    import torch

    from panda.serve import parse_mask
    mask = torch.zeros(5, 7)
    mask[1:3, 2:6] = 1
    mask[4, 6] = 1  # the last cell, in the padded last digit
    assert torch.equal(parse_mask(_hex(mask), (5, 7)), mask)
    for bad, match in (("0" * 8, "must be 9 hex digits"), ("z" * 9, "must be 9 hex digits"), ("0" * 9, "empty")):
        with pytest.raises(PandaError, match=match):
            parse_mask(bad, (5, 7))


def test_api_edits_ranks_draws_and_removes_a_painted_region(server, model, celeba):
    import io

    import numpy as np
    import torch
    from PIL import Image

    from panda.editing import region_sweep
    from panda.localisation import RANKING_SEEDS, energy_maps, rank_for_region
    base, _ = server
    mask = torch.zeros(8, 8)
    mask[2:4, 1:7] = 1
    hexed = _hex(mask)
    top = get(f"{base}/api/region.json?seed=3&mask={hexed}")
    assert top[0] == 200
    ranked = json.loads(top[2])["top"]
    assert ranked == rank_for_region(energy_maps(model, celeba, RANKING_SEEDS), mask, 8) and len(set(ranked)) == 8
    j = ranked[0]
    status, _, body = get(f"{base}/api/edit.png?seed=3&mask={hexed}&appearance={j}&alpha=1.5&full=1")
    assert status == 200
    expected = to_pil(celeba.to_unit(region_sweep(model, celeba, [3], mask, j, [1.5]))[0, 0])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")), np.asarray(expected))
    # the same edit from the stack, and stacked with a part's edit
    assert get(f"{base}/api/edit.png?seed=3&edits=m{hexed},{j},1.5&full=1")[2] == body
    both = get(f"{base}/api/edit.png?seed=3&edits=m{hexed},{j},1.5;1,2,1&full=1")
    assert both[0] == 200 and both[2] != body
    original = get(f"{base}/api/original.png?seed=3")[2]
    assert get(f"{base}/api/part.png?seed=3&mask={hexed}")[0] == 200
    # the painted region as a file for --mask: rasterised back, it is the region
    from panda.regions import rasterise_mask
    status, headers, png = get(f"{base}/api/mask.png?seed=3&mask={hexed}&full=1")
    assert status == 200 and "panda-mask.png" in headers["content-disposition"]
    drawn = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255
    assert drawn.shape == (64, 64) and torch.equal(rasterise_mask(drawn, (8, 8)), mask)
    removed = get(f"{base}/api/remove.png?seed=3&mask={hexed}")
    assert removed[0] == 200 and removed[2] != original
    fill = json.loads(get(f"{base}/api/remove.json?seed=3&mask={hexed}")[2])
    assert fill["fill"] == "auto" and 0 <= fill["appearance"] < model.n_appearances
    for query, match in ((f"mask={'0' * 16}&appearance=1", b"empty"), ("mask=abc&appearance=1", b"16 hex digits"),
                         (f"edits=m{hexed},1", b"mHEX,APPEARANCE,ALPHA")):
        status, _, text = get(f"{base}/api/edit.png?seed=3&{query}")
        assert status == 400 and match in text, text


def test_api_transfers_a_part_or_a_painted_region_from_another_sample(server, model, celeba):
    """/api/transfer.png: the sample with another's content in the part (or the painted region), exactly what
    panda.transfer computes; from itself, or at alpha 0, the original."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    from panda.transfer import transfer
    base, _ = server
    status, _, body = get(f"{base}/api/transfer.png?seed=3&source=9&part=1&full=1")
    assert status == 200
    expected = transfer(model, celeba, [3], [9], parts=[1]).images[0, 0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")), np.asarray(to_pil(expected)))
    assert get(f"{base}/api/source.png?seed=3&source=9")[2] == get(f"{base}/api/original.png?seed=9")[2]
    original = get(f"{base}/api/original.png?seed=3")[2]
    assert get(f"{base}/api/transfer.png?seed=3&source=3&part=1")[2] == original
    assert get(f"{base}/api/transfer.png?seed=3&source=9&part=1&alpha=0")[2] == original
    mask = torch.zeros(8, 8)
    mask[5:7, 2:6] = 1
    status, _, body = get(f"{base}/api/transfer.png?seed=3&source=9&mask={_hex(mask)}&full=1")
    expected = transfer(model, celeba, [3], [9], region=mask).images[0, 0]
    assert status == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")),
                                            np.asarray(to_pil(expected)))
    # a transfer on the edit stack (tSOURCE,PART,ALPHA or tSOURCE,mHEX,ALPHA) gives the same picture, and stacks
    taken = get(f"{base}/api/transfer.png?seed=3&source=9&part=1&alpha=0.5&full=1")[2]
    assert get(f"{base}/api/edit.png?seed=3&edits=t9,1,0.5&full=1")[2] == taken
    assert get(f"{base}/api/edit.png?seed=3&edits=t9,m{_hex(mask)},1&full=1")[2] == body
    both = get(f"{base}/api/edit.png?seed=3&edits=t9,1,0.5;2,3,1&full=1")
    assert both[0] == 200 and both[2] != taken
    for edits, match in (("t9,1", b"tSOURCE,PART,ALPHA"), ("tx,1,1", b"tSOURCE,PART,ALPHA"),
                         ("t-1,1,1", b"source must be in"), ("t9,99,1", b"part 99 is out of range"),
                         ("t9,1,nan", b"finite"), ("t9,1,1,2", b"tSOURCE,PART,ALPHA")):
        status, _, text = get(f"{base}/api/edit.png?seed=3&edits={edits}")
        assert status == 400 and match in text, text
    for query, match in (("source=-1&part=1", b"source must be in"), ("part=1", b"source"),
                         ("source=9&part=99", b"part 99 is out of range")):
        status, _, text = get(f"{base}/api/transfer.png?seed=3&{query}")
        assert status == 400 and match in text, text


def test_api_finds_the_samples_with_the_most_of_an_appearance(server, model, celeba):
    """/api/retrieve.json: the first n samples ranked as panda.retrieval ranks them, in the part or painted region."""
    import torch

    from panda.editing import part_profile
    from panda.retrieval import retrieve
    base, _ = server
    status, _, body = get(f"{base}/api/retrieve.json?seed=3&part=1&appearance=2&n=40")
    found = json.loads(body)
    expected = retrieve(model, celeba, range(40), 2, part_profile(model, 1))
    assert status == 200 and found["n"] == 40 and found["most"] == expected.top(8)
    assert found["scores"] == pytest.approx([float(expected.scores[i]) for i in expected.top(8)], abs=1e-4)
    mask = torch.zeros(8, 8)
    mask[5:7, 2:6] = 1
    found = json.loads(get(f"{base}/api/retrieve.json?seed=3&mask={_hex(mask)}&appearance=2&n=40")[2])
    assert found["most"] == retrieve(model, celeba, range(40), 2, mask).top(8)
    for query, match in (("part=1&appearance=2&n=1", b"n must be"), ("part=1&appearance=2&n=x", b"n must be"),
                         ("part=1&appearance=2&n=10001", b"n must be"), ("part=1&appearance=999", b"out of range"),
                         ("appearance=2", b"part")):
        status, _, text = get(f"{base}/api/retrieve.json?seed=3&{query}")
        assert status == 400 and match in text, text


def test_api_removes_with_this_images_fill_or_the_global_one(server, model, celeba):
    """fill=auto (the default) uses the fill chosen for this part on this image; fill=global the fit's."""
    from panda.editing import part_profile
    from panda.removal import removal

    base, _ = server
    auto, chosen = get(f"{base}/api/remove.png?seed=3&part=1&fill=auto")[2], get(f"{base}/api/remove.png?seed=3&part=1")[2]
    glob = get(f"{base}/api/remove.png?seed=3&part=1&fill=global")[2]
    assert auto == chosen
    pick = removal(model, celeba, [3], part_profile(model, 1), 1.0, "auto")
    assert (auto == glob) == ((pick.appearance, pick.sign) == (model.background_, model.background_sign_))
    assert auto == png_bytes(to_pil(pick.removed[0], max(1, 256 // celeba.image_size)))
    status, _, body = get(f"{base}/api/remove.png?seed=3&part=1&fill=mean")
    assert status == 400 and b"fill=auto" in body
    # which fill each used, for the page's caption (and the command line's --background)
    said = json.loads(get(f"{base}/api/remove.json?seed=3&part=1")[2])
    assert said == {"fill": "auto", "appearance": pick.appearance, "sign": pick.sign,
                    "gain": pytest.approx(pick.search.gain, abs=1e-6)}
    said = json.loads(get(f"{base}/api/remove.json?seed=3&part=1&fill=global")[2])
    assert (said["fill"], said["appearance"], said["sign"]) == ("global", model.background_, model.background_sign_)
    assert get(f"{base}/api/remove.json?seed=3&part=99")[0] == 400


def test_api_uses_each_samples_own_parts_with_refine(server, model, celeba):
    """refine=1: the part map, click-to-pick, edits (alone and stacked), transfers and removal use the sample's refined
    parts (panda.refinement.refine), exactly as the library computes them with those parts; refine=0 the global ones."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    from panda.editing import Edit, edit_delta, part_profile, synthesize_offset
    from panda.refinement import refine
    from panda.removal import removal
    from panda.transfer import transfer

    def pixels(body):
        return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))

    base, _ = server
    own3, own9 = (refine(model, celeba, [s])[1].parts[0] for s in (3, 9))
    assert not torch.allclose(own3, model.parts_)  # refinement moved the parts: the two modes differ below
    grid = json.loads(get(f"{base}/api/strongest.json?seed=3&refine=1")[2])["strongest"]
    assert grid == own3.argmax(1).reshape(8, 8).tolist()
    assert json.loads(get(f"{base}/api/strongest.json?seed=3")[2])["strongest"] == model.part_maps().argmax(0).tolist()
    # the part map is the refined part's
    part = int(own3.argmax(1)[0])
    own_map, global_map = (get(f"{base}/api/part.png?seed=3&part={part}&refine={r}")[2] for r in (1, 0))
    assert own_map != global_map
    # an edit with the sample's own part, alone and on the stack
    lat = celeba.sample([3])
    edit = Edit(1, 2, 1.5)
    expected = celeba.to_unit(synthesize_offset(celeba, model.layer_, lat, edit_delta(model, [edit], own3)[None]))[0]
    body = get(f"{base}/api/edit.png?seed=3&part=1&appearance=2&alpha=1.5&refine=1&full=1")[2]
    assert np.array_equal(pixels(body), np.asarray(to_pil(expected.cpu())))
    assert get(f"{base}/api/edit.png?seed=3&edits=1,2,1.5&refine=1&full=1")[2] == body
    assert get(f"{base}/api/edit.png?seed=3&part=1&appearance=2&alpha=1.5&full=1")[2] != body
    # a transfer reads the source's own part and writes the target's
    body = get(f"{base}/api/transfer.png?seed=3&source=9&part=1&refine=1&full=1")[2]
    expected = transfer(model, celeba, [3], [9], parts=[1], target_parts=own3[None], source_parts=own9[None]).images[0, 0]
    assert np.array_equal(pixels(body), np.asarray(to_pil(expected)))
    assert get(f"{base}/api/edit.png?seed=3&edits=t9,1,1&refine=1&full=1")[2] == body
    # removal fills the sample's own part (its fill searched for that region)
    pick = removal(model, celeba, [3], part_profile(model, 1, own3), 1.0, "auto")
    assert get(f"{base}/api/remove.png?seed=3&part=1&refine=1")[2] == png_bytes(to_pil(pick.removed[0], 4))
    said = json.loads(get(f"{base}/api/remove.json?seed=3&part=1&refine=1")[2])
    assert (said["appearance"], said["sign"]) == (pick.appearance, pick.sign)
    status, _, body = get(f"{base}/api/edit.png?seed=3&part=1&appearance=2&refine=yes")
    assert status == 400 and b"refine=1" in body


def test_explorer_refuses_foreign_hosts_long_queries_and_sheds_load(model, celeba):
    port = free_port()
    app = create_app(model, celeba, seed=3, hosts=allowed_hosts("127.0.0.1", port), max_waiting=0)
    import uvicorn
    srv = uvicorn.Server(server_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if srv.started:
                break
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/api/original.png?seed=3")[0] == 200
        assert get(f"{base}/api/original.png?seed=3", {"Host": f"localhost:{port}"})[0] == 200
        status, _, body = get(f"{base}/api/original.png?seed=3", {"Host": "attacker.example:80"})  # DNS rebinding
        assert status == 400 and b"Host" in body
        assert get(f"{base}/api/original.png?seed=3&pad=" + "x" * (1 << 20))[0] == 414  # answered, not reset
        assert get(f"{base}/api/original.png?seed=3&pad=" + "x" * 19_000)[0] == 200  # a stack of painted regions
        # one generation at a time and none waiting: simultaneous requests beyond it are refused at once
        barrier, codes = threading.Barrier(8), []

        def hit():
            barrier.wait()
            codes.append(get(f"{base}/api/remove.png?seed=3&part=1")[0])
        workers = [threading.Thread(target=hit) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def post(url: str, body: bytes, headers: dict | None = None):
    """(status, body) of a POST, errors included."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_explorer_names_parts_into_the_factor_file_from_its_own_page_only(factor_file, celeba, tmp_path):
    from panda.model import PandA
    path = tmp_path / "f.safetensors"
    path.write_bytes(factor_file.read_bytes())
    model = PandA.load(path)  # a copy: the session's model stays unnamed
    for base, port in serving(create_app(model, celeba, seed=3, factors=path)):
        own = {"Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"}
        name = lambda part, text, headers=own: post(f"{base}/api/name", json.dumps({"part": part, "name": text}).encode(), headers)
        status, body = name(2, "left eye")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["labels"][2] == "part 2 (left eye)" and answer["backup"] == str(path) + ".bak"
        assert PandA.load(path).part_names_ == {2: "left eye"} and model.part_names_ == {2: "left eye"}
        assert (tmp_path / "f.safetensors.bak").read_bytes() == factor_file.read_bytes()  # the file as it was
        assert json.loads(get(f"{base}/api/info")[2])["names"]["2"] == "left eye"
        assert name(5, " left eye ")[0] == 200 and name(2, "")[0] == 200  # shared by a second part; then unnamed
        assert PandA.load(path).part_names_ == {5: "left eye"}
        assert (tmp_path / "f.safetensors.bak").read_bytes() == factor_file.read_bytes()  # made once, not overwritten
        # another site's page (a form or a fetch to this address), a non-JSON body, bad input: refused, file untouched
        before = path.read_bytes()
        assert name(1, "x", {"Origin": "http://attacker.example", "Content-Type": "application/json"})[0] == 403
        assert name(1, "x", {"Content-Type": "application/json"})[0] == 403  # no Origin
        assert name(1, "x", {"Origin": own["Origin"], "Content-Type": "text/plain"})[0] == 415
        assert post(f"{base}/api/name", b"{not json", own)[0] == 400
        status, body = name(99, "x")
        assert status == 400 and b"part 99 is out of range" in body
        status, body = name(1, "3 eyes")
        assert status == 400 and b"start it with a letter" in body
        assert post(f"{base}/api/name", b'{"part": "1", "name": "x"}', own)[0] == 400
        assert get(f"{base}/api/name")[0] == 405
        assert path.read_bytes() == before
        # a file rewritten by something else (a refit) since the page was served is not overwritten
        path.write_bytes(factor_file.read_bytes())
        status, body = name(1, "nose")
        assert status == 400 and b"changed on disk" in body and path.read_bytes() == factor_file.read_bytes()
    for base, port in serving(create_app(PandA.load(factor_file), celeba, seed=3)):  # no file: nothing to save into
        assert not json.loads(get(f"{base}/api/info")[2])["can_name"]
        assert post(f"{base}/api/name", b'{"part": 1, "name": "x"}',
                    {"Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"})[0] == 404


BROWSER_MISSING = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"


def _chromium():
    """Headless Chromium under selenium; skips (fails under CI) when it is not installed."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail(BROWSER_MISSING + ": CI must run the browser tests")
        pytest.skip(BROWSER_MISSING)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):  # a desktop's window: the headless default (780 x 437) scrolls the page
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_contents_link_opens_a_folded_section(tmp_path):
    """The demo page folds its per-part sections; a link from the contents must open the one it points to."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from panda.pages import Section, write_index

    page = write_index(tmp_path, "t", [Section("Open", "a"), Section("Part 7", "hidden text", folded=True)])
    driver = _chromium()
    try:
        driver.get(page.as_uri())
        details = driver.find_element(By.ID, "s2")
        assert details.get_attribute("open") is None  # folded on load
        driver.find_element(By.LINK_TEXT, "Part 7").click()
        # the page opens it on "hashchange", an event the browser fires after the click returns: wait for it
        WebDriverWait(driver, 5).until(lambda d: details.get_attribute("open") is not None)
        assert details.get_attribute("open") is not None
        assert driver.find_element(By.XPATH, "//*[text()='hidden text']").is_displayed()
    finally:
        driver.quit()


def test_explorer_names_a_part_in_a_real_browser(factor_file, celeba, tmp_path):
    """Type a name for the part shown, press Enter: the label changes everywhere and the file has the name."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from panda.model import PandA
    path = tmp_path / "f.safetensors"
    path.write_bytes(factor_file.read_bytes())
    for base, _ in serving(create_app(PandA.load(path), celeba, seed=3, factors=path)):
        driver = _chromium()
        try:
            driver.get(base + "/")
            by_id = lambda name: driver.find_element(By.ID, name)
            wait = WebDriverWait(driver, 30)
            assert by_id("naming").is_displayed() and by_id("part-name").get_attribute("value") == ""
            by_id("part-name").send_keys("chin", Keys.ENTER)
            wait.until(lambda d: by_id("part-v").text == "part 0 (chin)")
            assert "chin" in by_id("part-cap").text and "saved into" in by_id("name-note").text
            assert PandA.load(path).part_names_ == {0: "chin"}
            by_id("part-name").clear()
            by_id("part-name").send_keys("9 lives", Keys.ENTER)  # refused by the server: said, nothing saved
            wait.until(lambda d: "start it with a letter" in by_id("error").text)
            assert PandA.load(path).part_names_ == {0: "chin"} and by_id("part-v").text == "part 0 (chin)"
            driver.execute_script("const p = document.getElementById('part'); p.value = 1;"
                                  "p.dispatchEvent(new Event('input'));")
            wait.until(lambda d: by_id("part-v").text == "part 1")
            assert by_id("part-name").get_attribute("value") == ""  # another part: its own (empty) name is shown
        finally:
            driver.quit()


def test_explorer_shows_its_stack_as_the_panda_edit_command_that_redoes_it(factor_file, celeba, tmp_path):
    """The stack of part edits, as the page writes it on the command line, gives the image the page downloads."""
    import io
    import shlex

    import numpy as np
    from click.testing import CliRunner
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from panda.cli import main
    from panda.model import PandA
    command = shlex.join(["panda", "edit", str(factor_file)])
    for base, _ in serving(create_app(PandA.load(factor_file), celeba, seed=3, command=command)):
        driver = _chromium()
        try:
            driver.get(base + "/")
            by_id = lambda name: driver.find_element(By.ID, name)
            set_value = "const e = document.getElementById(arguments[0]); e.value = arguments[1]; e.dispatchEvent(new Event('input'));"
            for name, value in (("part", 1), ("appearance", 2), ("alpha", 1.5)):
                driver.execute_script(set_value, name, value)
            by_id("push").click()
            for name, value in (("part", 4), ("appearance", 0), ("alpha", -2)):
                driver.execute_script(set_value, name, value)
            wanted = command + " --seeds 3 --edit 1,2,1.5 --edit 4,0,-2"
            WebDriverWait(driver, 30).until(lambda d: by_id("cmd").text == wanted)
            by_id("refine").click()  # each sample's own parts
            WebDriverWait(driver, 30).until(lambda d: by_id("cmd").text == wanted + " --refine")
            by_id("refine").click()
            driver.find_element(By.CSS_SELECTOR, "input[name=target][value=paint]").click()
            WebDriverWait(driver, 30).until(lambda d: by_id("cmd").text == wanted)  # nothing painted: still the part
            by_id("push-transfer").click()  # a transfer in the stack: no single panda edit
            WebDriverWait(driver, 30).until(lambda d: by_id("cmd").text.startswith("(none"))
        finally:
            driver.quit()
        query = "seed=3&edits=1,2,1.5&part=4&appearance=0&alpha=-2&full=1"
        pages = {extra: get(f"{base}/api/edit.png?{query}{extra}") for extra in ("", "&refine=1")}
    for extra, flag in (("", []), ("&refine=1", ["--refine"])):
        status, _, body = pages[extra]
        assert status == 200
        out = tmp_path / f"e{len(flag)}"
        r = CliRunner().invoke(main, shlex.split(wanted)[1:] + flag + ["--out", str(out), "--save-images", "-q"])
        assert r.exit_code == 0, r.output
        (saved,) = (out / "images").glob("*.png")
        page = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=int)
        cli = np.asarray(Image.open(saved).convert("RGB"), dtype=int)
        assert page.shape == cli.shape and np.abs(page - cli).max() <= 1, extra


def test_explorer_in_a_real_browser(server, model, celeba):
    """Slider, click-to-pick, thumbnails, stacked edits, download and removal, in headless Chromium."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, _ = server
    strongest = model.part_maps().argmax(0)
    named = int(strongest[-1, -1])
    saved_names, model.part_names_ = model.part_names_, {named: "mouth"}  # a named part: its name is shown
    driver = _chromium()
    try:
        driver.get(base + "/")
        # the page redraws its thumbnails on every change: an element found just before a redraw goes stale
        wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))

        def loaded(img):
            return driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)

        def by_id(name):
            return driver.find_element(By.ID, name)

        edited, removed = by_id("edited"), by_id("removed")
        wait.until(lambda d: loaded(edited) and loaded(removed))  # the removal is drawn on first load, not broken
        assert by_id("seed").get_attribute("value") == "3"
        assert by_id("part-v").text.startswith("part 0")
        # the alpha slider, nudged from the keyboard as a person would
        src_before, shot_before = edited.get_attribute("src"), edited.screenshot_as_png
        slider = by_id("alpha")
        slider.click()
        for _ in range(15):
            slider.send_keys(Keys.ARROW_RIGHT)
        wait.until(lambda d: edited.get_attribute("src") != src_before and loaded(edited))
        time.sleep(0.3)
        assert "alpha=" in edited.get_attribute("src")
        assert edited.screenshot_as_png != shot_before
        # click on the picture: the part strongest under the pointer is chosen (here the bottom-right cell)
        original = by_id("original")
        # pointer offsets count from the centre of the element's visible part: have all of it in view
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", original)
        ActionChains(driver).move_to_element_with_offset(original, 120, 120).click().perform()
        wait.until(lambda d: by_id("part").get_attribute("value") == str(named))
        wait.until(lambda d: by_id("part-v").text == f"part {named} (mouth)")  # its name shown
        # thumbnails of the part's top appearances; clicking one picks it
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#thumbs img")) == 6
                   and all(loaded(t) for t in d.find_elements(By.CSS_SELECTOR, "#thumbs img")))
        time.sleep(0.3)  # past the page's redraw delay
        thumb = driver.find_elements(By.CSS_SELECTOR, "#thumbs img")[2]
        j = thumb.get_attribute("data-j")
        thumb.click()
        wait.until(lambda d: by_id("appearance").get_attribute("value") == j)
        # the localisation map follows the chosen appearance
        wait.until(lambda d: f"appearance={j}" in by_id("localize").get_attribute("src") and loaded(by_id("localize")))
        # stack the edit, then the edited picture carries it
        by_id("push").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#stack li")) == 1 and "edits=" in edited.get_attribute("src")
                   and "%2C" in edited.get_attribute("src").split("edits=")[1].split("&")[0] and loaded(edited))
        href = by_id("download").get_attribute("href")
        status, headers, body = get(href)
        assert status == 200 and "attachment" in headers["content-disposition"] and body[:4] == b"\x89PNG"
        wait.until(lambda d: loaded(removed))
        # the removal's fill: this image's own by default, the fit's global one on request; the caption names it
        assert "fill=auto" in removed.get_attribute("src")
        wait.until(lambda d: "this image's best fill" in by_id("removed-cap").text
                   and "(--background=" in by_id("removed-cap").text)
        Select(by_id("fill")).select_by_value("global")
        wait.until(lambda d: "fill=global" in removed.get_attribute("src") and loaded(removed))
        fill = f"{'+' if model.background_sign_ > 0 else '-'}{model.background_}"
        wait.until(lambda d: f"background appearance (--background={fill})" in by_id("removed-cap").text)
        assert by_id("error").text == ""
        # this sample's own parts: every picture asks for them, and a click picks the part strongest in them
        from panda.refinement import refine
        # a sample whose own parts pick another part than the global ones somewhere
        for sample in range(40):
            own = refine(model, celeba, [sample])[1].parts[0].argmax(1).reshape(8, 8)
            differ = (own != strongest).nonzero().tolist()
            if differ:
                break
        assert differ
        driver.execute_script(f"document.getElementById('seed').value = {sample}; update();")
        by_id("refine").click()
        wait.until(lambda d: all("refine=1" in by_id(i).get_attribute("src") and loaded(by_id(i))
                                 for i in ("edited", "partmap", "removed", "transferred")))
        assert "(this sample's own)" in by_id("part-cap").text
        for row, col in differ[:3]:
            # the global parts' pick first: only the sample's own parts change it to theirs
            driver.execute_script("document.getElementById('part').value = arguments[0]", int(strongest[row, col]))
            ActionChains(driver).move_to_element_with_offset(original, 32 * col - 112, 32 * row - 112).click().perform()
            wait.until(lambda d: by_id("part").get_attribute("value") == str(int(own[row, col])))
        by_id("refine").click()
        driver.execute_script("document.getElementById('seed').value = 3; update();")
        wait.until(lambda d: "refine=1" not in by_id("partmap").get_attribute("src") and "seed=3" in
                   by_id("partmap").get_attribute("src") and loaded(by_id("partmap")))
        # paint a region on the original: the edit, its thumbnails, the map and the removal follow it
        driver.find_element(By.CSS_SELECTOR, "input[name=target][value=paint]").click()
        canvas = by_id("paint")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        ActionChains(driver).move_to_element_with_offset(canvas, -60, -60).click_and_hold().move_by_offset(60, 0) \
            .move_by_offset(0, 30).release().perform()
        wait.until(lambda d: "mask=" in edited.get_attribute("src") and loaded(edited))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#thumbs img")) == 6
                   and all("mask=" in t.get_attribute("src") and loaded(t) for t in d.find_elements(By.CSS_SELECTOR, "#thumbs img")))
        wait.until(lambda d: "mask=" in by_id("partmap").get_attribute("src") and "mask=" in removed.get_attribute("src")
                   and loaded(removed))
        assert "your region" in by_id("edited-cap").text and by_id("error").text == ""
        assert by_id("mask-download").is_displayed() and "/api/mask.png?" in by_id("mask-download").get_attribute("href")
        shown = driver.execute_script("const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                                      "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;", canvas)
        assert shown >= 3 * 32 * 32  # at least three cells of the 8x8 grid drawn over the picture
        by_id("push").click()
        wait.until(lambda d: "edits=" in edited.get_attribute("src")
                   and "m" in edited.get_attribute("src").split("edits=")[1].split("&")[0] and loaded(edited))
        assert "a painted region" in by_id("stack").text
        # take the painted region from another sample: its picture and the transfer follow the number
        source, transferred = by_id("source"), by_id("transferred")
        wait.until(lambda d: "mask=" in transferred.get_attribute("src") and loaded(transferred))
        source.clear()
        source.send_keys("12")
        wait.until(lambda d: "source=12" in transferred.get_attribute("src") and loaded(transferred)
                   and "source=12" in by_id("source-img").get_attribute("src") and loaded(by_id("source-img")))
        assert "as sample 12 has it" in by_id("transfer-cap").text and by_id("error").text == ""
        status, headers, body = get(by_id("transfer-download").get_attribute("href"))
        assert status == 200 and "panda-transfer.png" in headers["content-disposition"] and body[:4] == b"\x89PNG"
        by_id("push-transfer").click()  # onto the stack: the edited picture carries it
        wait.until(lambda d: "from sample 12" in by_id("stack").text
                   and "t12%2Cm" in edited.get_attribute("src") and loaded(edited))
        # find the samples with the most of the appearance in the region; clicking one opens it
        by_id("find").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#found img")) == 8
                   and all(loaded(t) for t in d.find_elements(By.CSS_SELECTOR, "#found img")))
        assert "of 1000 samples with the most of appearance" in by_id("found-of").text
        first = driver.find_elements(By.CSS_SELECTOR, "#found img")[0]
        sample = first.get_attribute("data-sample")
        first.click()
        wait.until(lambda d: by_id("seed").get_attribute("value") == sample
                   and f"seed={sample}" in by_id("original").get_attribute("src") and loaded(by_id("original")))
        assert by_id("error").text == ""
    finally:
        driver.quit()
        model.part_names_ = saved_names


def test_remove_works_without_a_background_search(model, celeba):
    """A model fitted with --background-samples 0 has no global background: the explorer chooses a fill per request."""
    import copy
    import urllib.request

    bare = copy.deepcopy(model)
    bare.set_background(None)
    for base, _ in serving(create_app(bare, celeba)):
        with urllib.request.urlopen(f"{base}/api/remove.png?seed=3&part=1&alpha=1") as r:
            assert r.status == 200 and r.headers["content-type"] == "image/png"


def test_stacked_edits_name_parts_by_index():
    """The explorer's stack sends indices: a part's name (which the m and t prefixes could misread) is refused."""
    from panda.editing import Edit
    from panda.serve import parse_edits
    assert parse_edits("3,2,1.5;1,0,-1", (8, 8)) == [Edit(3, 2, 1.5), Edit(1, 0, -1.0)]
    with pytest.raises(PandaError, match="cannot read the stacked edit 'eyes,1,1'"):
        parse_edits("eyes,1,1", (8, 8))
