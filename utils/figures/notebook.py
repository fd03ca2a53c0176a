"""Keeping the executed notebook light (no widget state, no widget or progress-bar outputs, no machine paths) and
its metadata as JupyterLab writes it.

``python -m utils.figures.notebook pullbacks.ipynb`` cleans a notebook in place after ``nbconvert
--execute`` (``make figures`` runs it) and warns, naming the cells, if an output still shows a path of this
machine (the repository's absolute path or the home folder): such a notebook should not be committed
(tests/figures/test_notebook_outputs.py checks the committed one).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat

from ..paths import REPO

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
"""The kernel metadata JupyterLab writes when it opens the notebook (ipykernel's spec): committed as it is, so that
opening the notebook does not mark it modified (``nbconvert --execute`` writes ``"Python 3"``)."""


def clean(notebook: nbformat.NotebookNode) -> int:
    """Drop the widget state and every output that only shows a widget (a static copy of a live control or a
    progress bar); returns how many outputs were dropped."""
    notebook.metadata.pop("widgets", None)
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    dropped = 0
    for cell in notebook.cells:
        if cell.cell_type == "code":
            kept = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
            dropped += len(cell.outputs) - len(kept)
            cell.outputs = kept
    return dropped


def machine_paths(notebook: nbformat.NotebookNode, markers=(str(REPO), str(Path.home()) + "/")) -> list[int]:
    """Indices of the code cells whose outputs contain any of ``markers`` (absolute paths of this machine)."""
    return [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            and any(marker in json.dumps(cell.outputs) for marker in markers)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    args = parser.parse_args(argv)
    notebook = nbformat.read(args.notebook, 4)
    dropped = clean(notebook)
    nbformat.write(notebook, args.notebook)
    print(f"{args.notebook}: {args.notebook.stat().st_size:,} bytes; {dropped} widget outputs dropped")
    leaking = machine_paths(notebook)
    if leaking:
        print(f"warning: outputs of cells {leaking} show a path of this machine; do not commit them as they are",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
