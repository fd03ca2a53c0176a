"""Reading the path-stability study back: its tables as numpy arrays and row dicts, and its findings in
plain sentences. Works from the CSV files alone (``results/stability/``): no checkpoints, images or
compute modules needed."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ...paths import RESULTS
from ..records import read_csv

KNN_K = (1, 5, 10)
KERNELS = ("input", "hard_path", "soft_path", "penultimate")
METRICS = ("accuracy", "pearson", "agreement")


def _read_matrix(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return np.array([[float(v) for v in r[1:]] for r in rows[1:]]), [r[0] for r in rows[1:]], rows[0][1:]


def _numbers(row: dict) -> dict:
    def parse(v):
        try:
            return int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            return v
    return {k: parse(v) for k, v in row.items()}


def load_study(results_dir=RESULTS / "stability") -> dict:
    """The study's tables as plain Python / numpy, from the CSVs alone (no checkpoints or images needed).

    Returns a dict: ``"config"`` (the settings), ``"epochs"`` (S floats), ``"jaccard"`` (S, S),
    ``"jaccard_vs_final_by_site"`` (S, sites), ``"cross"[kind][metric]`` (S, S) for kind in hard / soft and
    metric in accuracy / pearson / agreement (rows: gates from s, columns: weights of t), ``"controls"``
    (column -> (S,) array, NaN where the control run had no checkpoint), ``"kernel_knn"`` and ``"summary"``
    (lists of row dicts), ``"timings"`` (piece -> seconds, summed over the ranks and runs that computed it:
    the ``timing_rank<r>.csv`` files).
    """
    out = Path(results_dir)
    cfg = json.loads((out / "config.json").read_text())
    study = {"config": cfg, "epochs": cfg["epochs"],
             "jaccard": _read_matrix(out / "jaccard.csv")[0],
             "jaccard_vs_final_by_site": _read_matrix(out / "jaccard_vs_final_by_site.csv")[0],
             "cross": {kind: {m: _read_matrix(out / f"cross_{kind}_{m}.csv")[0]
                              for m in METRICS} for kind in ("hard", "soft")},
             "kernel_knn": [_numbers(r) for r in read_csv(out / "kernel_knn.csv")],
             "summary": [_numbers(r) for r in read_csv(out / "summary.csv")]}
    controls = [_numbers(r) for r in read_csv(out / "controls.csv")]
    study["controls"] = {k: np.array([r[k] for r in controls], dtype=float) for k in controls[0]}
    timings: dict[str, float] = {}
    for path in sorted(out.glob("timing_rank*.csv")):
        with open(path, newline="") as f:
            for name, seconds in csv.reader(f):
                timings[name] = timings.get(name, 0.0) + float(seconds)
    study["timings"] = timings
    return study


def findings(study: dict, settled: float = 0.9) -> list[str]:
    """Hypothesis 1 in numbers: plain sentences computed from a :func:`load_study` result.

    Nothing here is hard-coded: every number is read from the study's tables, so the notebook's verdict
    follows the data. ``settled`` is the Jaccard overlap with the final gates that counts as "settled".
    """
    rows = {r["epoch"]: r for r in study["summary"]}
    epochs, c = study["epochs"], study["controls"]
    final, last = epochs[-1], len(epochs) - 1
    first = max([e for e in epochs if 0 < e <= 1] or epochs[1:2])  # "early": the end of the first epoch
    t1 = epochs.index(first)
    hard = study["cross"]["hard"]
    ctrl = [i for i, e in enumerate(epochs) if np.isfinite(c["control_hard_accuracy"][i]) and e > 0]
    lines = []

    overlap = ", ".join(f"{e:g}: {rows[e]['jaccard_vs_final']:.2f}" for e in epochs[:-1])
    reached = next(e for e in epochs if rows[e]["jaccard_vs_final"] >= settled)
    lines.append(f"Gate overlap (Jaccard of active units) with the final checkpoint, by epoch: {overlap}. "
                 f"Independent gates with the same sparsity would overlap {rows[first]['jaccard_vs_final_if_independent']:.2f}"
                 + (f"; the seed-1 run's gates overlap {c['control_jaccard'][ctrl[-1]]:.2f} at epoch "
                    f"{epochs[ctrl[-1]]:g}" if ctrl else "") + ".")
    lines.append(f"The overlap first reaches {settled:g} at epoch {reached:g} of {final:g}"
                 + (" (the final checkpoint itself)." if reached == final else ".")
                 + f" Between consecutive checkpoints it is {min(r['jaccard_vs_previous'] for r in study['summary'][1:]):.2f}"
                 f" to {max(r['jaccard_vs_previous'] for r in study['summary'][1:]):.2f}.")
    lines.append(f"Final gates on the weights of epoch {first:g}: top-1 {hard['accuracy'][last, t1]:.1%} against "
                 f"{c['own_accuracy'][t1]:.1%} for those weights with their own gates and {c['own_accuracy'][last]:.1%} "
                 f"for the final network; random gates of the same sparsity give {c['random_hard_accuracy'][t1]:.1%}"
                 + (f", the seed-1 run's gates {c['control_hard_accuracy'][t1]:.1%}" if t1 in ctrl else "") + ".")
    lines.append(f"Gates of epoch {first:g} on the final weights: top-1 {hard['accuracy'][t1, last]:.1%} "
                 f"(final gates: {hard['accuracy'][last, last]:.1%}); gates of epoch {epochs[-2]:g}: "
                 f"{hard['accuracy'][-2, last]:.1%}.")
    pearson = ", ".join(f"{e:g}: {hard['pearson'][last, t]:.2f}" for t, e in enumerate(epochs[:-1]))
    lines.append(f"Pearson correlation of the true-class logit of f^(t) with the final gates and with its own, by "
                 f"epoch t: {pearson}. Random gates give {_span(c['random_hard_pearson'][1:])} after initialisation"
                 + (f", the seed-1 gates {_span(c['control_hard_pearson'][ctrl])}" if ctrl else "")
                 + f"; at initialisation even random gates give {c['random_hard_pearson'][0]:.2f}, so epoch 0 "
                 "says nothing.")
    knn = {(r["epoch"], r["kernel"]): r for r in study["kernel_knn"] if r["k"] == study["config"]["knn_k"][0]}
    for e in sorted({e for e, _ in knn}):
        acc = {k: knn[(e, k)]["accuracy"] for k in KERNELS}
        lines.append(f"{study['config']['knn_k'][0]}-NN with the kernels of epoch {e:g}: input {acc['input']:.1%}, "
                     f"hard path kernel {acc['hard_path']:.1%}, soft path kernel {acc['soft_path']:.1%}, "
                     f"penultimate features {acc['penultimate']:.1%}; the network {knn[(e, 'input')]['model_accuracy']:.1%}.")
    return lines


def _span(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{np.nanmin(values):.2f} to {np.nanmax(values):.2f}"
