"""Reading faithfulness results back: summary statistics, paired comparisons and plain-text tables.

Works from the CSV files alone (``results/faithfulness/<run>/``); nothing here imports the attribution
methods or the metrics. A score row is ``{"image", "file", "label", "method", "metric",
"randomised_layers", "layers", "value"}``: the randomisation check is the metric
``randomisation_spearman`` with ``randomised_layers`` of ``layers`` re-initialised from the top, the
other metrics leave those two columns empty. Rows read from a CSV hold strings, rows fresh from a run
numbers; both are accepted.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ...analysis.stats import bootstrap_ci
from ...paths import RESULTS
from ..records import read_csv

CONTROL = "random"  # attributions drawn from N(0, 1): what a score means when it carries no information
RANDOMISATION = "randomisation_spearman"
LOWER_IS_BETTER = {"deletion_auc", "infidelity", RANDOMISATION}


def metric_key(row: dict) -> tuple[str, str, str]:
    """``(metric, randomised_layers, layers)`` of a score or summary row, as strings ('' when not staged)."""
    return (row["metric"], str(row.get("randomised_layers", "") or ""), str(row.get("layers", "") or ""))


def metric_label(key) -> str:
    """Column title of a metric key: ``rand. top 16/31`` for a randomisation stage, else the metric's name."""
    metric, randomised, layers = _as_key(key)
    return f"rand. top {randomised}/{layers}" if randomised else metric


def _as_key(metric) -> tuple[str, str, str]:
    return tuple(metric) if isinstance(metric, (tuple, list)) else (metric, "", "")


def _keys_of(rows: list[dict], metrics=None) -> list[tuple[str, str, str]]:
    """Metric keys in order of appearance; ``metrics`` (names or keys) selects and orders them, a bare
    name standing for all of its stages."""
    keys = list(dict.fromkeys(metric_key(r) for r in rows))
    if metrics is None:
        return keys
    chosen = []
    for m in metrics:
        chosen += [k for k in keys if k == tuple(m)] if isinstance(m, (tuple, list)) else [k for k in keys if k[0] == m]
    return list(dict.fromkeys(chosen))


def summarise(scores: list[dict]) -> list[dict]:
    """Mean, bootstrap 95% CI and count per (method, metric key); NaN scores (e.g. constant maps) are dropped."""
    groups: dict[tuple, list[float]] = {}
    for row in scores:
        groups.setdefault((row["method"], metric_key(row)), []).append(float(row["value"]))
    summary = []
    for (method, (metric, randomised, layers)), values in groups.items():
        v = torch.tensor(values, dtype=torch.float64)
        v = v[~v.isnan()]
        low, high = bootstrap_ci(v) if len(v) > 1 else (float("nan"), float("nan"))
        summary.append({"method": method, "metric": metric, "randomised_layers": randomised, "layers": layers,
                        "mean": round(v.mean().item(), 6), "ci_low": round(low, 6), "ci_high": round(high, 6),
                        "n": len(v), "better": "lower" if metric in LOWER_IS_BETTER else "higher"})
    return summary


def load_results(results_dir=RESULTS / "faithfulness") -> dict[str, dict]:
    """Every finished evaluation under ``results_dir`` (one folder per run, e.g. ``bundled``), from its files
    alone: name -> ``{"config": settings dict, "summary": summary rows, "scores": per-image rows}``."""
    return {folder.name: {"config": json.loads((folder / "config.json").read_text()),
                          "summary": read_csv(folder / "summary.csv"), "scores": read_csv(folder / "scores.csv")}
            for folder in sorted(Path(results_dir).iterdir()) if (folder / "summary.csv").exists()}


def format_summary(summary: list[dict], metrics=None) -> str:
    """The summary as a plain-text table: one line per method, one column per metric key (mean [95% CI]).
    ``metrics`` picks columns by name (a name stands for all its randomisation stages) or by key."""
    keys = _keys_of(summary, metrics)
    methods = list(dict.fromkeys(r["method"] for r in summary))
    cell = {(r["method"], metric_key(r)): f"{float(r['mean']):.3f} [{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}]"
            for r in summary}
    lines = ["method".ljust(22) + "".join(metric_label(k).ljust(25) for k in keys)]
    for method in methods:
        if any((method, k) in cell for k in keys):
            lines.append(method.ljust(22) + "".join(cell.get((method, k), "-").ljust(25) for k in keys))
    return "\n".join(lines)


def paired_difference(scores: list[dict], a: str, b: str, metric) -> tuple[float, float, float, int] | None:
    """Mean of ``score(a) - score(b)`` over the images both methods scored on ``metric`` (a name or a metric
    key), with its percentile bootstrap 95% CI and the number of pairs; None when they share < 2 images.

    Every method is scored on the same images (and the same perturbations), so the paired difference is the
    right comparison: it removes the image-to-image spread that dominates each method's own interval.
    """
    key = _as_key(metric)

    def by_image(method):
        return {r["image"]: float(r["value"]) for r in scores if r["method"] == method and metric_key(r) == key}
    va, vb = by_image(a), by_image(b)
    shared = [i for i in va if i in vb and va[i] == va[i] and vb[i] == vb[i]]  # drop NaN on either side
    if len(shared) < 2:
        return None
    d = torch.tensor([va[i] - vb[i] for i in shared], dtype=torch.float64)
    low, high = bootstrap_ci(d)
    return d.mean().item(), low, high, len(shared)


def compare(scores: list[dict], ours: str, others) -> list[str]:
    """Plain-words verdicts of method ``ours`` against each of ``others`` on every metric they share, from the
    per-image ``scores``: "better than" / "worse than" when the 95% CI of the paired difference
    (:func:`paired_difference`) excludes 0 in that direction, "no clear difference from" otherwise; each with
    the mean difference ``ours - other``."""
    lines = []
    for key in _keys_of(scores):
        verdicts = []
        for other in others:
            diff = None if other == ours else paired_difference(scores, ours, other, key)
            if diff is None:
                continue
            mean, low, high, _ = diff
            if low > 0 or high < 0:
                verdict = "better than" if (low > 0) != (key[0] in LOWER_IS_BETTER) else "worse than"
            else:
                verdict = "no clear difference from"
            verdicts.append(f"{verdict} {other} ({mean:+.3f})")
        if verdicts:
            lines.append(f"{ours} on {metric_label(key)}: " + ", ".join(verdicts))
    return lines
