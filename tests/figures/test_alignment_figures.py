"""The alignment figures draw what the summary rows say: means, CI extents, the reference lines and markers."""
import csv
from itertools import combinations, permutations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from utils.figures.alignment import (CHANCE, FOCUS_LABEL, agreement_figure, alignment_figures, focus_figure,
                                     over_training_figure, pg_figure, transfer_figure)

MODELS = ("bundled", "bundled_seed1", "bundled_plain")
TEMPERATURES = ("0.1", "0.3", "1.0", "2.0")
FOCUS = ("pullback", "pullback_x_input", "gradient", "gradient_x_input", "integrated_gradients", "gradcam")
EPOCHS = ("0", "1", "2", "4", "8", "16")
COLUMNS = ("measure", "model", "other", "method", "temperature", "mean", "ci_low", "ci_high", "n")


class Rows:
    """Summary rows as read from CSV (all strings), each with its own mean and an asymmetric CI."""

    def __init__(self):
        self.rows, self.rng = [], np.random.default_rng(0)

    def add(self, measure, model, method, temperature="", other="", n=40, **extra):
        mean = round(float(self.rng.uniform(0.05, 0.9)), 4)
        low, high = round(mean - float(self.rng.uniform(0.01, 0.05)), 4), round(mean + float(self.rng.uniform(0.06, 0.1)), 4)
        self.rows.append({"measure": measure, "model": model, "other": other, "method": method,
                          "temperature": temperature, "mean": str(mean), "ci_low": str(low), "ci_high": str(high),
                          "n": str(n), **extra})


@pytest.fixture(scope="module")
def summary():
    r = Rows()
    for measure in ("pg_field", "pg_ascent"):
        for model in MODELS:
            for t in reversed(TEMPERATURES):  # out of order: the figure sorts by temperature
                r.add(measure, model, "pullback_vs_gradient", t)
    for measure in ("agree_field", "agree_ascent"):
        for a, b in combinations(MODELS, 2):
            r.add(measure, a, "pullback", "0.3", b), r.add(measure, a, "gradient", "", b)
    for measure in ("transfer_logp", "transfer_became"):
        for a, b in permutations(MODELS, 2):
            r.add(measure, a, "pullback", "0.3", b, n=33), r.add(measure, a, "gradient", "", b, n=35)
    for model in MODELS:
        for method in FOCUS:
            r.add("focus", model, method, "0.3" if method.startswith("pullback") else "", n=200)
    return r.rows


@pytest.fixture(scope="module")
def curves():
    r = Rows()
    for e in ("8", "0", "16", "2", "1", "4"):  # out of order, and "16" < "2" as strings: sorted as numbers
        r.add("pg_field", "run0", "pullback_vs_gradient", "0.3", epoch=e)
        for method in ("pullback", "gradient"):
            r.add("agree_ascent", "run0", method, "0.3" if method == "pullback" else "", "run1", epoch=e)
    return r.rows


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def row(rows, **where):
    (found,) = [r for r in rows if all(str(r[k]) == v for k, v in where.items())]
    return found


def bars(ax) -> dict:
    """``{legend label: [(height, low end, high end) of each bar, left to right]}`` of a bar chart."""
    out = {}
    for container in ax.containers:
        if not hasattr(container, "patches"):
            continue
        segments = container.errorbar.lines[2][0].get_segments()
        out[container.get_label()] = [(p.get_height(), s[:, 1].min(), s[:, 1].max())
                                      for p, s in zip(container.patches, segments)]
    return out


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=1e-9)


def test_pg_lines_follow_the_means_and_cis_per_model(summary):
    fig = pg_figure(summary)
    for ax, measure in zip(fig.axes, ("pg_field", "pg_ascent")):
        assert ax.get_xscale() == "log" and ax.get_ylabel() in ("cosine", "")
        lines = {c.get_label(): c for c in ax.containers}
        assert list(lines) == list(MODELS)  # one line per model
        for model, container in lines.items():
            expected = [row(summary, measure=measure, model=model, temperature=t) for t in TEMPERATURES]
            x, y = container.lines[0].get_data()
            close(x, [float(t) for t in TEMPERATURES])
            close(y, [float(r["mean"]) for r in expected])
            segments = container.lines[2][0].get_segments()
            close([s[:, 1].min() for s in segments], [float(r["ci_low"]) for r in expected])
            close([s[:, 1].max() for s in segments], [float(r["ci_high"]) for r in expected])
        (identical,) = [line for line in ax.get_lines() if line.get_label() == "identical"]
        assert identical.get_linestyle() == ":" and set(identical.get_ydata()) == {1}
        assert "n = 40 images" in ax.get_title()
    assert fig.axes[0].get_ylabel() == "cosine"


def test_agreement_bars_per_pair_and_method(summary):
    fig = agreement_figure(summary)
    pairs = list(combinations(MODELS, 2))
    for ax, measure in zip(fig.axes, ("agree_field", "agree_ascent")):
        drawn = bars(ax)
        assert list(drawn) == ["pullback (T = 0.3)", "gradient"]
        for label, method in zip(drawn, ("pullback", "gradient")):
            expected = [row(summary, measure=measure, model=a, other=b, method=method) for a, b in pairs]
            close(drawn[label], [[float(r[k]) for k in ("mean", "ci_low", "ci_high")] for r in expected])
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"{a}\nvs {b}" for a, b in pairs]
        assert "n = 40 images" in ax.get_title()
    assert fig.axes[0].get_ylabel() == "cosine"


def test_transfer_bars_per_ordered_pair_with_units(summary):
    fig = transfer_figure(summary)
    pairs = list(permutations(MODELS, 2))
    for ax, measure, unit in zip(fig.axes, ("transfer_logp", "transfer_became"), ("log p rise (nats)", "share of images")):
        assert ax.get_ylabel() == unit
        drawn = bars(ax)
        for label, method in zip(drawn, ("pullback", "gradient")):
            expected = [row(summary, measure=measure, model=a, other=b, method=method) for a, b in pairs]
            close(drawn[label], [[float(r[k]) for k in ("mean", "ci_low", "ci_high")] for r in expected])
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"{a}\n→ {b}" for a, b in pairs]
        assert "n = 33–35 images" in ax.get_title()  # the n differ between methods: the range is stated


def test_focus_bars_chance_line_and_reference_markers(summary):
    reference = {"pullback": 0.81, "Grad-CAM": 0.62}  # a method name and a method label both work
    fig = focus_figure(summary, reference, "authors' ResNet50 (reported)")
    (ax,) = fig.axes
    assert ax.get_ylabel() == FOCUS_LABEL and "n = 200" in ax.get_title()
    drawn = bars(ax)
    assert list(drawn) == list(MODELS)
    for model in MODELS:
        expected = [row(summary, measure="focus", model=model, method=m) for m in FOCUS]
        close(drawn[model], [[float(r[k]) for k in ("mean", "ci_low", "ci_high")] for r in expected])
    (chance,) = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert chance.get_linestyle() == "--" and set(chance.get_ydata()) == {CHANCE} == {0.25}
    (marks,) = [line for line in ax.get_lines() if line.get_label() == "authors' ResNet50 (reported)"]
    assert marks.get_marker() == "*"
    close(marks.get_ydata(), [0.81, 0.62])
    # each star sits inside its method's group, to the right of every model's bar
    x = marks.get_xdata()
    assert FOCUS.index("pullback") < x[0] < FOCUS.index("pullback") + 0.5
    assert FOCUS.index("gradcam") < x[1] < FOCUS.index("gradcam") + 0.5
    right_edges = [p.get_x() + p.get_width() for c in ax.containers if hasattr(c, "patches") for p in c.patches]
    assert x[1] > max(e for e in right_edges if e < len(FOCUS))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "authors' ResNet50 (reported)" in legend and any(t.startswith("chance") for t in legend)
    assert not [line for line in focus_figure(summary).axes[0].get_lines() if line.get_marker() == "*"]


def test_over_training_curves_against_epochs(curves):
    fig = over_training_figure(curves)
    assert len(fig.axes) == 2  # only the measures present get a panel
    epochs = [float(e) for e in EPOCHS]
    for ax, measure, lines in zip(fig.axes, ("pg_field", "agree_ascent"), (1, 2)):
        assert ax.get_xscale() == "symlog"
        close(ax.get_xticks(), epochs)
        drawn = [line for line in ax.get_lines()]
        assert len(drawn) == lines
        for line, band in zip(drawn, ax.collections):
            method = "pullback_vs_gradient" if measure == "pg_field" else \
                "gradient" if "gradient" in line.get_label().split(", ")[-1] else "pullback"
            expected = [row(curves, measure=measure, method=method, epoch=e) for e in EPOCHS]
            close(line.get_xdata(), epochs)
            close(line.get_ydata(), [float(r["mean"]) for r in expected])
            ys = band.get_paths()[0].vertices[:, 1]
            assert np.isclose(ys.min(), min(float(r["ci_low"]) for r in expected))
            assert np.isclose(ys.max(), max(float(r["ci_high"]) for r in expected))
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["run0 vs run1, pullback (T = 0.3)",
                                                                   "run0 vs run1, gradient"]
    assert [line.get_color() for line in fig.axes[1].get_lines()] == ["tab:orange", "tab:blue"]  # as elsewhere


def write(path, rows, columns):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def test_alignment_figures_writes_the_files(summary, curves, tmp_path):
    results, media = tmp_path / "results", tmp_path / "media" / "alignment"
    results.mkdir()
    write(results / "summary.csv", summary, COLUMNS)
    write(tmp_path / "curves.csv", curves, (*COLUMNS, "epoch"))
    paths = alignment_figures(results, media, {"pullback": 0.8}, "authors' ResNet50", curves=tmp_path / "curves.csv")
    names = ["pg.png", "agreement.png", "transfer.png", "focus.png", "over_training.png"]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in media.iterdir()) == sorted(names)
    assert all(p.stat().st_size > 10_000 for p in paths)
    # a summary without focus rows draws no empty focus figure
    write(results / "summary.csv", [r for r in summary if r["measure"] != "focus"], COLUMNS)
    assert [p.name for p in alignment_figures(results, tmp_path / "other")] == names[:3]
