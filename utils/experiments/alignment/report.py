"""Reading alignment results back: summary statistics, pullback-minus-gradient differences, plain sentences.

Works from the CSV files alone (``results/alignment/``); nothing here imports the attribution methods or
the pullback. A score row is ``{"image", "file", "label", "target", "measure", "model", "other", "method",
"temperature", "value"}`` (see :mod:`.run`); rows read from a CSV hold strings, rows fresh from a run
numbers, and both are accepted. Every measure is better when higher (agreement, transfer, focus).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ...analysis.stats import bootstrap_ci
from ...paths import RESULTS
from ..records import read_csv

KEY = ("measure", "model", "other", "method", "temperature")
# The paired comparisons: (ours, baseline) per measure, compared on the same image, target and model(s).
PAIRS = {**{m: (("pullback", "gradient"),) for m in ("agree_field", "agree_ascent", "transfer_logp",
                                                        "transfer_became")},
         "focus": (("pullback", "gradient"), ("pullback_x_input", "gradient_x_input"))}
WORDS = {"agree_field": "field agreement", "agree_ascent": "ascent agreement",
         "transfer_logp": "log-probability rise after transfer", "transfer_became": "transfer success rate",
         "focus": "Focus"}


def mean_ci(values) -> dict:
    """``{"mean", "ci_low", "ci_high", "n"}`` of the non-NaN values (bootstrap 95% CI; NaN when n < 2)."""
    v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    v = v[~v.isnan()]
    low, high = bootstrap_ci(v) if len(v) > 1 else (math.nan, math.nan)
    mean = v.mean().item() if len(v) else math.nan
    return {"mean": round(mean, 6), "ci_low": round(low, 6), "ci_high": round(high, 6), "n": len(v)}


def summarise(scores: list[dict]) -> list[dict]:
    """One row per measure x model x other x method x temperature: mean, bootstrap 95% CI over samples, n."""
    groups: dict[tuple, list] = {}
    for row in scores:
        groups.setdefault(tuple(str(row[k]) for k in KEY), []).append(row["value"])
    return [{**dict(zip(KEY, key)), **mean_ci(values)} for key, values in groups.items()]


def paired(scores: list[dict]) -> list[dict]:
    """Pullback minus gradient (:data:`PAIRS`) per sample (image, file, target), for the same model(s):
    rows ``{measure, model, other, ours, baseline, temperature, mean, ci_low, ci_high, n}``; samples where
    either side is NaN are left out."""
    by: dict[tuple, dict] = {}
    for r in scores:
        if r["measure"] in PAIRS:
            group = by.setdefault((r["measure"], r["model"], str(r["other"]), r["method"]), {})
            group[(str(r["image"]), r["file"], str(r["target"]))] = (float(r["value"]), str(r["temperature"]))
    rows = []
    for (measure, model, other, method), ours in by.items():
        for a, b in PAIRS[measure]:
            base = by.get((measure, model, other, b))
            if method != a or base is None:
                continue
            diffs = [value - base[k][0] for k, (value, _) in ours.items() if k in base]
            temperature = next(iter(ours.values()))[1]
            rows.append({"measure": measure, "model": model, "other": other, "ours": a, "baseline": b,
                         "temperature": temperature, **mean_ci(diffs)})
    return rows


def load_results(results_dir=RESULTS / "alignment") -> dict:
    """A finished study from its files alone: ``{"config", "summary", "paired", "scores"}``."""
    folder = Path(results_dir)
    return {"config": json.loads((folder / "config.json").read_text()), "summary": read_csv(folder / "summary.csv"),
            "paired": read_csv(folder / "paired.csv"), "scores": read_csv(folder / "scores.csv")}


def format_summary(rows: list[dict]) -> str:
    """Summary rows as a plain-text table, one line each: mean [95% CI] and n."""
    widths = (16, 16, 16, 22, 6)
    lines = ["".join(k.ljust(w) for k, w in zip(KEY, widths)) + "mean [95% CI]".ljust(28) + "n"]
    for r in rows:
        cell = f"{float(r['mean']):.3f} [{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}]"
        lines.append("".join(str(r[k]).ljust(w) for k, w in zip(KEY, widths)) + cell.ljust(28) + str(r["n"]))
    return "\n".join(lines)


def _subject(row: dict) -> str:
    measure, model, other = row["measure"], row["model"], row["other"]
    if measure.startswith("agree"):
        return f"{WORDS[measure]} of {model} and {other}"
    if measure.startswith("transfer"):
        return f"{WORDS[measure]} from {model} to {other}"
    return f"{WORDS.get(measure, measure)} of {model} ({row['ours']} vs {row['baseline']})"


def verdicts(summary: list[dict], paired_rows: list[dict]) -> list[str]:
    """Plain sentences from the tables: how alike pullback and gradient are per model, then, per paired
    comparison, whether pullbacks beat gradients (the 95% CI of the paired difference excludes 0 above it),
    gradients beat pullbacks (excludes it below), or neither."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in summary if r["measure"].startswith("pg_")):
        parts = [f"{kind} cosine " + ", ".join(f"{float(r['mean']):.2f} at T={r['temperature']}" for r in summary
                                               if r["measure"] == f"pg_{kind}" and r["model"] == model)
                 for kind in ("field", "ascent")]
        lines.append(f"Pullback vs gradient of {model}: " + "; ".join(parts) + ".")
    for r in paired_rows:
        mean, low, high, n = float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]), int(r["n"])
        numbers = f"pullback minus gradient {mean:+.3f} [95% CI {low:+.3f}, {high:+.3f}], n = {n}"
        if n < 2:
            lines.append(f"Too few samples to compare pullbacks and gradients on {_subject(r)} (n = {n}).")
        elif low > 0:
            lines.append(f"Pullbacks beat gradients on {_subject(r)}: {numbers}.")
        elif high < 0:
            lines.append(f"Gradients beat pullbacks on {_subject(r)}: {numbers}.")
        else:
            lines.append(f"No clear difference between pullbacks and gradients on {_subject(r)}: {numbers}.")
    return lines
