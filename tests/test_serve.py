"""The browser explorer, driven in a real (headless) Chromium."""

import shutil
import socket
import threading
import time

import pytest

from panda import PandaError
from panda.serve import create_app, port_free

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
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
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
    import urllib.error
    import urllib.request

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


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_moving_the_alpha_slider_changes_the_displayed_edit(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = server
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(base + "/")
        wait = WebDriverWait(driver, 30)

        def loaded(img):
            return driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)

        edited = driver.find_element(By.ID, "edited")
        wait.until(lambda d: loaded(edited))
        assert driver.find_element(By.ID, "seed").get_attribute("value") == "3"
        src_before, shot_before = edited.get_attribute("src"), edited.screenshot_as_png
        slider = driver.find_element(By.ID, "alpha")
        slider.click()
        for _ in range(15):  # keyboard steps of 0.1, as a person would nudge it
            slider.send_keys(Keys.ARROW_RIGHT)
        wait.until(lambda d: edited.get_attribute("src") != src_before and loaded(edited))
        time.sleep(0.3)
        assert "alpha=" in edited.get_attribute("src")
        assert edited.screenshot_as_png != shot_before
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()


def test_remove_works_without_a_background_search(model, celeba):
    """A model fitted with --background-samples 0 has no global background: the explorer chooses a fill per request."""
    import copy
    import urllib.request

    bare = copy.deepcopy(model)
    bare.set_background(None)
    for base, _ in serving(create_app(bare, celeba)):
        with urllib.request.urlopen(f"{base}/api/remove.png?seed=3&part=1&alpha=1") as r:
            assert r.status == 200 and r.headers["content-type"] == "image/png"
