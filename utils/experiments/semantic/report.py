"""Reading the Semantic Pullbacks study back: summaries, paired differences and verdicts, from its files alone.

A score row is ``{"kind", "item", "image", "file", "label", "explainer", "metric", "value"}``: ``kind`` the part
kind (``single``, ``smooth``, ``focus``), ``item`` its position, ``metric`` a column of the paper's table or
``Focus``. A run merges ``scores.csv`` when every part is done; a run still going (or stopped) is merged from its
finished parts by ``python -m utils.experiments.semantic --collect`` (``progress.json`` says which). The page reads only
these merged files, never ``parts/`` (not committed). Nothing here imports the explainers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ...analysis.stats import bootstrap_ci
from ...paths import RESULTS
from ..records import load_csv_part, read_csv, run_id
from . import reference

COLUMNS = ("kind", "item", "image", "file", "label", "explainer", "metric", "value")
FOCUS = "focus"
FOCUS_METRIC = "Focus"
PROGRESS = "progress.json"
METRICS = (*reference.METRICS, FOCUS_METRIC)
LOWER_IS_BETTER = {"Infidelity", "Max.Sens", "Rand.Logit"}
PAIRS = (("SoftPullback", "Gradient"), ("PullbackAscent", "GradientAscent"), ("SmoothPullback", "SmoothGrad"),
         ("FusionPullback", "FusionGrad"), ("IntegratedPullbacks", "IntegratedGradients"),
         ("PullbackShap", "GradientShap"), ("PbDeepLift", "DeepLift"), ("GuidedPbCam", "GuidedGradCam"))
"""The paired comparisons: each pullback row against the row it softens."""
MIN_PAIRS = 10
"""Fewest paired images for a verdict."""


def timing_rows(rows: list[dict]) -> list[dict]:
    """Mean seconds per image (or mosaic) by part kind and explainer (``metric:<name>``: a metric over all the
    part's explainers), from the ``seconds`` rows of the parts."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r["metric"] == "seconds":
            groups.setdefault((r["kind"], r["explainer"]), []).append(float(r["value"]))
    return [{"kind": kind, "explainer": name, "seconds_per_image": round(sum(v) / len(v), 2), "n": len(v)}
            for (kind, name), v in groups.items()]


def part_rows(folder) -> list[dict]:
    """The rows of every finished part of the run in ``folder`` (parts of another run, or damaged, are skipped)."""
    folder = Path(folder)
    config = folder / "config.json"
    if not config.exists() or not (folder / "parts").is_dir():
        return []
    run = run_id(json.loads(config.read_text()))
    rows = []
    for path in sorted((folder / "parts").glob("*.csv")):
        check = path.with_name(path.name + ".check.json")
        if check.exists() and json.loads(check.read_text()).get("run") == run:
            rows += load_csv_part(path, run=run) or []
    return rows


def load_run(folder) -> dict:
    """One model's results from its merged files (``scores.csv``, ``timing.csv``, ``progress.json``): ``{"config",
    "scores", "timing", "progress"}``; ``scores`` is empty until the run merged or was collected (``--collect``)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    scores = read_csv(folder / "scores.csv") if (folder / "scores.csv").exists() else []
    timing = read_csv(folder / "timing.csv") if (folder / "timing.csv").exists() else []
    progress = (json.loads((folder / PROGRESS).read_text()) if (folder / PROGRESS).exists()
                else {"complete": bool(scores)})
    return {"config": config, "scores": scores, "timing": timing, "progress": progress}


def load_results(results_dir=RESULTS / "semantic") -> dict[str, dict]:
    """Every run under ``results_dir`` (one folder per model), finished or not: folder name -> :func:`load_run`."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return {}
    return {f.name: load_run(f) for f in sorted(results_dir.iterdir()) if (f / "config.json").exists()}


def _values(scores: list[dict], explainer: str, metric: str) -> dict:
    """(kind, item) -> score of one explainer on one metric (NaN scores dropped)."""
    out = {}
    for r in scores:
        if r["explainer"] == explainer and r["metric"] == metric:
            v = float(r["value"])
            if v == v:
                out[(r["kind"], str(r["item"]))] = v
    return out


def summary(scores: list[dict]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(explainer, metric) -> (mean, std, n), std over images (ddof 0, as the paper's table)."""
    keys = dict.fromkeys((r["explainer"], r["metric"]) for r in scores)
    out = {}
    for explainer, metric in keys:
        v = torch.tensor(list(_values(scores, explainer, metric).values()), dtype=torch.float64)
        if len(v):
            out[(explainer, metric)] = (v.mean().item(), v.std(unbiased=False).item(), len(v))
    return out


def paired(scores: list[dict], a: str, b: str, metric: str) -> tuple[float, float, float, int] | None:
    """Mean of ``score(a) - score(b)`` over the images (mosaics) both scored, its bootstrap 95% CI and the number
    of pairs; None with fewer than 2 pairs."""
    va, vb = _values(scores, a, metric), _values(scores, b, metric)
    shared = [k for k in va if k in vb]
    if len(shared) < 2:
        return None
    d = torch.tensor([va[k] - vb[k] for k in shared], dtype=torch.float64)
    low, high = bootstrap_ci(d)
    return d.mean().item(), low, high, len(shared)


def direction(metric: str, difference: float) -> int:
    """+1 when a difference ``a - b`` favours ``a`` on ``metric``, -1 when it favours ``b``, 0 for none."""
    if difference == 0:
        return 0
    return (1 if difference < 0 else -1) if metric in LOWER_IS_BETTER else (1 if difference > 0 else -1)


def published_difference(model: str, a: str, b: str, metric: str) -> float | None:
    """The paper's mean of ``a`` minus its mean of ``b`` on ``metric`` for the paper's counterpart of ``model``
    (ResNet50's for a model with none), or None where the paper has no number for one of them."""
    paper = reference.COUNTERPART.get(model) or "resnet50"
    if metric == FOCUS_METRIC:
        table = reference.FOCUS.get(paper, reference.FOCUS["resnet50"])
        return table[a][0] - table[b][0] if a in table and b in table else None
    table = reference.TABLE[paper]
    return table[a][metric][0] - table[b][metric][0] if a in table and b in table else None


def published_direction(model: str, a: str, b: str, metric: str) -> int | None:
    """Which of ``a``, ``b`` the paper's numbers favour on ``metric`` (+1: a, -1: b), or None where they claim no
    ordering: the paper has no number for one of them, or the same mean for both."""
    difference = published_difference(model, a, b, metric)
    if difference is None:
        return None
    return direction(metric, difference) or None


def verdict(model: str, scores: list[dict], a: str, b: str, metric: str) -> dict | None:
    """The paper's claim that ``a`` beats (or trails) ``b`` on ``metric``, checked on our paired scores: "holds"
    when the 95% CI of the paired difference excludes 0 on the paper's side, "reversed" when it excludes 0 on
    the other, "unresolved" when it contains 0, "too few images" under :data:`MIN_PAIRS` pairs (a bootstrap
    interval means little there); where the paper has no number for one of them, or the same mean for both,
    "better" / "worse" / "unresolved" for ``a``.
    With the difference, CI and number of images; None where we have fewer than 2 pairs."""
    diff = paired(scores, a, b, metric)
    if diff is None:
        return None
    mean, low, high, n = diff
    ours = direction(metric, low) if direction(metric, low) == direction(metric, high) else 0
    claim = published_direction(model, a, b, metric)
    if n < MIN_PAIRS:
        outcome = "too few images"
    elif claim is None:
        outcome = {1: "better", -1: "worse", 0: "unresolved"}[ours]
    else:
        outcome = "unresolved" if ours == 0 else "holds" if ours == claim else "reversed"
    return {"a": a, "b": b, "metric": metric, "mean": mean, "low": low, "high": high, "n": n,
            "claim": claim, "outcome": outcome}


def verdicts(model: str, scores: list[dict]) -> list[dict]:
    """:func:`verdict` for every pair of :data:`PAIRS` and every metric both rows were scored on."""
    out = []
    for a, b in PAIRS:
        for metric in METRICS:
            v = verdict(model, scores, a, b, metric)
            if v is not None:
                out.append(v)
    return out
