"""The path-stability study (the paper's Hypothesis 1), end to end, resumable.

    python -m utils.study --data ../shared/data/imagenette2-224      # or set IMAGENETTE_ROOT

Hypothesis 1: the ReLU gates ``1[z > 0]`` of a network settle early in training, after which it acts as a
fixed kernel machine over its highly excited paths (the excitation kernel, Eq. 23). On checkpoints of one
training run (``utils.train``; default ``data/checkpoints/seed0``) and a control run with another seed
(default ``data/checkpoints/seed1``; whatever epochs it has so far), this writes to ``--out``:

* ``jaccard.csv``: Jaccard overlap of the active units, averaged over the 12 ReLU call sites, checkpoint s x t;
  ``jaccard_vs_final_by_site.csv``: per site, each checkpoint against the last;
* ``cross_{hard,soft}_{accuracy,pearson,agreement}.csv``: ``f_pi^(t)``, the weights of checkpoint t (columns)
  with every gate taken from checkpoint s (rows): hard ``1[z_s > 0]`` or soft ``sigmoid(z_s / T)``; its top-1
  accuracy, the Pearson correlation of its true-class logit with that of ``f^(t)``, and how often its top-1
  class is ``f^(t)``'s;
* ``controls.csv``: per checkpoint t, the weights of t with (a) the gates of the seed-1 run at the same epoch
  (hard and soft) and (b) random hard gates with t's own per-site, per-image number of active units;
* ``kernel_knn.csv``: 1/5/10-nearest-neighbour accuracy on the val images, from a class-balanced train subset,
  of the input cosine ``<x, x'>``, the hard and soft excitation kernels (Eq. 23, cosine form) and the cosine of
  the penultimate features, at a few checkpoints, with each classifier's agreement with the network;
* ``summary.csv`` (one row per checkpoint), ``config.json``, ``timings.csv`` (seconds per piece), and
  ``parts/`` (per-image results of each piece: a re-run skips every piece already there).

:func:`load_study` reads these back as numpy arrays and lists of dicts; :func:`plot_study` draws the
heatmaps into ``media/stability/``.

Defaults and why (45-minute budget on the 2-core CPU): everything runs at 112px, the resolution of the first
six training epochs, which the hypothesis is about; there the final model scores ~81% on val instead of 87%
at 224px (measured on 300 val images: 81% at 112, 83% at 128, 88% at 160). Measured cost per image at
112px, one thread, while a training run held the other core: a forward pass 14 ms, recording the gates 19 ms,
a cross-gated pass 15 ms (at 128px 19/25/20 ms, at 160px 34/45/33 ms). The s x t matrices dominate: with S
checkpoints, hard and soft, ``2 S^2`` cross-gated passes per image, so S = 9 checkpoints (0, 0.25, 0.5,
0.75, 1, 2, 4, 8, 16: every quarter over the first epoch, then doubling) and 500 val images. The
kernels take ``N + 2 M`` gate passes and ``2 N M units`` multiply-adds per checkpoint, so a 1,000-image
train subset (100 per class) and three checkpoints (0, 1, 16). Measured: 30 minutes for the whole default study
(``timings.csv`` has seconds per piece).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.imagenette import data_root_from_env, imagenette_files, load_image
from ..analysis.gating import input_kernel
from ..paths import CHECKPOINTS, MEDIA, REPO, RESULTS
from .records import check_settings, read_csv, write_csv
from ..analysis.stability import (cross_gated_predictions, cross_gating_metrics, cross_gating_rows, excitation_kernels,
                        jaccard_matrix, kernel_knn_predict, list_checkpoints, load_checkpoint, penultimate_features)

DEFAULT_EPOCHS = (0, 0.25, 0.5, 0.75, 1, 2, 4, 8, 16)
DEFAULT_KERNEL_EPOCHS = (0, 1, 16)
KNN_K = (1, 5, 10)
KERNELS = ("input", "hard_path", "soft_path", "penultimate")
# Settings that change what a piece holds: a re-run with other values would mix incompatible pieces.
MEASUREMENT_KEYS = ("images", "seed", "resolution", "temperature", "gate", "epochs", "kernel_epochs",
                    "kernel_train", "knn_k")


def _tag(epoch: float) -> str:
    return f"{epoch:05.2f}"


def seeded_subset(root, split: str, n: int, seed: int, balanced: bool = False) -> list[tuple[str, int]]:
    """``n`` ``(path, label)`` pairs of a split: the first n of a seeded permutation of torchvision's order,
    or with ``balanced`` the first ``n // 10`` of each class in that permutation (returned in permutation order)."""
    files = imagenette_files(root, split)
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    if not balanced:
        return [files[i] for i in order[:n]]
    per_class, taken, picked = n // 10, [0] * 10, []
    for i in order:
        if taken[files[i][1]] < per_class:
            taken[files[i][1]] += 1
            picked.append(files[i])
    return picked


def _save(path: Path, arrays: dict) -> None:
    """Write a piece atomically, so an interrupted run never leaves half a file that a re-run would trust."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)


class _Run:
    """Holds the settings, decodes images and loads checkpoints only when a missing piece needs them."""

    def __init__(self, cfg: dict, data, checkpoints, control, out, progress: bool):
        self.cfg, self.data, self.out, self.progress = cfg, Path(data), Path(out), progress
        self.parts = self.out / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        self.main = dict(list_checkpoints(checkpoints))
        wanted = sorted(set(cfg["epochs"]) | set(cfg["kernel_epochs"]))
        missing = [e for e in wanted if e not in self.main]
        if missing:
            raise FileNotFoundError(f"{checkpoints} has no checkpoint for epochs {missing}; it has {sorted(self.main)}")
        ctrl = Path(control) if control else None
        self.control = dict(list_checkpoints(ctrl)) if ctrl is not None and ctrl.is_dir() else {}
        self.control_epochs = [e for e in cfg["epochs"] if e in self.control]
        absent = [e for e in cfg["epochs"] if e not in self.control]
        if absent:
            print(f"control run {ctrl}: {'no checkpoints' if not self.control else 'partial'}; seed controls for "
                  f"epochs {self.control_epochs or 'none'}, none yet for {absent} (re-run later to add them)",
                  file=sys.stderr)
        self.models: dict = {}

    def piece(self, name: str, compute) -> dict:
        path = self.parts / f"{name}.npz"
        if path.exists():
            with np.load(path) as f:
                return dict(f)
        start = time.perf_counter()
        arrays = compute()
        _save(path, arrays)
        with open(self.out / "timings.csv", "a", newline="") as f:
            csv.writer(f).writerow([name, f"{time.perf_counter() - start:.1f}", torch.get_num_threads()])
        return {k: np.asarray(v) for k, v in arrays.items()}

    def model(self, run: str, epoch: float):
        key = (run, epoch)
        if key not in self.models:
            model = load_checkpoint((self.main if run == "main" else self.control)[epoch])
            self.models[key] = model.to(memory_format=torch.channels_last)  # ~1.5x faster convolutions on CPU
        return self.models[key]

    def _decode(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.cfg["resolution"]
        x = torch.stack([load_image(self.data / row["path"], r) for row in rows])
        return x.contiguous(memory_format=torch.channels_last), torch.tensor([int(row["label"]) for row in rows])

    @cached_property
    def val(self):
        return self._decode(read_csv(self.out / "val_images.csv"))

    @cached_property
    def train(self):
        return self._decode(read_csv(self.out / "train_images.csv"))

    def bar(self, names, desc):
        done = sum((self.parts / f"{n}.npz").exists() for n in names)
        return tqdm(names, desc=desc, disable=not self.progress,
                    postfix={"already done": done} if done else None)


def run_study(data=None, checkpoints=CHECKPOINTS / "seed0",
              control=CHECKPOINTS / "seed1", out=RESULTS / "stability",
              images: int = 500, epochs=DEFAULT_EPOCHS, resolution: int = 112, temperature: float = 0.3,
              kernel_epochs=DEFAULT_KERNEL_EPOCHS, kernel_train: int = 1000, seed: int = 0, chunk_size: int = 50,
              media=MEDIA / "stability", progress: bool = True) -> dict:
    """Compute every missing piece, then write the CSVs (and figures into ``media`` unless None).

    Returns :func:`load_study` of ``out``. ``epochs`` / ``kernel_epochs`` must all exist in ``checkpoints``;
    ``control`` may be missing or partial. See the module docstring for what is measured.
    """
    data = data or data_root_from_env()
    if data is None:
        raise ValueError("no Imagenette: pass --data or set IMAGENETTE_ROOT (e.g. ../shared/data/imagenette2-224)")
    data = Path(data)
    out = Path(out)
    epochs = sorted(float(e) for e in epochs)
    cfg = {"images": images, "seed": seed, "resolution": resolution, "temperature": temperature, "gate": "sigmoid",
           "epochs": epochs, "kernel_epochs": sorted(float(e) for e in kernel_epochs), "kernel_train": kernel_train,
           "knn_k": list(KNN_K), "checkpoints": _shown(checkpoints), "control": _shown(control)}
    check_settings(out, cfg, MEASUREMENT_KEYS)
    run = _Run(cfg, data, checkpoints, control, out, progress)
    for name, files in (("val_images", seeded_subset(data, "val", images, seed)),
                        ("train_images", seeded_subset(data, "train", kernel_train, seed, balanced=True))):
        write_csv(out / f"{name}.csv", [{"path": Path(p).relative_to(data).as_posix(), "label": y} for p, y in files])
    T, c = temperature, chunk_size
    main = lambda: [run.model("main", e) for e in epochs]  # noqa: E731 - loaded only if a piece needs them

    for e in run.bar(epochs, "cross-gating rows s"):
        run.piece(f"row_s{_tag(e)}", lambda: _row(cross_gating_rows(run.model("main", e), main(), *run.val, (None, T),
                                                                    chunk_size=c)))
    for _ in run.bar(["jaccard"], "gate Jaccard"):
        run.piece("jaccard", lambda: {"per_site": jaccard_matrix(main(), run.val[0], c, per_site=True)})
    for e in run.bar(epochs, "random-gate control"):
        gen = torch.Generator().manual_seed(seed * 100_003 + round(e * 100))
        run.piece(f"random_e{_tag(e)}", lambda: cross_gated_predictions(
            run.model("main", e), [run.model("main", e)], *run.val, None, chunk_size=c, control=gen))
    for e in run.bar(run.control_epochs, "seed control"):
        run.piece(f"seed_e{_tag(e)}", lambda: _seed_control(run, e, T, c))
    run.piece("kernel_input", lambda: _knn_predictions(input_kernel(run.val[0], run.train[0]), run.train[1]))
    for e in run.bar(cfg["kernel_epochs"], "kernel kNN"):
        run.piece(f"kernel_e{_tag(e)}", lambda: _kernel_piece(run, e, T, c))

    write_tables(out, cfg)
    if media is not None:
        plot_study(out, media)
    return load_study(out)


def _shown(path) -> str:
    """A path for config.json: relative to the repository when inside it, so the committed file names no machine."""
    path = Path(path).resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def _row(rows: dict) -> dict:
    """A :func:`cross_gating_rows` result for temperatures (None, T) as flat arrays: hard_* and soft_*."""
    flat = {"own_pred": rows["own_pred"], "own_true": rows["own_true"]}
    for k, kind in enumerate(("hard", "soft")):
        flat.update({f"{kind}_pred": rows["pred"][k], f"{kind}_true": rows["true"][k], f"{kind}_active": rows["active"][k]})
    return flat


def _seed_control(run: _Run, e: float, temperature: float, chunk_size: int) -> dict:
    """The weights of the main run at epoch e with the gates of the control run at e (hard and soft)."""
    mine, other = run.model("main", e), run.model("control", e)
    rows = cross_gating_rows(other, [mine], *run.val, (None, temperature), chunk_size=chunk_size)
    return {"hard_pred": rows["pred"][0, 0], "hard_true": rows["true"][0, 0], "soft_pred": rows["pred"][1, 0],
            "soft_true": rows["true"][1, 0], "own_pred": rows["own_pred"],
            "jaccard_per_site": jaccard_matrix([mine, other], run.val[0], chunk_size, per_site=True)[0, 1]}


def _knn_predictions(kernel: torch.Tensor, train_labels: torch.Tensor) -> dict:
    return {"pred": torch.stack([kernel_knn_predict(kernel, train_labels, k) for k in KNN_K])}


def _kernel_piece(run: _Run, e: float, temperature: float, chunk_size: int) -> dict:
    """kNN predictions (len(KNN_K), N) of the hard and soft excitation kernels and the penultimate cosine."""
    model = run.model("main", e)
    (xv, _), (xt, yt) = run.val, run.train
    # All val gates held at once (1.6 GB per kind at 112px for 500 images): the train images pass only once.
    hard, soft = excitation_kernels(model, xv, xt, (None, temperature), chunk_size=chunk_size, block_size=500)
    fv, ft = penultimate_features(model, xv, chunk_size), penultimate_features(model, xt, chunk_size)
    with torch.no_grad():
        model_pred = model.fc(fv).argmax(1)
    return {"hard_path": _knn_predictions(hard, yt)["pred"], "soft_path": _knn_predictions(soft, yt)["pred"],
            "penultimate": _knn_predictions(input_kernel(fv, ft), yt)["pred"], "model_pred": model_pred}


# --- tables ---------------------------------------------------------------------------------------------

def _load(out: Path, name: str) -> dict | None:
    path = out / "parts" / f"{name}.npz"
    if not path.exists():
        return None
    with np.load(path) as f:
        return {k: torch.from_numpy(v) for k, v in f.items()}


def _write_matrix(path: Path, m, rows, columns, corner: str = "gates from s \\ weights of t") -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([corner] + list(columns))
        for label, values in zip(rows, np.asarray(m)):
            w.writerow([label] + [f"{v:.6f}" for v in values])


def write_tables(out, cfg: dict) -> None:
    """Assemble the CSVs in ``out`` from its ``parts/`` (cheap; rerun whenever pieces were added)."""
    out, epochs = Path(out), cfg["epochs"]
    S = len(epochs)
    nan = float("nan")
    labels = torch.tensor([int(r["label"]) for r in read_csv(out / "val_images.csv")])
    rows = [_load(out, f"row_s{_tag(e)}") for e in epochs]
    own_pred, own_true = torch.stack([r["own_pred"] for r in rows]), torch.stack([r["own_true"] for r in rows])
    own_acc = (own_pred == labels).double().mean(-1)

    per_site = _load(out, "jaccard")["per_site"]
    names = [f"{e:g}" for e in epochs]
    _write_matrix(out / "jaccard.csv", per_site.mean(-1), names, names, "checkpoint s \\ checkpoint t")
    _write_matrix(out / "jaccard_vs_final_by_site.csv", per_site[:, -1], names,
                  [f"site {i}" for i in range(per_site.shape[-1])], "checkpoint \\ ReLU call site")

    cross = {}
    for kind in ("hard", "soft"):
        m = cross_gating_metrics(torch.stack([r[f"{kind}_pred"] for r in rows]),
                                 torch.stack([r[f"{kind}_true"] for r in rows]), own_pred, own_true, labels)
        cross[kind] = m
        for key, name in (("accuracy", "accuracy"), ("correlation", "pearson"), ("agreement", "agreement")):
            _write_matrix(out / f"cross_{kind}_{name}.csv", m[key], names, names)
    active = [r["hard_active"].mean().item() for r in rows]
    # What Jaccard two *independent* gate patterns with these per-site active fractions would have:
    # p q / (p + q - p q) per site, the level of "no shared structure at all".
    fractions = torch.stack([r["hard_active"].double() for r in rows])
    pf = fractions[-1]
    chance_vs_final = (fractions * pf / (fractions + pf - fractions * pf)).mean(-1)

    controls = []
    for t, e in enumerate(epochs):
        rnd = _load(out, f"random_e{_tag(e)}")
        rm = cross_gating_metrics(rnd["pred"][0], rnd["true"][0], own_pred[t], own_true[t], labels)
        row = {"epoch": e, "own_accuracy": own_acc[t].item(), "active_fraction": active[t],
               "random_hard_accuracy": rm["accuracy"].item(), "random_hard_pearson": rm["correlation"].item(),
               "random_hard_agreement": rm["agreement"].item()}
        seed = _load(out, f"seed_e{_tag(e)}")  # None until the control run has reached epoch e
        row["control_own_accuracy"] = nan if seed is None else (seed["own_pred"] == labels).double().mean().item()
        row["control_jaccard"] = nan if seed is None else seed["jaccard_per_site"].mean().item()
        for kind in ("hard", "soft"):
            sm = None if seed is None else cross_gating_metrics(seed[f"{kind}_pred"], seed[f"{kind}_true"],
                                                                own_pred[t], own_true[t], labels)
            for key, name in (("accuracy", "accuracy"), ("correlation", "pearson"), ("agreement", "agreement")):
                row[f"control_{kind}_{name}"] = nan if sm is None else sm[key].item()
        controls.append(row)
    write_csv(out / "controls.csv", controls, decimals=6)

    knn = []
    base = _load(out, "kernel_input")
    for e in cfg["kernel_epochs"]:
        piece = _load(out, f"kernel_e{_tag(e)}")
        model_pred = piece["model_pred"]
        for kernel in KERNELS:
            pred = base["pred"] if kernel == "input" else piece[kernel]
            for i, k in enumerate(KNN_K):
                knn.append({"epoch": e, "kernel": kernel, "k": k, "accuracy": (pred[i] == labels).double().mean().item(),
                            "agreement_with_model": (pred[i] == model_pred).double().mean().item(),
                            "model_accuracy": (model_pred == labels).double().mean().item()})
    write_csv(out / "kernel_knn.csv", knn, decimals=6)

    final = S - 1
    summary = []
    for t, e in enumerate(epochs):
        row = {"epoch": e, "own_accuracy": own_acc[t].item(), "active_fraction": active[t],
               "jaccard_vs_final": per_site[t, final].mean().item(),
               "jaccard_vs_previous": per_site[t, t - 1].mean().item() if t else nan,
               "jaccard_vs_final_if_independent": chance_vs_final[t].item()}
        for kind in ("hard", "soft"):
            m = cross[kind]
            row[f"{kind}_final_gates_accuracy"] = m["accuracy"][final, t].item()
            row[f"{kind}_final_gates_pearson"] = m["correlation"][final, t].item()
            row[f"{kind}_gates_on_final_accuracy"] = m["accuracy"][t, final].item()
            row[f"{kind}_gates_on_final_pearson"] = m["correlation"][t, final].item()
        c = controls[t]
        row.update({k: c[k] for k in ("random_hard_accuracy", "random_hard_pearson", "control_jaccard",
                                      "control_hard_accuracy", "control_hard_pearson", "control_soft_accuracy",
                                      "control_soft_pearson")})
        for kernel in KERNELS:
            hit = [r["accuracy"] for r in knn if r["epoch"] == e and r["kernel"] == kernel and r["k"] == KNN_K[0]]
            row[f"knn{KNN_K[0]}_{kernel}"] = hit[0] if hit else nan
        summary.append(row)
    write_csv(out / "summary.csv", summary, decimals=6)


# --- reading back and plotting --------------------------------------------------------------------------

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
    (lists of row dicts), ``"timings"`` (piece -> seconds, summed over runs that computed it).
    """
    out = Path(results_dir)
    cfg = json.loads((out / "config.json").read_text())
    study = {"config": cfg, "epochs": cfg["epochs"],
             "jaccard": _read_matrix(out / "jaccard.csv")[0],
             "jaccard_vs_final_by_site": _read_matrix(out / "jaccard_vs_final_by_site.csv")[0],
             "cross": {kind: {m: _read_matrix(out / f"cross_{kind}_{m}.csv")[0]
                              for m in ("accuracy", "pearson", "agreement")} for kind in ("hard", "soft")},
             "kernel_knn": [_numbers(r) for r in read_csv(out / "kernel_knn.csv")],
             "summary": [_numbers(r) for r in read_csv(out / "summary.csv")]}
    controls = [_numbers(r) for r in read_csv(out / "controls.csv")]
    study["controls"] = {k: np.array([r[k] for r in controls], dtype=float) for k in controls[0]}
    timings: dict[str, float] = {}
    if (out / "timings.csv").exists():
        with open(out / "timings.csv", newline="") as f:
            for name, seconds, *_ in csv.reader(f):
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


def _heatmap(ax, m: np.ndarray, rows, columns, title: str, xlabel: str, ylabel: str, vmin=None, vmax=None,
             cmap="viridis"):
    import matplotlib.pyplot as plt

    image = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    lo, hi = image.get_clim()
    for (i, j), v in np.ndenumerate(m):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}".lstrip("0") if 0 <= v < 1 else f"{v:.2f}", ha="center", va="center",
                    fontsize=6, color="white" if v < (lo + hi) / 2 else "black")
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.03)


def plot_study(results_dir=RESULTS / "stability", media_dir=MEDIA / "stability") -> list[Path]:
    """Draw the study's figures from its CSVs into ``media_dir``; returns the PNG paths.

    ``jaccard.png`` (gate overlap s x t, and per ReLU call site against the final checkpoint),
    ``cross_gating.png`` (accuracy and true-class-logit Pearson of ``f_pi^(t)`` with hard and soft gates of s),
    ``controls.png`` (per checkpoint t: its own accuracy, the final gates, the seed-1 gates and random gates on
    its weights), ``kernel_knn.png`` (nearest-neighbour accuracy of each kernel).
    """
    import matplotlib.pyplot as plt

    st, media = load_study(results_dir), Path(media_dir)
    media.mkdir(parents=True, exist_ok=True)
    cfg, names = st["config"], [f"{e:g}" for e in st["epochs"]]
    where = f"{cfg['images']} Imagenette val images at {cfg['resolution']}px"
    paths = []

    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 5.6), gridspec_kw={"width_ratios": [1, 1.1]})
    _heatmap(a, st["jaccard"], names, names, "Jaccard of active units (mean over ReLU call sites)",
             "checkpoint t (epoch)", "checkpoint s (epoch)", 0, 1)
    sites = st["jaccard_vs_final_by_site"]
    _heatmap(b, sites.T, [str(i) for i in range(sites.shape[1])], names,
             f"Jaccard against the final checkpoint (epoch {names[-1]}), per site", "checkpoint (epoch)",
             "ReLU call site (input -> output)", 0, 1)
    fig.suptitle(f"Hypothesis 1: do the gates settle early? ({where})")
    paths.append(_savefig(fig, media / "jaccard.png"))

    fig, axes = plt.subplots(2, 2, figsize=(14, 12))
    for row, kind in zip(axes, ("hard", "soft")):
        gate = "1[z_s > 0]" if kind == "hard" else f"sigmoid(z_s / {cfg['temperature']:g})"
        _heatmap(row[0], st["cross"][kind]["accuracy"], names, names, f"top-1 accuracy, gates {gate}",
                 "weights of checkpoint t (epoch)", "gates from checkpoint s (epoch)", 0, 1)
        _heatmap(row[1], st["cross"][kind]["pearson"], names, names,
                 f"Pearson(true-class logit of f_pi^(t), of f^(t)), gates {gate}",
                 "weights of checkpoint t (epoch)", "gates from checkpoint s (epoch)", -1, 1, "RdBu_r")
    fig.suptitle(f"Cross-gating: weights of t, every ReLU gate taken from s ({where})")
    paths.append(_savefig(fig, media / "cross_gating.png"))

    c, x = st["controls"], np.arange(len(names))
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 5))
    for ax, key, own in ((a, "accuracy", True), (b, "pearson", False)):
        if own:
            ax.plot(x, c["own_accuracy"], "k-o", label="f^(t) itself")
        for kind, style in (("hard", "-s"), ("soft", "--s")):
            ax.plot(x, st["cross"][kind][key][-1], style, color="tab:blue",
                    label=f"gates of the final checkpoint ({kind})")
            ax.plot(x, c[f"control_{kind}_{key}"], style, color="tab:orange",
                    label=f"gates of the seed-1 run at the same epoch ({kind})")
        ax.plot(x, c[f"random_hard_{key}"], ":^", color="0.4", label="random gates, same sparsity (hard)")
        ax.set_xticks(x, names)
        ax.set_xlabel("weights of checkpoint t (epoch)")
        ax.set_ylabel("top-1 accuracy" if own else "Pearson with f^(t)'s true-class logit")
        ax.grid(alpha=0.3)
    a.axhline(0.1, color="0.7", lw=0.8)
    a.set_title("accuracy of the weights of t with other gates")
    b.set_title("how well the true-class logit of f^(t) is kept")
    a.legend(fontsize=7)
    fig.suptitle(f"Cross-gating against controls ({where})")
    paths.append(_savefig(fig, media / "controls.png"))

    knn = [r for r in st["kernel_knn"] if r["k"] == cfg["knn_k"][0]]
    kepochs = sorted({r["epoch"] for r in knn})
    fig, ax = plt.subplots(figsize=(2.2 * len(kepochs) + 3, 4.5))
    width = 0.8 / len(KERNELS)
    for i, kernel in enumerate(KERNELS):
        acc = [next(r["accuracy"] for r in knn if r["epoch"] == e and r["kernel"] == kernel) for e in kepochs]
        ax.bar(np.arange(len(kepochs)) + (i - 1.5) * width, acc, width, label=kernel.replace("_", " "))
    model_acc = [next(r["model_accuracy"] for r in knn if r["epoch"] == e) for e in kepochs]
    ax.plot(np.arange(len(kepochs)), model_acc, "k_", ms=40, mew=2, label="the network itself")
    ax.set_xticks(range(len(kepochs)), [f"epoch {e:g}" for e in kepochs])
    ax.set_ylabel(f"{cfg['knn_k'][0]}-NN top-1 accuracy"), ax.set_ylim(0, 1), ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Kernel nearest neighbours: {cfg['kernel_train']} train images (balanced) -> {where}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", markerscale=0.25)
    paths.append(_savefig(fig, media / "kernel_knn.png"))
    return paths


def _savefig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="Imagenette root with train/ and val/ (default $IMAGENETTE_ROOT)")
    parser.add_argument("--checkpoints", default=str(CHECKPOINTS / "seed0"))
    parser.add_argument("--control", default=str(CHECKPOINTS / "seed1"),
                        help="checkpoints of a run with another seed (missing or partial: uses the epochs it has)")
    parser.add_argument("--images", type=int, default=500, help="seeded Imagenette val images")
    parser.add_argument("--epochs", type=_floats, default=list(DEFAULT_EPOCHS),
                        help="checkpoint epochs, e.g. '0 0.5 1 16' (default: %(default)s)")
    parser.add_argument("--kernel-epochs", type=_floats, default=list(DEFAULT_KERNEL_EPOCHS),
                        help="checkpoints for the kernel classifiers (default: %(default)s)")
    parser.add_argument("--kernel-train", type=int, default=1000, help="class-balanced train images for kNN")
    parser.add_argument("--resolution", type=int, default=112, help="image side for every measurement")
    parser.add_argument("--temperature", type=float, default=0.3, help="soft gates sigmoid(z / T)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image subsets and random gates")
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--out", default=str(RESULTS / "stability"))
    parser.add_argument("--media", default=str(MEDIA / "stability"), help="'' to skip the figures")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    study = run_study(args.data, args.checkpoints, args.control, args.out, args.images, args.epochs, args.resolution,
                      args.temperature, args.kernel_epochs, args.kernel_train, args.seed, args.chunk_size,
                      args.media or None)
    print(f"done in {time.perf_counter() - start:.0f} s; tables in {args.out}")
    for row in study["summary"]:
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})


if __name__ == "__main__":
    main()
