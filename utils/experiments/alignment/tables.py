"""The alignment study as tables for the README and the notebook, and the authors' Focus numbers to set beside ours.

Works from ``summary.csv`` / ``paired.csv`` rows alone (strings or numbers), like :mod:`.report`;
:func:`architecture_tables` reads a committed study's folder.
"""
from __future__ import annotations

from pathlib import Path

from ...paths import RESULTS
from .report import load_results, tally

# Focus on ImageNet-pretrained ResNet50 as reported by the authors of the follow-up paper (Satkiewicz, Corizzo,
# Pietroń, "Pulling Back the Curtain on Deep Networks", arXiv 2507.22832 v5/v6): their repository's
# results/focus_model_name=resnet50_summary.csv (github.com/314-Foundation/SemanticPullbacks, commit 74ba1d13),
# mean over 500 mosaics. Their relevance is input x attribution, so their "SoftPullback" and "Gradient" are
# our pullback_x_input and gradient_x_input; their mosaics hold the target image in two of the four quadrants
# (Quantus' Focus: chance 0.5), ours four images of four classes (chance 0.25); Quantus keeps the positive part
# of every channel's relevance, we that of the channel sum (Arias-Duart et al.'s per-pixel relevance).
AUTHORS_FOCUS = {"pullback_x_input": 0.7483, "gradient_x_input": 0.6337}
AUTHORS_FOCUS_LABEL = "authors' ResNet50 on ImageNet (their numbers; chance 0.5)"
AUTHORS_FOCUS_SOURCE = ("github.com/314-Foundation/SemanticPullbacks results/focus_model_name=resnet50_summary.csv "
                        "(commit 74ba1d13): SoftPullback 0.748 ± 0.134, Gradient 0.634 ± 0.140, 500 mosaics")
NAMES = {"agree_field": "field agreement", "agree_ascent": "5-step agreement", "transfer_logp": "transfer: log p rise",
         "transfer_became": "transfer: top-1 becomes target", "focus": "Focus", "pg_field": "field cosine",
         "pg_ascent": "5-step cosine", "agree_field_specific": "target-specific field agreement"}


def _cell(row: dict | None, signed: bool = False) -> str:
    if row is None:
        return "–"
    form = "{:+.3f}" if signed else "{:.3f}"
    return f"{form.format(float(row['mean']))} [{form.format(float(row['ci_low']))}, {form.format(float(row['ci_high']))}]"


def _find(summary: list[dict], measure: str, model: str, other: str, method: str) -> dict | None:
    return next((r for r in summary if (r["measure"], r["model"], str(r["other"]), r["method"])
                 == (measure, model, other, method)), None)


def _models(row: dict) -> str:
    other = str(row["other"])
    if not other:
        return row["model"]
    return f"{row['model']} → {other}" if row["measure"].startswith("transfer") else f"{row['model']} & {other}"


def comparison_table(summary: list[dict], paired_rows: list[dict]) -> str:
    """Markdown: one line per paired comparison (measure, models, ours, baseline, their difference), mean [95% CI]."""
    lines = ["| measure | models | method | value | baseline | value | difference |", "|---|---|---|---|---|---|---|"]
    for r in paired_rows:
        ours = _find(summary, r["measure"], r["model"], str(r["other"]), r["ours"])
        base = _find(summary, r["measure"], r["model"], str(r["other"]), r["baseline"])
        lines.append(f"| {NAMES.get(r['measure'], r['measure'])} | {_models(r)} | {r['ours']} | {_cell(ours)} | "
                     f"{r['baseline']} | {_cell(base)} | {_cell(r, signed=True)} |")
    return "\n".join(lines)


def similarity_table(summary: list[dict]) -> str:
    """Markdown: pullback-vs-gradient cosine per model (rows) and temperature (columns), field / 5-step ascent."""
    rows = [r for r in summary if r["measure"] in ("pg_field", "pg_ascent")]
    temperatures = sorted({float(r["temperature"]) for r in rows})
    lines = ["| model | " + " | ".join(f"T = {t:g}: field / 5-step" for t in temperatures) + " |",
             "|---" * (len(temperatures) + 1) + "|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        cells = []
        for t in temperatures:
            pair = [next((float(r["mean"]) for r in rows if r["measure"] == m and r["model"] == model
                          and float(r["temperature"]) == t), None) for m in ("pg_field", "pg_ascent")]
            cells.append(" / ".join("–" if v is None else f"{v:.3f}" for v in pair))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def focus_table(summary: list[dict], reference: dict | None = None, reference_label: str = "reference") -> str:
    """Markdown: Focus per attribution method (rows) and model (columns), mean [95% CI], and optionally a last
    column of ``reference`` values ``{method: value}`` (another study's numbers, labelled ``reference_label``)."""
    rows = [r for r in summary if r["measure"] == "focus"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    head = models + ([reference_label] if reference is not None else [])
    lines = ["| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = [_cell(_find(rows, "focus", model, "", method)) for model in models]
        if reference is not None:
            cells.append(f"{reference[method]:.3f}" if method in reference else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def control_table(summary: list[dict]) -> str:
    """Markdown, from the control's summary (:mod:`.control`): per pair of models and method, the agreement for
    the target, for mismatched targets and their difference; then per model and method, the cosine between its
    own fields for the two targets. Mean [95% CI]."""
    pairs = list(dict.fromkeys((r["model"], str(r["other"])) for r in summary if r["measure"] == "agree_field"))
    methods = list(dict.fromkeys(r["method"] for r in summary if r["measure"] == "agree_field"))
    lines = ["| models | method | agreement, same target | agreement, mismatched targets | target-specific part |",
             "|---|---|---|---|---|"]
    for a, b in pairs:
        for method in methods:
            cells = [_cell(_find(summary, m, a, b, method), signed=m == "agree_field_specific")
                     for m in ("agree_field", "agree_field_mismatched", "agree_field_specific")]
            lines.append(f"| {a} & {b} | {method} | " + " | ".join(cells) + " |")
    models = list(dict.fromkeys(r["model"] for r in summary if r["measure"] == "target_cosine"))
    lines += ["", "| model | " + " | ".join(f"{m}: own fields, target vs mismatched" for m in methods) + " |",
              "|---" * (len(methods) + 1) + "|"]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(_cell(_find(summary, "target_cosine", model, "", m))
                                                  for m in methods) + " |")
    return "\n".join(lines)


def tally_table(studies: dict[str, list[dict]]) -> str:
    """Markdown: per measure and method pair (rows), per study (columns, e.g. ``{"T = 0.3": paired_rows, ...}``),
    how many paired comparisons favour pullbacks and the range of the mean differences (:func:`.report.tally`)."""
    tallies = {label: tally(rows) for label, rows in studies.items()}
    keys = list(dict.fromkeys(k for t in tallies.values() for k in t))
    lines = ["| measure | pullback vs | " + " | ".join(tallies) + " |", "|---" * (len(tallies) + 2) + "|"]
    for key in keys:
        cells = []
        for t in tallies.values():
            if key not in t:
                cells.append("–")
                continue
            c = t[key]
            worse = f", {c['worse']} worse" if c["worse"] else ""
            cells.append(f"{c['better']} of {c['n']} better{worse}; {c['low']:+.3f} to {c['high']:+.3f}")
        lines.append(f"| {NAMES.get(key[0], key[0])} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _means(summary: list[dict], key: tuple) -> str:
    ours, base = (_find(summary, key[0], key[1], key[2], method) for method in key[3:])
    return " vs ".join("–" if r is None else f"{float(r['mean']):.3f}" for r in (ours, base))


def comparison_by_study(studies: dict[str, tuple[list[dict], list[dict]]]) -> str:
    """Markdown: one line per paired comparison (measure, models, method pair), one column per study
    (``{"T = 0.3": (summary, paired_rows), ...}``): the two methods' means and the paired difference [95% CI]."""
    def key(r):
        return r["measure"], r["model"], str(r["other"]), r["ours"], r["baseline"]

    keys = list(dict.fromkeys(key(r) for _, rows in studies.values() for r in rows))
    lines = ["| measure | models | pullback vs | " + " | ".join(f"{label}: means; difference [95% CI]"
                                                              for label in studies) + " |",
             "|---" * (len(studies) + 3) + "|"]
    for k in keys:
        cells = []
        for summary, rows in studies.values():
            found = next((r for r in rows if key(r) == k), None)
            cells.append("–" if found is None else f"{_means(summary, k)}; {_cell(found, signed=True)}")
        models = _models({"measure": k[0], "model": k[1], "other": k[2]})
        lines.append(f"| {NAMES.get(k[0], k[0])} | {models} | {k[4]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_similarity_table(summary: list[dict], accuracies: dict[str, float]) -> str:
    """Markdown: :func:`similarity_table` with each model's val accuracy (a fraction) as the second column."""
    lines = similarity_table(summary).splitlines()
    head = lines[0].split(" | ", 1)
    lines[0], lines[1] = f"{head[0]} | val accuracy | {head[1]}", "|---" + lines[1]
    for i, line in enumerate(lines[2:], 2):
        model, rest = line[2:].split(" | ", 1)
        lines[i] = f"| {model} | {100 * accuracies[model]:.1f}% | {rest}"
    return "\n".join(lines)


def architecture_tables(folder=None, accuracies: dict[str, float] | None = None) -> dict[str, str]:
    """The committed study of the paper's architectures trained here (``results/alignment/architectures``: T = 0.3
    for agreement, transfer and Focus, pullback-gradient cosines at T = 0.3 and 1; ``T1/``: the same at T = 1)
    as Markdown: ``similarity`` (with ``accuracies`` when given), ``comparisons`` (both temperatures side by
    side), ``focus`` (T = 0.3) and ``focus_T1``."""
    folder = RESULTS / "alignment" / "architectures" if folder is None else Path(folder)
    low, high = load_results(folder), load_results(folder / "T1")
    return {"similarity": (similarity_table(low["summary"]) if accuracies is None
                           else accuracy_similarity_table(low["summary"], accuracies)),
            "comparisons": comparison_by_study({"T = 0.3": (low["summary"], low["paired"]),
                                                "T = 1": (high["summary"], high["paired"])}),
            "focus": focus_table(low["summary"]), "focus_T1": focus_table(high["summary"])}
