"""`make app` in a real browser: Voilà serves app/explorer.ipynb, headless Chromium opens it and uses it.

Needs Playwright (requirements-test.txt) and a system Chromium (Debian: `apt-get install chromium`; Playwright's
own browser download is not used). Without them the tests are skipped, unless PULLBACK_REQUIRE_BROWSER=1 (set by
.ci/run), where they fail instead. The update time measured here is printed, not asserted
(benchmarks/app_update.py records it).
"""
import contextlib
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
from utils.figures.explore import array_png, default_images
from utils.figures.explore.server import NOTEBOOK, voila_command, voila_env
from utils.figures.plot import as_image
from utils.models.zoo import OFFLINE_DEFAULT

CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")
STARTUP_SECONDS = 180  # server start, kernel start, model load, the first update (each slow on a busy CPU)
CULL_SECONDS = 5  # the test server's idle time before a kernel without a page is shut down
STEPS = 5  # the explorer's default k
METHODS = ("pullback", "gradient")

# Tag the status line: the HTML widget whose text matches ``re`` (``^p\(<target>\) ... after <k> steps`` once an
# update is done).
TAG_STATUS = """re => { for (const el of document.querySelectorAll('.widget-html-content')) {
    if (new RegExp(re).test(el.textContent)) { el.dataset.bench = 'status'; return true; } } return false; }"""
# Change a <select> (found by its label) and resolve with the milliseconds until the status matches ``re``
# (a MutationObserver: no polling delay); the status is blanked first so that an unchanged line cannot match.
CHANGE_AND_TIME = """([label, index, re]) => new Promise(resolve => {
    const status = document.querySelector('[data-bench=status]');
    const select = [...document.querySelectorAll('.widget-dropdown')]
        .find(d => d.querySelector('label') && d.querySelector('label').textContent.trim() === label)
        .querySelector('select');
    status.textContent = '';
    const pattern = new RegExp(re);
    const t0 = performance.now();
    const observer = new MutationObserver(() => {
        if (pattern.test(status.textContent)) { observer.disconnect(); resolve(performance.now() - t0); } });
    observer.observe(status, {childList: true, subtree: true, characterData: true});
    select.selectedIndex = index;
    select.dispatchEvent(new Event('change', {bubbles: true}));
})"""


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


def kernel_count(server: subprocess.Popen) -> int:
    """The kernels the server runs: its child processes that are IPython kernels."""
    import psutil

    def is_kernel(process):
        try:
            return any("ipykernel" in part for part in process.cmdline())
        except psutil.Error:  # exited meanwhile
            return False
    return sum(map(is_kernel, psutil.Process(server.pid).children(recursive=True)))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """``(url, server)``: `make app`'s server on a free localhost port (no downloads, idle kernels culled fast)."""
    try:
        import voila  # noqa: F401
    except ImportError:
        missing("voila is not installed: `make app` (or pip install -r requirements.txt) installs it")
    port = free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    env = server_env()
    with log.open("w") as out:
        server = subprocess.Popen(voila_command(port, cull_idle=CULL_SECONDS, cull_interval=1), cwd=NOTEBOOK.parent,
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_listening(port, server, log)
        yield f"http://127.0.0.1:{port}/", server
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


def open_page(browser, url: str, requests: list):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(STARTUP_SECONDS * 1000)
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    return page


def upload(page, path: Path) -> None:
    """Choose ``path`` with the upload button (ipywidgets creates its file input only for the click)."""
    with page.expect_file_chooser() as chooser:
        page.locator(".widget-upload").click()
    chooser.value.set_files(str(path))


def shown_png(page, selector: str) -> np.ndarray:
    """The pixels of the PNG an <img> (a data: or blob: URL) shows, (H, W, 3) uint8."""
    data = page.evaluate("async src => Array.from(new Uint8Array(await (await fetch(src)).arrayBuffer()))",
                         page.locator(selector).get_attribute("src"))
    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


def png_pixels(rgb) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(array_png(rgb))).convert("RGB"))


def plain(text: str) -> str:
    return text.replace("\xa0", " ")  # ipywidgets shows option labels with non-breaking spaces


def finished(target_name: str | None = None) -> re.Pattern:
    """The status line once an update for ``target_name`` (any target if None) has finished."""
    name = ".+" if target_name is None else re.escape(target_name)
    return re.compile(rf"^p\({name}\): pullback .* gradient .* after {STEPS} steps")


def selected(page, label: str) -> str:
    return plain(page.locator(f".widget-dropdown:has(label:text-is('{label}')) select option:checked").inner_text())


# The library's panels, computed as the page's kernel computes them: a fresh process with the server's
# environment, each method with the page's intra-op thread count (another count sums the floats in another order,
# and a vanilla gradient's ascent path, whose hard gates flip, can amplify that past the PNG's rounding within a
# few steps; this process's count may also have been changed by earlier tests).
LIBRARY_PANELS = """
import sys
import numpy as np
import torch
from utils import load_model
from utils.figures.explore import array_png, default_images, explore_path, panel_arrays
from utils.figures.explore.widget import method_threads
model_name, image_name, target, steps, out = sys.argv[1:]
model, image = load_model(model_name, "cpu"), default_images()[0][image_name]
torch.set_num_threads(method_threads())
arrays = {}
for method in ("pullback", "gradient"):
    result = explore_path(model, image, int(target), method, steps=int(steps))
    panels = panel_arrays(result, int(steps))
    for column in ("perturbation", "perturbed"):
        arrays[f"{method}_{column}"] = np.frombuffer(array_png(panels[column + "_rgb"]), np.uint8)
arrays["probabilities"] = result.first.numpy()
np.savez(out, **arrays)
"""


def server_env() -> dict:
    """The environment the test server (and so its kernels) runs in: CPU, no downloads."""
    return voila_env(dict(os.environ, PULLBACK_DEVICE="cpu", PULLBACK_DOWNLOAD="0"))


def library_panels(tmp_path: Path, model_name: str, image_name: str, target: int) -> dict:
    """``{method_column: PNG pixels}`` and ``probabilities`` at the image, as a fresh kernel computes them."""
    out = tmp_path / f"library-{target}.npz"
    subprocess.run([sys.executable, "-c", LIBRARY_PANELS, model_name, image_name, str(target), str(STEPS), str(out)],
                   env=server_env(), check=True, timeout=STARTUP_SECONDS)
    with np.load(out) as saved:
        return {key: saved[key] if key == "probabilities" else
                np.asarray(Image.open(io.BytesIO(saved[key].tobytes())).convert("RGB")) for key in saved.files}


def assert_panels_are_the_library(page, expected: dict) -> None:
    """Each method's perturbation and perturbed image on the page are the library's (to the PNG's rounding)."""
    for method in METHODS:
        for column in ("perturbation", "perturbed"):
            shown = shown_png(page, f"img[data-panel={method}_{column}]")
            assert shown.shape == expected[f"{method}_{column}"].shape
            assert np.abs(shown.astype(int) - expected[f"{method}_{column}"].astype(int)).max() <= 1, (method, column)


@contextlib.contextmanager
def opened(browser, url: str, requests: list | None = None):
    """A page, closed however the test ends (an open page keeps its kernel alive for the later tests)."""
    page = open_page(browser, url, [] if requests is None else requests)
    try:
        yield page
    finally:
        page.close()


def test_the_page_shows_pullback_and_gradient_side_by_side(browser, app, tmp_path):
    url, _ = app
    requests = []
    with opened(browser, url, requests) as page:
        the_page_shows_pullback_and_gradient(page, url, requests, tmp_path)


def the_page_shows_pullback_and_gradient(page, url: str, requests: list, tmp_path: Path) -> None:
    page.locator(".widget-html", has_text=finished()).wait_for()
    assert page.title() == "Excitation pullbacks explorer"
    text = page.inner_text("body")
    code = [line for cell in json.loads(NOTEBOOK.read_text())["cells"] if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if line.strip()]
    assert code and not any(line in text for line in code)  # the page shows the widget, not the code
    assert page.locator(".jp-MenuBar, .jp-FileBrowser, .jp-Launcher, .jp-Toolbar, .jp-CodeMirrorEditor, "
                        ".lm-TabBar").count() == 0
    for hint in ("T:", "steps k:", "alpha = 20", "eps = 100"):
        assert hint in text

    # the offline default model, and only models that load without a download
    assert selected(page, "model") == OFFLINE_DEFAULT
    class_names = load_model(OFFLINE_DEFAULT, "cpu").class_names
    image_name = selected(page, "image")

    # both methods side by side: field (with a colour bar), perturbation and perturbed image, all with alt text
    for method in METHODS:
        for column in ("field", "perturbation", "perturbed"):
            img = page.locator(f"img[data-panel={method}_{column}]")
            img.first.wait_for()  # (drawn before the status line, which may render first)
            assert img.count() == 1 and len(img.get_attribute("alt")) > 20
    assert page.locator("[title='channel sum of the field']").count() == 2
    assert page.locator("img[alt^='the probability of']").count() == 1

    # the top-k line is the model's own top class and probability at the image
    target = page.locator(".widget-dropdown:has(label:text-is('target')) select")
    new_target = (target.evaluate("select => select.selectedIndex") + 1) % target.locator("option").count()
    expected = library_panels(tmp_path, OFFLINE_DEFAULT, image_name, new_target)
    top = int(expected["probabilities"].argmax())
    assert (f"prediction: {class_names[top]} (p = {expected['probabilities'][top]:.2f})"
            in plain(page.inner_text("body")))

    # a target change redraws both methods, as the library computes them; the time is reported, not asserted
    new_name = plain(target.locator("option").nth(new_target).inner_text())
    page.wait_for_function(TAG_STATUS, arg=rf"^p\(.+\).* after {STEPS} steps")
    done = rf"^p\({re.escape(new_name)}\).* after {STEPS} steps"
    milliseconds = page.evaluate(CHANGE_AND_TIME, ["target", new_target, done])
    print(f"\nupdate after a target change, measured in the browser: {milliseconds / 1000:.2f} s "
          f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    assert_panels_are_the_library(page, expected)

    # a thumbnail shows its image
    other = next(name for name in default_images()[0] if name != image_name)
    page.locator(f"button.pb-thumb:text-is('{other}')").click()
    page.locator(f"img[alt='the image: {other}']").wait_for()
    page.locator(".widget-html", has_text=finished(new_name)).wait_for()
    assert selected(page, "image") == other
    assert np.array_equal(shown_png(page, f"img[alt='the image: {other}']"),
                          png_pixels(as_image(default_images()[0][other])))

    # the download link holds a PNG of the panels
    href = page.locator("a[download]").get_attribute("href")
    assert href.startswith("data:image/png;base64,")

    # nothing left 127.0.0.1 (no CDN: the page must work offline)
    outside = [u for u in requests if not u.startswith((url, "data:", "blob:", "about:"))]
    assert requests and not outside, outside


def test_uploads_are_confirmed_and_bad_files_explained(browser, app, tmp_path):
    url, _ = app
    with opened(browser, url) as page:
        uploads_are_confirmed_and_bad_files_explained(page, tmp_path)


def uploads_are_confirmed_and_bad_files_explained(page, tmp_path: Path) -> None:
    page.locator(".widget-html", has_text=finished()).wait_for()
    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 300, 3), dtype=np.uint8)).save(wide)
    upload(page, wide)
    page.get_by_text("added wide.png").wait_for()
    assert "centre square" in page.inner_text("body")
    page.locator("img[alt='the image: upload 1: wide.png']").wait_for()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    upload(page, broken)
    page.get_by_text("broken.png is not an image file").wait_for()
    text = page.inner_text("body")
    assert "<_io" not in text and "BytesIO" not in text and "Error:" not in text


def test_closed_and_reloaded_pages_leave_no_kernels(browser, app):
    url, server = app
    deadline = time.monotonic() + STARTUP_SECONDS
    while kernel_count(server) and time.monotonic() < deadline:  # the other tests' pages, closed already
        time.sleep(1)
    assert kernel_count(server) == 0
    with opened(browser, url) as first, opened(browser, url) as second:
        for page in (first, second):
            page.locator(".widget-html", has_text=finished()).wait_for()
        assert kernel_count(server) == 2
        first.reload()  # a new kernel for the reloaded page; the old one has lost its page
        first.locator(".widget-html", has_text=finished()).wait_for()
        time.sleep(3 * CULL_SECONDS)
        assert kernel_count(server) == 2  # the reloaded page's old kernel is gone; open pages keep theirs
    deadline = time.monotonic() + 60 + 3 * CULL_SECONDS
    while kernel_count(server) and time.monotonic() < deadline:
        time.sleep(1)
    assert kernel_count(server) == 0
