"""Markdown tables of the Semantic Pullbacks study's page, from :mod:`.report` and :mod:`.reference` alone."""
from __future__ import annotations

from collections import Counter

from . import reference
from .report import FOCUS_METRIC, LOWER_IS_BETTER, METRICS, PAIRS, published_difference, summary, verdicts

ROWS = ("SoftPullback", "PullbackAscent", "SmoothPullback", "FusionPullback", "Gradient", "GradientAscent",
        "SmoothGrad", "FusionGrad", "GradientShap", "IntegratedGradients", "DeepLift", "GuidedGradCam",
        "PullbackShap", "IntegratedPullbacks", "PbDeepLift", "GuidedPbCam")
OUTCOME = {"holds": "holds", "reversed": "**reversed**", "unresolved": "unresolved", "better": "better",
           "worse": "worse", "too few images": "too few images"}


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def _number(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 100 or (x != 0 and abs(x) < 1e-3) else f"{x:.3f}"


def _title(metric: str) -> str:
    return f"{metric} {'↓' if metric in LOWER_IS_BETTER else '↑'}"


def counts(scores: list[dict]) -> dict[str, int]:
    """Images (or mosaics) scored per part kind."""
    return {kind: len({r["item"] for r in scores if r["kind"] == kind}) for kind in ("single", "smooth", "focus")}


def scored(scores: list[dict], config: dict) -> str:
    """How many of the images (mosaics) a run's ``config`` asked for are scored, per part kind; kinds it asked
    none of are left out ("17 of 200 images for the single-pass rows, 17 of 200 mosaics for Focus")."""
    n = counts(scores)
    kinds = (("single", "images", "images for the single-pass rows"),
             ("smooth", "smooth_images", "images for the smoothing and fusion rows"),
             ("focus", "mosaics", "mosaics for Focus"))
    return ", ".join(f"{n[kind]} of {config[key]} {what}" for kind, key, what in kinds if config[key])


def left_out(config: dict) -> str:
    """A sentence naming the paper's metrics a run's ``config`` leaves out (``--metrics``); empty if none."""
    missing = [m for m in reference.METRICS if m not in config.get("metrics", reference.METRICS)]
    return f"This run leaves out {', '.join(missing)} (`--metrics`)." if missing else ""


def score_table(scores: list[dict]) -> str:
    """The paper-shaped table: mean ± std over images per explainer and metric, pullback rows in bold, the
    number of images per cell where the column's counts differ."""
    cells = summary(scores)
    metrics = [m for m in METRICS if any(k[1] == m for k in cells)]
    rows = []
    for name in ROWS:
        if not any((name, m) in cells for m in metrics):
            continue
        row = [f"**{name}**" if name in dict(PAIRS) else name]
        for m in metrics:
            cell = cells.get((name, m))
            row.append("–" if cell is None else f"{_number(cell[0])} ± {_number(cell[1])} ({cell[2]})")
        rows.append(row)
    return _table(["explainer (n)"] + [_title(m) for m in metrics], rows)


def published_table(paper_model: str) -> str:
    """The paper's numbers for ``paper_model`` in the same shape (n = 1,000 images; Focus n = 500 mosaics)."""
    table, focus = reference.TABLE[paper_model], reference.FOCUS.get(paper_model, {})
    metrics = list(reference.METRICS) + ([FOCUS_METRIC] if focus else [])
    rows = []
    for name in ROWS:
        if name not in table and name not in focus:
            continue
        cells = [table.get(name, {}).get(m) for m in reference.METRICS] + ([focus.get(name)] if focus else [])
        rows.append([name] + ["–" if c is None else f"{_number(c[0])} ± {_number(c[1])}" for c in cells])
    return _table(["explainer"] + [_title(m) for m in metrics], rows)


def paired_table(model: str, scores: list[dict]) -> str:
    """Each pullback row minus the row it softens, per metric: our mean difference [95% CI] (pairs), the paper's
    difference of means, and the verdict on the paper's ordering."""
    paper = reference.COUNTERPART.get(model) or "resnet50"
    rows = []
    for v in verdicts(model, scores):
        published = published_difference(model, v["a"], v["b"], v["metric"])
        rows.append([f"{v['a']} − {v['b']}", _title(v["metric"]),
                     f"{_number(v['mean'])} [{_number(v['low'])}, {_number(v['high'])}] ({v['n']})",
                     "–" if published is None else _number(published), OUTCOME[v["outcome"]]])
    return _table(["pair", "metric", "ours: mean difference [95% CI] (n)", f"paper ({paper})", "verdict"], rows)


def verdict_lines(model: str, scores: list[dict]) -> list[str]:
    """One line per pair: on how many metrics the paper's ordering holds, is reversed or unresolved, naming the
    reversed metrics, and the number of images it rests on."""
    lines = []
    by_pair: dict[tuple, list[dict]] = {}
    for v in verdicts(model, scores):
        by_pair.setdefault((v["a"], v["b"]), []).append(v)
    for (a, b), found in by_pair.items():
        tally = Counter(v["outcome"] for v in found)
        reversed_ = [v["metric"] for v in found if v["outcome"] == "reversed"]
        images = sorted({v["n"] for v in found})
        shown = ", ".join(f"{count} {outcome}" for outcome, count in tally.most_common())
        extra = f"; reversed on {', '.join(reversed_)}" if reversed_ else ""
        lines.append(f"{a} vs {b}: {shown} of {len(found)} metrics{extra} "
                     f"(n = {'–'.join(map(str, (images[0], images[-1]))) if len(images) > 1 else images[0]}).")
    return lines


def timing_table(timing: list[dict]) -> str:
    """Seconds per image (mosaic) by part kind: each explainer's attribution, each metric over all explainers."""
    rows = [[r["kind"], r["explainer"], f"{float(r['seconds_per_image']):.1f}", str(r["n"])] for r in timing]
    return _table(["part kind", "explainer or metric", "seconds per image", "n"], rows)
