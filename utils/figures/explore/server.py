"""``make app``: Voilà serving ``app/explorer.ipynb`` on localhost.

Three settings beyond Voilà's defaults:
- idle kernels are culled: a tab that is closed or reloaded leaves its kernel (1-1.5 GB with the models)
  without a connection, and the server shuts it down after :data:`CULL_IDLE_SECONDS` of idleness (a kernel
  with an open tab is kept however long it idles);
- the page loads nothing from outside localhost: the template ``app/jupyter/voila/templates/explorer`` is
  Voilà's ``lab`` template without its Font Awesome stylesheets from a CDN (the icons come with Voilà's own
  bundle);
- the repository goes on ``PYTHONPATH``, since Voilà starts the kernel in ``app/``.

    python -m utils.figures.explore.server [--port 8866] [--cull-idle 60] [--cull-interval 15]
"""
from __future__ import annotations

import argparse
import os
import sys

from ...paths import REPO

NOTEBOOK = REPO / "app" / "explorer.ipynb"
TEMPLATE_ROOT = REPO / "app" / "jupyter"  # holds voila/templates/explorer
TEMPLATE = "explorer"
CULL_IDLE_SECONDS = 60
CULL_INTERVAL_SECONDS = 15


def voila_command(port: int, cull_idle: int = CULL_IDLE_SECONDS, cull_interval: int = CULL_INTERVAL_SECONDS,
                  python: str = sys.executable) -> list[str]:
    """The command line that serves the explorer on ``127.0.0.1:port`` (run it with :func:`voila_env`)."""
    return [python, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            f"--template={TEMPLATE}",
            f"--MappingKernelManager.cull_idle_timeout={int(cull_idle)}",
            f"--MappingKernelManager.cull_interval={int(cull_interval)}",
            "--MappingKernelManager.cull_connected=False"]


def voila_env(env: dict | None = None) -> dict:
    """``env`` (default: this process's) with the repository on ``PYTHONPATH`` and the template on ``JUPYTER_PATH``."""
    env = dict(os.environ if env is None else env)
    for name, path in (("PYTHONPATH", REPO), ("JUPYTER_PATH", TEMPLATE_ROOT)):
        env[name] = os.pathsep.join(filter(None, (str(path), env.get(name))))
    return env


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8866)
    parser.add_argument("--cull-idle", type=int, default=CULL_IDLE_SECONDS,
                        help="seconds an idle kernel without an open page lives on (default %(default)s)")
    parser.add_argument("--cull-interval", type=int, default=CULL_INTERVAL_SECONDS,
                        help="seconds between checks for such kernels (default %(default)s)")
    args = parser.parse_args(argv)
    command = voila_command(args.port, args.cull_idle, args.cull_interval)
    os.execvpe(command[0], command, voila_env())


if __name__ == "__main__":
    main()
