"""The alignment study's figures, drawn from its summary rows (see :mod:`utils.experiments.alignment`).

Every function takes summary rows (``{measure, model, other, method, temperature, mean, ci_low, ci_high, n}``,
strings as read from CSV or numbers fresh from a run) and returns a matplotlib Figure; error bars and bands
are the rows' bootstrap 95% CIs. :func:`alignment_figures` reads ``summary.csv`` and writes the PNG files.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..experiments.records import read_csv
from ..paths import MEDIA, RESULTS
from .plot import savefig

METHOD_LABELS = {"pullback": "pullback", "pullback_x_input": "pullback × input", "gradient": "gradient",
                 "gradient_x_input": "gradient × input", "integrated_gradients": "Integrated Gradients",
                 "gradcam": "Grad-CAM", "pullback_vs_gradient": "pullback vs gradient"}
COLOURS = {"pullback": "tab:orange", "gradient": "tab:blue"}  # ours orange, as in the faithfulness figure
CHANCE = 0.25  # Focus of an attribution spread evenly over a 2x2 mosaic
FOCUS_LABEL = "Focus (share of positive attribution in the target quadrant)"
_LEGEND = dict(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, borderaxespad=0)  # right of the axes


def _model_colours(models: list) -> dict:
    """A colour per model, skipping orange and blue, which stand for pullback and gradient in every figure."""
    return dict(zip(models, plt.get_cmap("tab10").colors[2:]))


def _of(rows, measure: str) -> list[dict]:
    return [r for r in rows if r["measure"] == measure]


def _stats(rows) -> tuple[np.ndarray, np.ndarray]:
    """Means and the (2, n) error-bar extents (below, above) of the rows' CIs."""
    mean = np.array([float(r["mean"]) for r in rows])
    ci = np.array([[float(r["ci_low"]) for r in rows], [float(r["ci_high"]) for r in rows]])
    return mean, np.clip(np.abs(ci - mean), 0, None).reshape(2, len(rows))


def _n_text(rows, unit: str) -> str:
    """``n = 500 images`` or, when the rows differ, ``n = 480-500 images``."""
    ns = sorted({int(float(r["n"])) for r in rows})
    if not ns:
        return f"no {unit}"
    return f"n = {ns[0]} {unit}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} {unit}"


def _method_label(method: str, temperature="") -> str:
    label = METHOD_LABELS.get(method, method)
    return f"{label} (T = {float(temperature):g})" if str(temperature) not in ("", "nan") else label


def _grouped_bars(ax, cells: dict, groups: list, series: list, labels: dict, colours: dict, slots: int = 0):
    """Bars with CI error bars: one group per entry of ``groups`` (x = 0, 1, ...), one bar per entry of
    ``series`` inside it; ``cells[(group, series)]`` is a summary row (missing cells are left empty).
    ``slots`` reserves room for more bars at the right of each group. Returns the bar width."""
    width = 0.8 / (len(series) + slots)
    for i, s in enumerate(series):
        shown = [g for g in groups if (g, s) in cells]
        if not shown:
            continue
        mean, err = _stats([cells[g, s] for g in shown])
        x = np.array([groups.index(g) for g in shown]) + (i - (len(series) + slots - 1) / 2) * width
        ax.bar(x, mean, width, yerr=err, capsize=3, color=colours.get(s), label=labels[s])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    return width


def _method_cells(rows, label_pair) -> tuple[dict, list, dict]:
    """``{(pair label, method): row}``, the pair labels in order of appearance, and the method labels."""
    cells = {(label_pair(r), r["method"]): r for r in rows}
    labels = {r["method"]: _method_label(r["method"], r["temperature"]) for r in rows}
    return cells, list(dict.fromkeys(label_pair(r) for r in rows)), labels


def pg_figure(summary) -> plt.Figure:
    """Cosine between pullback and gradient against the pullback's temperature (log x), one line per model;
    the field (left) and the ascent perturbation (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    panels = (("pg_field", "as fields: pullback vs gradient at the image"),
              ("pg_ascent", "as ascent perturbations (pullback ascent vs gradient ascent)"))
    colours = _model_colours(list(dict.fromkeys(r["model"] for r in summary)))
    for ax, (measure, title) in zip(axes, panels):
        rows = _of(summary, measure)
        for model in dict.fromkeys(r["model"] for r in rows):
            line = sorted((r for r in rows if r["model"] == model), key=lambda r: float(r["temperature"]))
            mean, err = _stats(line)
            ax.errorbar([float(r["temperature"]) for r in line], mean, yerr=err, fmt="-o", capsize=3, label=model,
                        color=colours[model])
        ax.axhline(1, color="0.3", ls=":", lw=1, label="identical")
        ax.set_xscale("log")
        temperatures = sorted({float(r["temperature"]) for r in rows})
        ax.set_xticks(temperatures, [f"{t:g}" for t in temperatures])
        ax.set_xlabel("pullback temperature T (log scale)")
        ax.set_title(f"{title}\n({_n_text(rows, 'images per point')})", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cosine")
    axes[-1].legend(title="model", **_LEGEND)
    fig.suptitle("How alike are the pullback and the plain gradient? Cosine per model, against temperature")
    return fig


def agreement_figure(summary) -> plt.Figure:
    """For each pair of models, the cosine between their fields (left) and their ascent perturbations (right),
    pullback against gradient."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    panels = (("agree_field", "fields at the image"), ("agree_ascent", "ascent perturbations"))
    for ax, (measure, title) in zip(axes, panels):
        rows = _of(summary, measure)
        cells, pairs, labels = _method_cells(rows, lambda r: f"{r['model']}\nvs {r['other']}")
        _grouped_bars(ax, cells, pairs, list(labels), labels, COLOURS)
        ax.set_xticks(range(len(pairs)), pairs, fontsize=8)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_title(f"agreement between two models' {title}\n({_n_text(rows, 'images per bar')})", fontsize=10)
    axes[0].set_ylabel("cosine")
    axes[-1].legend(title="method", **_LEGEND)
    fig.suptitle("Do two models point the same way? Cosine between their fields, per pair of models")
    return fig


def transfer_figure(summary) -> plt.Figure:
    """For each ordered pair (source -> other), the rise of log p(target) on the other model under the
    source's perturbation (top) and the share of images whose top-1 became the target (bottom)."""
    fig, axes = plt.subplots(2, 1, figsize=(12, 8.4))
    panels = (("transfer_logp", "rise of log p(target) on the other model", "log p rise (nats)"),
              ("transfer_became", "images whose top-1 became the target (not it before)", "share of images"))
    for ax, (measure, title, ylabel) in zip(axes, panels):
        rows = _of(summary, measure)
        cells, pairs, labels = _method_cells(rows, lambda r: f"{r['model']}\n→ {r['other']}")
        _grouped_bars(ax, cells, pairs, list(labels), labels, COLOURS)
        ax.set_xticks(range(len(pairs)), pairs, fontsize=8)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel("source model → model the perturbation is applied to")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}\n({_n_text(rows, 'images per bar')})", fontsize=10)
    axes[0].legend(title="perturbation from", **_LEGEND)
    fig.suptitle("Does one model's ascent perturbation transfer to another model? (same L2 norm for both methods)")
    return fig


def focus_figure(summary, reference: dict | None = None, reference_label: str = "reference") -> plt.Figure:
    """Focus per attribution method (groups) and model (bars), a dashed chance line at 0.25 and, optionally,
    reference values ``{method or its label: value}`` drawn as black stars in a slot of their own, labelled
    ``reference_label`` (e.g. another paper's numbers on its own model)."""
    rows = _of(summary, "focus")
    methods, models = list(dict.fromkeys(r["method"] for r in rows)), list(dict.fromkeys(r["model"] for r in rows))
    reference = {_reference_method(k): float(v) for k, v in (reference or {}).items()}
    methods += [m for m in reference if m not in methods]
    temperatures = {r["method"]: r["temperature"] for r in rows}
    fig, ax = plt.subplots(figsize=(1.6 * len(methods) + 4, 4.8))
    cells = {(r["method"], r["model"]): r for r in rows}
    colours = _model_colours(models)
    width = _grouped_bars(ax, cells, methods, models, {m: m for m in models}, colours, slots=1 if reference else 0)
    if reference:
        x = [methods.index(m) + len(models) / 2 * width for m in reference]
        ax.plot(x, list(reference.values()), "k*", ms=13, ls="none", label=reference_label)
    ax.axhline(CHANCE, color="0.3", ls="--", lw=1, label=f"chance ({CHANCE:g}: one quadrant of four)")
    ax.set_xticks(range(len(methods)), [_method_label(m, temperatures.get(m, "")) for m in methods], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(FOCUS_LABEL, fontsize=9)
    ax.set_title(f"Focus on 2x2 mosaics of four classes, per attribution method and model "
                 f"({_n_text(rows, 'target quadrants per bar')})", fontsize=10)
    ax.legend(**_LEGEND)
    return fig


def _reference_method(key: str) -> str:
    """A reference key, a method name or its label, as the method name."""
    return next((m for m, label in METHOD_LABELS.items() if key == label), key)


def _curve_label(row: dict) -> str:
    pair = f"{row['model']} vs {row['other']}" if str(row.get("other", "")) else row["model"]
    return f"{pair}, {_method_label(row['method'], row['temperature'])}"


def over_training_figure(curve_summary) -> plt.Figure:
    """Each measure of the over-training study (pg_field, pg_ascent, agree_field, agree_ascent) against the
    training epoch (symlog x), in a grid of two columns, CIs as shaded bands. Pullback-vs-gradient panels:
    colour per temperature, line style per run. Agreement panels: orange pullback, blue dashed gradient
    (as elsewhere), marker per pair of runs."""
    measures = [m for m in ("pg_field", "pg_ascent", "agree_field", "agree_ascent") if _of(curve_summary, m)]
    columns = min(2, len(measures))
    rows_of_panels = -(-len(measures) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(8.2 * columns, 4.3 * rows_of_panels), squeeze=False)
    epochs = sorted({float(r["epoch"]) for r in curve_summary})
    titles = {"pg_field": "pullback vs gradient, fields", "pg_ascent": "pullback vs gradient, 5-step ascent",
              "agree_field": "agreement between two runs, fields",
              "agree_ascent": "agreement between two runs, 5-step ascent"}
    for ax, measure in zip(axes.flat, measures):
        rows = _of(curve_summary, measure)
        temperatures = sorted({str(r["temperature"]) for r in rows if str(r["temperature"]) not in ("", "nan")},
                              key=float)
        runs = list(dict.fromkeys((r["model"], str(r["other"])) for r in rows))
        for key in dict.fromkeys((r["model"], str(r["other"]), r["method"], str(r["temperature"])) for r in rows):
            line = sorted((r for r in rows if (r["model"], str(r["other"]), r["method"], str(r["temperature"])) == key),
                          key=lambda r: float(r["epoch"]))
            x = [float(r["epoch"]) for r in line]
            mean, err = _stats(line)
            run = runs.index(key[:2])
            if measure.startswith("pg_"):
                shade = temperatures.index(key[3]) / max(len(temperatures) - 1, 1) if key[3] in temperatures else 0
                style = dict(color=plt.get_cmap("viridis")(0.85 * shade), ls=("-", "--", ":", "-.")[run % 4],
                             marker="o")
            else:
                style = dict(color=COLOURS.get(key[2]), ls="--" if key[2] == "gradient" else "-",
                             marker="osD^v"[run % 5])
            ax.plot(x, mean, ms=4, label=_curve_label(line[0]), **style)
            ax.fill_between(x, mean - err[0], mean + err[1], color=style["color"], alpha=0.15, lw=0)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(epochs, [f"{e:g}" for e in epochs])
        ax.minorticks_off()
        ax.set_xlabel("training epoch (symlog scale)", fontsize=9), ax.set_ylabel("cosine", fontsize=9)
        ax.set_title(f"{titles[measure]} ({_n_text(rows, 'images per point')})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(**{**_LEGEND, "fontsize": 7})
    for ax in axes.flat[len(measures):]:
        ax.set_visible(False)
    fig.suptitle("Over training: how alike are pullback and gradient, and how much do two runs agree?")
    return fig


def alignment_figures(results_dir=RESULTS / "alignment", media_dir=MEDIA / "alignment", reference: dict | None = None,
                      reference_label: str = "reference", curves=None) -> list[Path]:
    """Draw the study's figures from ``results_dir/summary.csv`` into ``media_dir``; returns the paths.

    ``pg.png``, ``agreement.png``, ``transfer.png``, ``focus.png`` (each only when its measures are in the
    summary; ``reference`` and ``reference_label`` go to :func:`focus_figure`), and ``over_training.png``
    when ``curves`` names the over-training study's summary CSV.
    """
    summary, media = read_csv(Path(results_dir) / "summary.csv"), Path(media_dir)
    measures = {r["measure"] for r in summary}
    figures = (("pg.png", ("pg_field", "pg_ascent"), lambda: pg_figure(summary)),
               ("agreement.png", ("agree_field", "agree_ascent"), lambda: agreement_figure(summary)),
               ("transfer.png", ("transfer_logp", "transfer_became"), lambda: transfer_figure(summary)),
               ("focus.png", ("focus",), lambda: focus_figure(summary, reference, reference_label)))
    paths = [savefig(draw(), media / name) for name, needs, draw in figures if measures & set(needs)]
    if curves is not None:
        paths.append(savefig(over_training_figure(read_csv(curves)), media / "over_training.png"))
    return paths
