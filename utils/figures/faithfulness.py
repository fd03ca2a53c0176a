"""The faithfulness evaluation's figure, from its summary rows (see :mod:`utils.experiments.faithfulness`)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..experiments.faithfulness.report import CONTROL, RANDOMISATION, metric_key

FAITHFULNESS_PANELS = (("deletion_auc", "deletion AUC (lower is better)"),
                       ("insertion_auc", "insertion AUC (higher is better)"),
                       ("faithfulness_correlation", "faithfulness correlation (higher)"),
                       ("infidelity", "infidelity (lower, log scale)"))


def plot_faithfulness(summary: Sequence[dict], ours: Sequence[str] = (), title: str = ""):
    """Bars with bootstrap 95% CIs per method for each faithfulness metric, and the randomisation check
    (Spearman similarity to the trained model's map vs how many layers are randomised, top down).

    ``summary`` holds rows as written by :func:`utils.experiments.faithfulness.summarise`; methods in
    ``ours`` are drawn in orange, the rest in blue, the random-attribution control in grey.
    """
    rows = {(r["method"], metric_key(r)): r for r in summary}
    methods = list(dict.fromkeys(r["method"] for r in summary))
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.8), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.3]})
    for ax, (metric, label) in zip(axes, FAITHFULNESS_PANELS):
        key = (metric, "", "")
        shown = [m for m in methods if (m, key) in rows]
        mean = np.array([float(rows[m, key]["mean"]) for m in shown])
        err = np.abs(np.array([[float(rows[m, key][k]) for m in shown] for k in ("ci_low", "ci_high")]) - mean)
        colours = ["tab:orange" if m in ours else "0.6" if m == CONTROL else "tab:blue" for m in shown]
        ax.barh(range(len(shown)), mean, xerr=err, color=colours, capsize=2)
        ax.set_yticks(range(len(shown)), shown if ax is axes[0] else [""] * len(shown))
        ax.invert_yaxis()
        ax.set_title(label, fontsize=10)
        if metric == "infidelity":
            ax.set_xscale("log")
    _randomisation_panel(axes[-1], rows, methods, ours)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _randomisation_panel(ax, rows: dict, methods: list, ours) -> None:
    stages = sorted({key for _, key in rows if key[0] == RANDOMISATION}, key=lambda k: int(k[1]))
    for m in methods:
        ys = [float(rows[m, s]["mean"]) for s in stages if (m, s) in rows]
        if len(ys) == len(stages) and stages:
            ax.plot(range(len(stages) + 1), [1.0] + ys, "-o" if m in ours else "--.", label=m)
    ax.set_xticks(range(len(stages) + 1), ["none"] + [s[1] for s in stages])
    ax.set_xlabel("layers randomised from the top" + (f" (of {stages[0][2]})" if stages else ""))
    ax.set_ylabel("Spearman(|map|, |map of trained model|)")
    ax.set_title("randomisation check (lower = passes)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
