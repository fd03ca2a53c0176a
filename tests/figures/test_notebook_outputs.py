"""The committed notebook stays light and readable: within 3 MB, figures at reading size, no widget state, no
machine paths, and each figure of the paper named where it is reproduced."""
import base64
import json

import nbformat

from utils.figures.notebook import WIDGET_VIEW, clean, machine_paths
from utils.paths import REPO

NOTEBOOK = REPO / "pullbacks.ipynb"


def test_committed_notebook_is_within_3_mb_without_widgets_or_machine_paths():
    assert NOTEBOOK.stat().st_size <= 3_000_000
    notebook = nbformat.read(NOTEBOOK, 4)
    assert "widgets" not in notebook.metadata
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    assert machine_paths(notebook, markers=(str(REPO), "/work/", "/root/", "/home/")) == []


def test_committed_figures_are_shown_at_reading_size():
    """No output image larger than a reading-size JPEG (the files in media/ keep the full resolution)."""
    notebook = nbformat.read(NOTEBOOK, 4)
    sizes = [len(base64.b64decode(data)) for c in notebook.cells if c.cell_type == "code" for o in c.outputs
             for kind, data in o.get("data", {}).items() if kind.startswith("image/")]
    assert sizes and max(sizes) <= 250_000


def test_the_paper_figures_are_named_where_they_are_reproduced():
    notebook = nbformat.read(NOTEBOOK, 4)
    text = "\n".join(c.source for c in notebook.cells)
    for figure in ("Figure 1", "Figure 2", "Figures 3, 4"):
        assert f"| {figure} |" in text
    assert any("paper_figures(" in c.source and "weights_note(" in c.source for c in notebook.cells)


def test_clean_drops_widget_state_and_widget_outputs_and_keeps_the_rest():
    notebook = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", {WIDGET_VIEW: {"model_id": "a"}, "text/plain": "w"}),
                    nbformat.v4.new_output("stream", name="stdout", text="kept\n")]
    notebook.cells = [cell, nbformat.v4.new_markdown_cell("text")]
    assert clean(notebook) == 1
    assert "widgets" not in notebook.metadata and [o.output_type for o in cell.outputs] == ["stream"]
    cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=f"{REPO}/media/x.jpg\n"))
    assert machine_paths(notebook) == [0] and json.dumps(cell.outputs).count("kept") == 1
