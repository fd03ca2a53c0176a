"""The notebook's figure cells with PULLBACK_MEDIA outside the clone (issue 24): every figure is written there
and every printed path names it as given, where ``path.relative_to(REPO)`` used to raise.

The cells run in this process, in notebook order, on the bundled model with one ascent step and three of
the five images at 64 px, so the check costs seconds; `make test` runs the whole notebook the same way under nbval.
"""
import contextlib
import io

import nbformat
from torch.nn.functional import interpolate
from IPython.core.inputtransformer2 import TransformerManager

from utils.paths import REPO

# The cells to run, by how their source begins: set-up, then every cell that writes or shows a figure.
CELLS = ('%config InlineBackend.figure_formats', "models, model_reason = choose_models(config)",
         "from utils.figures.grids import ascent_figures", "shown = 5 if 5 in config.steps",
         "from utils.figures.grids import paper_figures", "cosines = {}",
         "from utils.figures.grids import temperature_sweep", "from utils.figures.heatmaps import heatmap_gallery",
         "from utils.experiments.stability import findings, load_study",
         "from utils.experiments.faithfulness import compare, format_summary, load_results",
         "for name, result in results.items():\n    fig = plot_faithfulness",
         "from IPython.display import Markdown, display",
         "from utils.experiments.alignment.tables import AUTHORS_FOCUS")


class Shell:
    """Enough of IPython's shell for the line magics the cells use (figure format settings)."""

    def run_line_magic(self, name, line):
        assert name == "config", f"unexpected magic %{name} {line}"


def figure_cells(notebook) -> list[str]:
    code = [c.source for c in nbformat.read(notebook, 4).cells if c.cell_type == "code"]
    chosen = []
    for start in CELLS:
        found = [source for source in code if source.startswith(start)]
        if found:
            chosen += [s for s in found if s not in chosen]
    return chosen


def test_figure_cells_write_and_name_figures_outside_the_clone(tmp_path, monkeypatch, one_thread):
    media = tmp_path / "figures"  # tmp_path lies outside the clone
    assert not media.resolve().is_relative_to(REPO)
    for name, value in {"PULLBACK_MEDIA": str(media), "PULLBACK_MODELS": "bundled", "PULLBACK_STEPS": "1",
                        "PULLBACK_DEVICE": "cpu", "PULLBACK_DOWNLOAD": "0", "TQDM_DISABLE": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IMAGENETTE_ROOT", raising=False)
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    monkeypatch.chdir(REPO)
    cells = figure_cells(REPO / "pullbacks.ipynb")
    assert sum("show_figure(" in c or "config.media" in c for c in cells) >= 6, "the figure cells were not found"
    namespace, printed = {"get_ipython": Shell, "__name__": "__notebook__"}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        for source in cells:
            exec(compile(TransformerManager().transform_cell(source), "pullbacks.ipynb", "exec"), namespace)
            if "images" in namespace and len(namespace["images"]) == 5:  # three small rows: the same cells, cheaper
                namespace["images"] = interpolate(namespace["images"][:3], size=(64, 64), mode="area")
                namespace["labels"] = namespace["labels"][:3]
    out = printed.getvalue()
    written = sorted(p for p in media.rglob("*") if p.is_file())
    assert {p.relative_to(media).parts[0] for p in written} >= {"pullback_diff", "vanilla_grad_diff", "pullback",
                                                                "temperature_sweep", "heatmaps", "stability",
                                                                "faithfulness", "alignment"}
    shown = [line for line in out.splitlines() if line.startswith(str(media))]
    assert shown and all((media / line[len(str(media)) + 1:]).is_file() for line in shown)  # named as given
    assert str(REPO) not in out
