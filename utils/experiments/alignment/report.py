"""Reading alignment results back: summary statistics, pullback-minus-gradient differences, plain sentences.

Works from the CSV files alone (``results/alignment/``); nothing here imports the attribution methods or
the pullback. A score row is ``{"image", "file", "label", "target", "measure", "model", "other", "method",
"temperature", "value"}`` (see :mod:`.run`); rows read from a CSV hold strings, rows fresh from a run
numbers, and both are accepted. Every paired measure (:data:`PAIRS`) is better when higher (agreement,
transfer, focus); the control's ``agree_field_mismatched`` and ``target_cosine`` (:mod:`.control`) only describe.
Over training (:mod:`.over_training`) rows carry an ``epoch`` column too: :func:`summarise` takes the key,
:func:`curve_table` and :func:`curve_sentences` compare the first epoch with the last.
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
                                                        "transfer_became", "agree_field_specific")},
         "focus": (("pullback", "gradient"), ("pullback_x_input", "gradient_x_input"))}
WORDS = {"agree_field": "field agreement", "agree_ascent": "ascent agreement",
         "transfer_logp": "log-probability rise after transfer", "transfer_became": "transfer success rate",
         "focus": "Focus", "agree_field_specific": "target-specific field agreement"}


def mean_ci(values) -> dict:
    """``{"mean", "ci_low", "ci_high", "n"}`` of the non-NaN values (bootstrap 95% CI; NaN when n < 2)."""
    v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    v = v[~v.isnan()]
    low, high = bootstrap_ci(v) if len(v) > 1 else (math.nan, math.nan)
    mean = v.mean().item() if len(v) else math.nan
    return {"mean": round(mean, 6), "ci_low": round(low, 6), "ci_high": round(high, 6), "n": len(v)}


def summarise(scores: list[dict], key=KEY) -> list[dict]:
    """One row per measure x model x other x method x temperature (the columns ``key``; e.g. ``("epoch", *KEY)``
    over training): mean, bootstrap 95% CI over samples, n."""
    groups: dict[tuple, list] = {}
    for row in scores:
        groups.setdefault(tuple(str(row[k]) for k in key), []).append(row["value"])
    return [{**dict(zip(key, group)), **mean_ci(values)} for group, values in groups.items()]


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


def paired_with_control(results_dir=RESULTS / "alignment") -> list[dict]:
    """A study's ``paired.csv`` rows followed by the target-specific agreement rows of its control in
    ``results_dir/control`` (:mod:`.control`), when that control has run."""
    folder = Path(results_dir)
    rows = read_csv(folder / "paired.csv")
    if (folder / "control" / "paired.csv").exists():
        rows += [r for r in read_csv(folder / "control" / "paired.csv") if r["measure"] == "agree_field_specific"]
    return rows


WIDTHS = {"epoch": 7, "measure": 23, "model": 16, "other": 16, "method": 22, "temperature": 12}


def format_summary(rows: list[dict], key=KEY) -> str:
    """Summary rows as a plain-text table, one line each: the columns ``key``, mean [95% CI] and n."""
    lines = ["".join(k.ljust(WIDTHS.get(k, 16)) for k in key) + "mean [95% CI]".ljust(28) + "n"]
    for r in rows:
        cell = f"{float(r['mean']):.3f} [{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}]"
        lines.append("".join(str(r[k]).ljust(WIDTHS.get(k, 16)) for k in key) + cell.ljust(28) + str(r["n"]))
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


def tally(paired_rows: list[dict]) -> dict[tuple, dict]:
    """Per (measure, ours, baseline): ``n`` paired comparisons (model pairs, transfer directions or models),
    ``better`` / ``worse`` (the 95% CI of pullback minus gradient wholly above / below 0, as in
    :func:`verdicts`) and the ``low`` / ``high`` mean difference."""
    groups: dict[tuple, list] = {}
    for r in paired_rows:
        groups.setdefault((r["measure"], r["ours"], r["baseline"]), []).append(r)
    return {key: {"n": len(rows), "better": sum(float(r["ci_low"]) > 0 for r in rows),
                  "worse": sum(float(r["ci_high"]) < 0 for r in rows),
                  "low": min(float(r["mean"]) for r in rows), "high": max(float(r["mean"]) for r in rows)}
            for key, rows in groups.items()}


def headline(paired_rows: list[dict]) -> list[str]:
    """One sentence per measure and method pair of :func:`tally`: in how many comparisons pullbacks beat
    gradients, gradients beat pullbacks, or neither, and the range of the mean differences."""
    return [f"{WORDS.get(measure, measure)} ({ours} vs {baseline}): pullbacks better in {t['better']} of {t['n']} "
            f"comparisons, worse in {t['worse']}, no clear difference in {t['n'] - t['better'] - t['worse']}; "
            f"mean differences {t['low']:+.3f} to {t['high']:+.3f}."
            for (measure, ours, baseline), t in tally(paired_rows).items()]


# --- over training (utils.experiments.alignment.over_training) -------------------------------------------

def curve_table(summary: list[dict]) -> list[dict]:
    """Per measure x model x other x method x temperature of an over-training summary (rows with an ``epoch``):
    mean and 95% CI at the first and the last epoch, their difference, and ``change``: "rose" or "fell" when
    the two CIs do not overlap, "overlap" when they do, "unknown" without CIs (n < 2)."""
    groups: dict[tuple, list] = {}
    for r in summary:
        groups.setdefault(tuple(str(r[k]) for k in KEY), []).append(r)
    table = []
    for group, rows in groups.items():
        ends = sorted(rows, key=lambda r: float(r["epoch"]))
        first, last, ci = ends[0], ends[-1], ("mean", "ci_low", "ci_high")
        low0, high0, low1, high1 = (float(r[k]) for r in (first, last) for k in ("ci_low", "ci_high"))
        known = not any(math.isnan(v) for v in (low0, high0, low1, high1))
        change = ("rose" if low1 > high0 else "fell" if high1 < low0 else "overlap") if known else "unknown"
        table.append({**dict(zip(KEY, group)), "first_epoch": first["epoch"],
                      **{f"first_{k}": float(first[k]) for k in ci}, "last_epoch": last["epoch"],
                      **{f"last_{k}": float(last[k]) for k in ci},
                      "difference": round(float(last["mean"]) - float(first["mean"]), 6), "change": change})
    return table


def curve_sentences(table: list[dict]) -> list[str]:
    """One plain sentence per row of :func:`curve_table`."""
    lines = []
    for r in table:
        who = r["model"] + (f" and {r['other']}" if r["other"] else "")
        how = r["method"] + (f", T={r['temperature']}" if r["temperature"] else "")
        ends = [f"{r[f'{e}_mean']:.3f} [{r[f'{e}_ci_low']:.3f}, {r[f'{e}_ci_high']:.3f}] at epoch {r[f'{e}_epoch']}"
                for e in ("first", "last")]
        verdict = {"rose": "rose (the 95% CIs do not overlap)", "fell": "fell (the 95% CIs do not overlap)",
                   "overlap": "no clear change (the 95% CIs overlap)", "unknown": "too few samples to tell"}
        lines.append(f"{r['measure']} of {who} ({how}): {ends[0]} -> {ends[1]}: {verdict[r['change']]}.")
    return lines
