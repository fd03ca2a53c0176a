"""Time one update of the explorer page (``make app``), measured in a real browser.

    python benchmarks/app_update.py [--repo PATH] [--model resnet50_imagenette] [--repeats 5] [--steps 5]
                                    [--screenshot media/app.png]

Serves ``app/explorer.ipynb`` of the checkout ``--repo`` (default: this one) with Voilà on a free localhost
port, opens it in headless Chromium (Debian's; Playwright downloads none), switches to ``--model`` if the page
starts on another, then changes the target class ``--repeats`` times. Each time is measured inside the page,
from the change event on the target list to the status line saying the update for the new target is done
(the status is written after the last panel), and the median is printed, with the load average it ran under.
Works on the page before and after it showed pullback and gradient side by side (both write
``p(<target>) ... after <k> steps`` when done). ``--screenshot`` saves the page as it first opens (the README's
``media/app.png``).
"""
from __future__ import annotations

import argparse
import json
import re
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.figures.test_app import CHANGE_AND_TIME, TAG_STATUS, chromium_executable  # noqa: E402

STARTUP_SECONDS = 300

OPTIONS = """label => [...document.querySelectorAll('.widget-dropdown')]
    .find(d => d.querySelector('label') && d.querySelector('label').textContent.trim() === label)
    .querySelector('select').options"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(repo: Path, port: int, log) -> subprocess.Popen:
    """Voilà on ``repo``'s explorer: through its launcher when it has one, else as ``make app`` once ran it."""
    env = dict(os.environ, PYTHONPATH=str(repo), PULLBACK_DEVICE="cpu")
    if (repo / "utils" / "figures" / "explore" / "server.py").is_file():
        command = [sys.executable, "-m", "utils.figures.explore.server", f"--port={port}"]
    else:
        command = [sys.executable, "-m", "voila", str(repo / "app" / "explorer.ipynb"), "--no-browser",
                   f"--port={port}", "--Voila.ip=127.0.0.1"]
    server = subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit(f"voila did not start within {STARTUP_SECONDS} s")


def option_labels(page, label: str) -> list[str]:
    return page.evaluate(f"label => [...({OPTIONS})(label)].map(o => o.textContent.replace(/\\u00a0/g, ' '))",
                         label)


def measure(page, model: str, repeats: int, steps: int, screenshot: Path | None = None) -> list[float]:
    """Milliseconds of ``repeats`` target changes on ``model`` (the page already loaded)."""
    done = rf"after {steps} steps"
    page.wait_for_function(TAG_STATUS, arg=rf"^p\(.+\).* {done}", timeout=STARTUP_SECONDS * 1000)
    if screenshot is not None:
        page.mouse.move(0, 0)
        page.screenshot(path=str(screenshot), full_page=True)
    models = option_labels(page, "model")
    current = page.evaluate(f"label => ({OPTIONS})(label).selectedIndex", "model")
    if models[current] != model:
        page.evaluate(CHANGE_AND_TIME, ["model", models.index(model), rf"^p\(.+\).* {done}"])
    targets = option_labels(page, "target")
    index = page.evaluate(f"label => ({OPTIONS})(label).selectedIndex", "target")
    times = []
    for _ in range(repeats):
        index = (index + 1) % len(targets)
        name = targets[index].split(" (#")[0]
        pattern = rf"^p\({re.escape(name)}\).* {done}"
        times.append(page.evaluate(CHANGE_AND_TIME, ["target", index, pattern]))
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--model", default="resnet50_imagenette")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="the page's k (its default; not changed here)")
    parser.add_argument("--screenshot", type=Path, help="save the page as it first opens to this PNG")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    port = free_port()
    with tempfile.NamedTemporaryFile("w+", prefix="app-update-", suffix=".log", delete=False) as log:
        print(f"server log: {log.name}", file=sys.stderr)
        server = serve(args.repo.resolve(), port, log)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
                page = browser.new_page(viewport={"width": 1320, "height": 1130})  # the whole page, for --screenshot
                page.goto(f"http://127.0.0.1:{port}/", timeout=STARTUP_SECONDS * 1000)
                load = os.getloadavg()[0]
                times = measure(page, args.model, args.repeats, args.steps, args.screenshot)
                load = (load + os.getloadavg()[0]) / 2
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = {"repo": str(args.repo), "model": args.model, "steps": args.steps, "seconds": [t / 1000 for t in times],
              "median_s": statistics.median(times) / 1000, "load_1min": round(load, 2), "cpus": os.cpu_count()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
