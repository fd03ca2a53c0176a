"""The study's CSV tables, assembled from its pieces (the parts of :func:`utils.experiments.runner.run_parts`
under ``<out>/parts/``, checked npz files; cheap, rerun whenever pieces were added)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...analysis.cross_gating import cross_gating_metrics
from ..records import read_csv, write_csv, write_rows
from ..training.checkpoints import epoch_tag
from .report import KERNELS, KNN_K

# Settings that change what a piece holds: a rerun with other values would mix incompatible pieces.
MEASUREMENT_KEYS = ("images", "seed", "resolution", "temperature", "gate", "epochs", "kernel_epochs",
                    "kernel_train", "knn_k", "data_root", "val_images_sha256", "train_images_sha256",
                    "checkpoints_sha256")
CROSS_KEYS = (("accuracy", "accuracy"), ("correlation", "pearson"), ("agreement", "agreement"))
NAN = float("nan")


def _write_matrix(path: Path, m, rows, columns, corner: str = "gates from s \\ weights of t") -> None:
    lines = [[corner] + list(columns)] + [[label] + [f"{v:.6f}" for v in values]
                                          for label, values in zip(rows, np.asarray(m))]
    write_rows(path, lines)


def write_tables(out, cfg: dict, pieces: dict) -> None:
    """Assemble the CSVs in ``out`` from ``pieces`` (piece name -> its arrays) and ``out/val_images.csv``."""
    out, epochs = Path(out), cfg["epochs"]
    labels = torch.tensor([int(r["label"]) for r in read_csv(out / "val_images.csv")])
    rows = [pieces[f"row_s{epoch_tag(e)}"] for e in epochs]
    own = {"pred": torch.stack([r["own_pred"] for r in rows]), "true": torch.stack([r["own_true"] for r in rows])}
    own["accuracy"] = (own["pred"] == labels).double().mean(-1)
    per_site = pieces["jaccard"]["per_site"]
    names = [f"{e:g}" for e in epochs]
    _write_matrix(out / "jaccard.csv", per_site.mean(-1), names, names, "checkpoint s \\ checkpoint t")
    _write_matrix(out / "jaccard_vs_final_by_site.csv", per_site[:, -1], names,
                  [f"site {i}" for i in range(per_site.shape[-1])], "checkpoint \\ ReLU call site")
    cross = {}
    for kind in ("hard", "soft"):
        cross[kind] = cross_gating_metrics(torch.stack([r[f"{kind}_pred"] for r in rows]),
                                           torch.stack([r[f"{kind}_true"] for r in rows]), own["pred"], own["true"],
                                           labels)
        for key, name in CROSS_KEYS:
            _write_matrix(out / f"cross_{kind}_{name}.csv", cross[kind][key], names, names)
    active = [r["hard_active"].mean().item() for r in rows]
    controls = _controls(pieces, epochs, own, labels, active)
    write_csv(out / "controls.csv", controls, decimals=6)
    knn = _kernel_rows(pieces, cfg["kernel_epochs"], labels)
    write_csv(out / "kernel_knn.csv", knn, decimals=6)
    summary = _summary(epochs, own, active, per_site, _chance_vs_final(rows), cross, controls, knn)
    write_csv(out / "summary.csv", summary, decimals=6)


def _chance_vs_final(rows: list[dict]) -> torch.Tensor:
    """The Jaccard two *independent* gate patterns with these per-site active fractions would have against the
    final checkpoint's: ``p q / (p + q - p q)`` per site, the level of "no shared structure at all"."""
    fractions = torch.stack([r["hard_active"].double() for r in rows])
    pf = fractions[-1]
    return (fractions * pf / (fractions + pf - fractions * pf)).mean(-1)


def _controls(pieces: dict, epochs, own: dict, labels, active) -> list[dict]:
    controls = []
    for t, e in enumerate(epochs):
        rnd = pieces[f"random_e{epoch_tag(e)}"]
        rm = cross_gating_metrics(rnd["pred"][0], rnd["true"][0], own["pred"][t], own["true"][t], labels)
        row = {"epoch": e, "own_accuracy": own["accuracy"][t].item(), "active_fraction": active[t],
               "random_hard_accuracy": rm["accuracy"].item(), "random_hard_pearson": rm["correlation"].item(),
               "random_hard_agreement": rm["agreement"].item()}
        seed = pieces.get(f"seed_e{epoch_tag(e)}")  # None until the control run has reached epoch e
        row["control_own_accuracy"] = NAN if seed is None else (seed["own_pred"] == labels).double().mean().item()
        row["control_jaccard"] = NAN if seed is None else seed["jaccard_per_site"].mean().item()
        for kind in ("hard", "soft"):
            sm = None if seed is None else cross_gating_metrics(seed[f"{kind}_pred"], seed[f"{kind}_true"],
                                                                own["pred"][t], own["true"][t], labels)
            for key, name in CROSS_KEYS:
                row[f"control_{kind}_{name}"] = NAN if sm is None else sm[key].item()
        controls.append(row)
    return controls


def _kernel_rows(pieces: dict, kernel_epochs, labels) -> list[dict]:
    knn = []
    base = pieces["kernel_input"]
    for e in kernel_epochs:
        piece = pieces[f"kernel_e{epoch_tag(e)}"]
        model_pred = piece["model_pred"]
        for kernel in KERNELS:
            pred = base["pred"] if kernel == "input" else piece[kernel]
            for i, k in enumerate(KNN_K):
                knn.append({"epoch": e, "kernel": kernel, "k": k, "accuracy": (pred[i] == labels).double().mean().item(),
                            "agreement_with_model": (pred[i] == model_pred).double().mean().item(),
                            "model_accuracy": (model_pred == labels).double().mean().item()})
    return knn


def _summary(epochs, own, active, per_site, chance, cross, controls, knn) -> list[dict]:
    final, summary = len(epochs) - 1, []
    for t, e in enumerate(epochs):
        row = {"epoch": e, "own_accuracy": own["accuracy"][t].item(), "active_fraction": active[t],
               "jaccard_vs_final": per_site[t, final].mean().item(),
               "jaccard_vs_previous": per_site[t, t - 1].mean().item() if t else NAN,
               "jaccard_vs_final_if_independent": chance[t].item()}
        for kind in ("hard", "soft"):
            m = cross[kind]
            row[f"{kind}_final_gates_accuracy"] = m["accuracy"][final, t].item()
            row[f"{kind}_final_gates_pearson"] = m["correlation"][final, t].item()
            row[f"{kind}_gates_on_final_accuracy"] = m["accuracy"][t, final].item()
            row[f"{kind}_gates_on_final_pearson"] = m["correlation"][t, final].item()
        row.update({k: controls[t][k] for k in ("random_hard_accuracy", "random_hard_pearson", "control_jaccard",
                                                "control_hard_accuracy", "control_hard_pearson",
                                                "control_soft_accuracy", "control_soft_pearson")})
        for kernel in KERNELS:
            hit = [r["accuracy"] for r in knn if r["epoch"] == e and r["kernel"] == kernel and r["k"] == KNN_K[0]]
            row[f"knn{KNN_K[0]}_{kernel}"] = hit[0] if hit else NAN
        summary.append(row)
    return summary
