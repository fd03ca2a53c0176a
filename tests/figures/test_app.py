"""`make app` in a real browser: Voilà serves app/explorer.ipynb, headless Chromium opens it, the target changes.

Needs Playwright (requirements-test.txt) and a system Chromium (Debian: `apt-get install chromium`; Playwright's
own browser download is not used). Without them the test is skipped, unless PULLBACK_REQUIRE_BROWSER=1 (set by
.ci/run), where it fails instead.
"""
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils import load_model
from utils.figures.explore import array_png, default_images, explore_path, panel_arrays
from utils.paths import REPO

NOTEBOOK = REPO / "app" / "explorer.ipynb"
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")
STARTUP_SECONDS = 120  # server start, kernel start, the notebook's first update (about 10 s each on a busy CPU)
STEPS = 5  # the explorer's default k


def missing(reason: str):
    if os.environ.get("PULLBACK_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (PULLBACK_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def chromium_executable() -> str | None:
    """$CHROMIUM, else Debian's binary behind its /usr/bin/chromium wrapper, else one on PATH."""
    for candidate in filter(None, (os.environ.get("CHROMIUM"), *CHROMIUM_PATHS)):
        found = candidate if Path(candidate).is_file() else shutil.which(candidate)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port: int, server: subprocess.Popen, log: Path) -> None:
    """Until the server accepts connections (a GET of the page would start a kernel of its own)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"voila exited with {server.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"voila did not listen on port {port} within {STARTUP_SECONDS} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The URL of Voilà serving the app on a free localhost port, with the bundled model (no network)."""
    try:
        import voila  # noqa: F401
    except ImportError:
        missing("voila is not installed: `make app` (or pip install -r requirements.txt) installs it")
    port = free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
               PULLBACK_DEVICE="cpu")
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={port}",
                                   "--Voila.ip=127.0.0.1"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_listening(port, server, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed: pip install -r requirements-test.txt")
    executable = chromium_executable()
    if executable is None:
        missing("no Chromium found (Debian: apt-get install chromium; or set CHROMIUM to its executable)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def shown_png(page, panel) -> np.ndarray:
    """The pixels of the PNG an explorer panel (an <img> with a blob: URL) shows, (H, W, 3) uint8."""
    data = page.evaluate("async src => Array.from(new Uint8Array(await (await fetch(src)).arrayBuffer()))",
                         panel.get_attribute("src"))
    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


def expected_perturbation(model, image_name: str, target: int) -> np.ndarray:
    result = explore_path(model, default_images()[0][image_name], target, steps=STEPS)
    return np.asarray(Image.open(io.BytesIO(array_png(panel_arrays(result, STEPS)["perturbation_rgb"]))))


def plain(text: str) -> str:
    return text.replace("\xa0", " ")  # ipywidgets shows option labels with non-breaking spaces


def finished(target_name: str | None = None) -> re.Pattern:
    """The status line once an update for ``target_name`` (any target if None) has finished."""
    name = ".+" if target_name is None else re.escape(target_name)
    return re.compile(rf"^p\({name}\) .* after {STEPS} steps")


def test_changing_the_target_redraws_the_perturbation(browser, app_url):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(STARTUP_SECONDS * 1000)
    page.goto(app_url)
    page.locator(".widget-html", has_text=finished()).wait_for()
    text = page.inner_text("body")
    code = [line for cell in json.loads(NOTEBOOK.read_text())["cells"] if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if line.strip()]
    assert code and not any(line in text for line in code)  # the page shows the widget, not the code
    # and none of JupyterLab's chrome: menus, file browser, launcher, toolbars, code editors, tabs
    assert page.locator(".jp-MenuBar, .jp-FileBrowser, .jp-Launcher, .jp-Toolbar, .jp-CodeMirrorEditor, "
                        ".lm-TabBar").count() == 0

    target = page.locator(".widget-dropdown:has(label:text-is('target')) select")
    image_name = plain(page.locator(".widget-dropdown:has(label:text-is('image')) select option:checked").inner_text())
    panels = {name: page.locator(f".widget-vbox:has(> .widget-html b:text-matches('{title}')) > img")
              for name, title in (("image", "^image$"), ("perturbation", "^perturbation after"))}
    before = {name: shown_png(page, panel) for name, panel in panels.items()}
    old_target = target.evaluate("select => select.selectedIndex")  # the class index: options in class order
    new_target = (old_target + 1) % target.locator("option").count()
    new_name = plain(target.locator("option").nth(new_target).inner_text())

    target.select_option(index=new_target)
    page.locator(".widget-html", has_text=finished(new_name)).wait_for()
    after = {name: shown_png(page, panel) for name, panel in panels.items()}

    model = load_model("bundled", "cpu")
    assert np.array_equal(after["image"], before["image"])
    assert not np.array_equal(after["perturbation"], before["perturbation"])
    # what the page shows is the library's perturbation toward each target (to rounding of the PNG's bytes)
    for shown, target_index in ((before["perturbation"], old_target), (after["perturbation"], new_target)):
        expected = expected_perturbation(model, image_name, target_index)
        assert shown.shape == expected.shape
        assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 1
    page.close()
