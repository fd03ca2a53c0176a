"""The path-stability study's figures, drawn from its CSV tables (see :mod:`utils.experiments.stability`)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..experiments.stability.report import KERNELS, load_study
from ..paths import MEDIA, RESULTS
from .plot import heatmap, savefig

_S = "checkpoint s (epoch)"
_T = "checkpoint t (epoch)"
_GATES_FROM, _WEIGHTS_OF = "gates from checkpoint s (epoch)", "weights of checkpoint t (epoch)"


def _compact(v: float) -> str:
    """Two decimals, without the leading zero in [0, 1) so that a 9 x 9 grid stays readable."""
    return f"{v:.2f}".lstrip("0") if 0 <= v < 1 else f"{v:.2f}"


def plot_study(results_dir=RESULTS / "stability", media_dir=MEDIA / "stability") -> list[Path]:
    """Draw the study's figures from its CSVs into ``media_dir``; returns the PNG paths.

    ``jaccard.png`` (gate overlap s x t, and per ReLU call site against the final checkpoint),
    ``cross_gating.png`` (accuracy and true-class-logit Pearson of ``f_pi^(t)`` with hard and soft gates of s),
    ``controls.png`` (per checkpoint t: its own accuracy, the final gates, the seed-1 gates and random gates on
    its weights), ``kernel_knn.png`` (nearest-neighbour accuracy of each kernel).
    """
    study, media = load_study(results_dir), Path(media_dir)
    cfg = study["config"]
    where = f"{cfg['images']} Imagenette val images at {cfg['resolution']}px"
    return [savefig(_jaccard(study, where), media / "jaccard.png"),
            savefig(_cross_gating(study, where), media / "cross_gating.png"),
            savefig(_controls(study, where), media / "controls.png"),
            savefig(_kernel_knn(study, where), media / "kernel_knn.png")]


def _names(study: dict) -> list[str]:
    return [f"{e:g}" for e in study["epochs"]]


def _jaccard(study: dict, where: str):
    names = _names(study)
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 5.6), gridspec_kw={"width_ratios": [1, 1.1]})
    heatmap(a, study["jaccard"], names, names, "Jaccard of active units (mean over ReLU call sites)", _T, _S,
            0, 1, fmt=_compact)
    sites = study["jaccard_vs_final_by_site"]
    heatmap(b, sites.T, [str(i) for i in range(sites.shape[1])], names,
            f"Jaccard against the final checkpoint (epoch {names[-1]}), per site", "checkpoint (epoch)",
            "ReLU call site (input -> output)", 0, 1, fmt=_compact)
    fig.suptitle(f"Hypothesis 1: do the gates settle early? ({where})")
    return fig


def _cross_gating(study: dict, where: str):
    names, temperature = _names(study), study["config"]["temperature"]
    fig, axes = plt.subplots(2, 2, figsize=(14, 12))
    for row, kind in zip(axes, ("hard", "soft")):
        gate = "1[z_s > 0]" if kind == "hard" else f"sigmoid(z_s / {temperature:g})"
        heatmap(row[0], study["cross"][kind]["accuracy"], names, names, f"top-1 accuracy, gates {gate}",
                _WEIGHTS_OF, _GATES_FROM, 0, 1, fmt=_compact)
        heatmap(row[1], study["cross"][kind]["pearson"], names, names,
                f"Pearson(true-class logit of f_pi^(t), of f^(t)), gates {gate}", _WEIGHTS_OF, _GATES_FROM,
                -1, 1, "RdBu_r", fmt=_compact)
    fig.suptitle(f"Cross-gating: weights of t, every ReLU gate taken from s ({where})")
    return fig


def _controls(study: dict, where: str):
    names, c = _names(study), study["controls"]
    x = np.arange(len(names))
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 5))
    for ax, key, own in ((a, "accuracy", True), (b, "pearson", False)):
        if own:
            ax.plot(x, c["own_accuracy"], "k-o", label="f^(t) itself")
        for kind, style in (("hard", "-s"), ("soft", "--s")):
            ax.plot(x, study["cross"][kind][key][-1], style, color="tab:blue",
                    label=f"gates of the final checkpoint ({kind})")
            ax.plot(x, c[f"control_{kind}_{key}"], style, color="tab:orange",
                    label=f"gates of the seed-1 run at the same epoch ({kind})")
        ax.plot(x, c[f"random_hard_{key}"], ":^", color="0.4", label="random gates, same sparsity (hard)")
        ax.set_xticks(x, names)
        ax.set_xlabel(_WEIGHTS_OF)
        ax.set_ylabel("top-1 accuracy" if own else "Pearson with f^(t)'s true-class logit")
        ax.grid(alpha=0.3)
    a.axhline(0.1, color="0.7", lw=0.8)
    a.set_title("accuracy of the weights of t with other gates")
    b.set_title("how well the true-class logit of f^(t) is kept")
    a.legend(fontsize=7)
    fig.suptitle(f"Cross-gating against controls ({where})")
    return fig


def _kernel_knn(study: dict, where: str):
    cfg = study["config"]
    knn = [r for r in study["kernel_knn"] if r["k"] == cfg["knn_k"][0]]
    epochs = sorted({r["epoch"] for r in knn})
    fig, ax = plt.subplots(figsize=(2.2 * len(epochs) + 3, 4.5))
    width = 0.8 / len(KERNELS)
    for i, kernel in enumerate(KERNELS):
        accuracy = [next(r["accuracy"] for r in knn if r["epoch"] == e and r["kernel"] == kernel) for e in epochs]
        ax.bar(np.arange(len(epochs)) + (i - 1.5) * width, accuracy, width, label=kernel.replace("_", " "))
    model_accuracy = [next(r["model_accuracy"] for r in knn if r["epoch"] == e) for e in epochs]
    ax.plot(np.arange(len(epochs)), model_accuracy, "k_", ms=40, mew=2, label="the network itself")
    ax.set_xticks(range(len(epochs)), [f"epoch {e:g}" for e in epochs])
    ax.set_ylabel(f"{cfg['knn_k'][0]}-NN top-1 accuracy"), ax.set_ylim(0, 1), ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Kernel nearest neighbours: {cfg['kernel_train']} train images (balanced) -> {where}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", markerscale=0.25)
    return fig
