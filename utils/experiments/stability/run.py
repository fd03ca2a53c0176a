"""The path-stability study (the paper's Hypothesis 1), end to end, resumable.

    python -m utils.experiments.stability --data ../shared/data/imagenette2-224      # or set IMAGENETTE_ROOT

Hypothesis 1: the ReLU gates ``1[z > 0]`` of a network settle early in training, after which it acts as a
fixed kernel machine over its highly excited paths (the excitation kernel, Eq. 23). On checkpoints of one
training run (:mod:`utils.experiments.training`; default ``data/checkpoints/seed0``) and a control run with
another seed (default ``data/checkpoints/seed1``; whatever epochs it has so far), this writes to ``--out``:

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
* ``summary.csv`` (one row per checkpoint), ``config.json`` (the run's identity: settings, data root, image
  lists' and checkpoints' hashes), ``timing_rank0.csv`` (seconds per piece), and ``parts/`` (per-image results
  of each piece, checked on reading: a rerun skips every sound piece and recomputes a damaged one). The pieces
  are the parts of the shared loop, :func:`utils.experiments.runner.run_parts` (under ``torchrun`` the ranks
  share them).

:mod:`.tables` assembles the CSVs from the parts, :mod:`.report` reads them back,
:mod:`utils.figures.stability` draws them.

Defaults and why (45-minute budget on the 2-core CPU): everything runs at 112px, the resolution of the first
six training epochs, which the hypothesis is about, and the cheapest per pass; there the final model scores
~81% on val instead of 87% at 224px (measured on 300 val images: 81% at 112, 83% at 128, 88% at 160). The
s x t matrices dominate: with S checkpoints, hard and soft, ``2 S^2`` cross-gated passes per image, so S = 9
checkpoints (0, 0.25, 0.5, 0.75, 1, 2, 4, 8, 16: every quarter over the first epoch, then doubling) and 500
val images. The kernels take ``N + 2 M`` gate passes and ``2 N M units`` multiply-adds per checkpoint, so a
1,000-image train subset (100 per class) and three checkpoints (0, 1, 16). The measured cost of a pass at
each resolution and of the whole default study is in ``benchmarks/README.md`` ("What the studies cost");
``timing_rank0.csv`` has a run's seconds per piece.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Literal

import torch

from ...analysis.cross_gating import cross_gated_predictions, cross_gating_rows
from ...analysis.gating import input_kernel
from ...analysis.kernel_knn import excitation_kernels, kernel_knn_predict, penultimate_features
from ...analysis.overlap import jaccard_matrix
from ...core.gates import check_temperature
from ...data.imagenette import data_root_from_env, load_image
from ...paths import CHECKPOINTS, MEDIA, RESULTS, shown
from ...figures.stability import plot_study
from ..records import file_sha256, list_sha256, write_csv
from ..runner import ARRAY_PARTS, Part, check_at_least, run_parts, seeded_images, settings_arguments, settings_from_args
from ..training.checkpoints import epoch_tag, list_checkpoints, load_checkpoint
from .report import load_study
from .tables import KNN_K, MEASUREMENT_KEYS, write_tables

DEFAULT_EPOCHS = (0, 0.25, 0.5, 0.75, 1, 2, 4, 8, 16)
DEFAULT_KERNEL_EPOCHS = (0, 1, 16)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def _epochs(text: str) -> dict:
    """A field's metadata for a list of epochs given as one argument, e.g. '0 0.5 1 16'."""
    return {"type": _floats, "nargs": None, "help": text}


@dataclasses.dataclass(frozen=True)
class StabilitySettings:
    """The study's settings (all but ``chunk_size`` change what is measured; see the module docstring)."""
    images: int = dataclasses.field(default=500, metadata={"help": "seeded Imagenette val images"})
    epochs: tuple[float, ...] = dataclasses.field(default=DEFAULT_EPOCHS,
                                                  metadata=_epochs("checkpoint epochs, e.g. '0 0.5 1 16'"))
    kernel_epochs: tuple[float, ...] = dataclasses.field(default=DEFAULT_KERNEL_EPOCHS,
                                                         metadata=_epochs("checkpoints for the kernel classifiers"))
    kernel_train: int = dataclasses.field(default=1000, metadata={"help": "class-balanced train images for kNN"})
    resolution: int = dataclasses.field(default=112, metadata={"help": "image side for every measurement"})
    temperature: float = dataclasses.field(default=0.3, metadata={"help": "soft gates sigmoid(z / T)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the image subsets and random gates"})
    chunk_size: int = 50


def seeded_subset(root, split: str, n: int, seed: int, balanced: bool = False) -> list[tuple[str, int]]:
    """``n`` ``(path, label)`` pairs of a split: the first n of a seeded permutation of torchvision's order
    (:func:`utils.experiments.runner.seeded_images`), or with ``balanced`` the first ``n // 10`` of each
    class in that permutation (returned in permutation order)."""
    ordered = [(path, label) for _, path, label in seeded_images(root, split, seed)]
    if not 0 < n <= len(ordered):
        raise ValueError(f"{split} images must be in 1..{len(ordered)}, got {n}")
    if not balanced:
        return ordered[:n]
    per_class, taken, picked = n // 10, [0] * 10, []
    for path, label in ordered:
        if taken[label] < per_class:
            taken[label] += 1
            picked.append((path, label))
    return picked


@dataclasses.dataclass(frozen=True)
class Piece:
    """A stability part's key: which measurement (``kind``) and, for all but the Jaccard matrix and the input
    kernel, the checkpoint epoch it is about."""
    kind: Literal["row", "jaccard", "random", "seed", "kernel_input", "kernel"]
    epoch: float | None = None

    @property
    def name(self) -> str:
        """Its file name under ``parts/`` (and its line in the timing files)."""
        tag = "" if self.epoch is None else epoch_tag(self.epoch)
        return {"row": f"row_s{tag}", "random": f"random_e{tag}", "seed": f"seed_e{tag}",
                "kernel": f"kernel_e{tag}"}.get(self.kind, self.kind)


@dataclasses.dataclass
class _StabilityJob:
    """A validated study for :func:`utils.experiments.runner.run_parts`: one part (npz of named arrays) per
    :class:`Piece`; decodes images and loads checkpoints only when a missing piece needs them."""
    cfg: dict
    data: Path
    main: dict
    control: dict
    lists: list
    out: Path
    identity: dict
    chunk_size: int
    part_format = ARRAY_PARTS
    identity_keys = MEASUREMENT_KEYS

    def __post_init__(self):
        epochs = self.cfg["epochs"]
        pieces = ([Piece("row", e) for e in epochs] + [Piece("jaccard")] + [Piece("random", e) for e in epochs]
                  + [Piece("seed", e) for e in epochs if e in self.control]
                  + [Piece("kernel_input")] + [Piece("kernel", e) for e in self.cfg["kernel_epochs"]])
        # items None: every piece covers all the listed images, which the run's identity pins
        self.parts: list[Part[Piece]] = [Part(p.name, None, p) for p in pieces]
        self.models: dict = {}
        self.decoded: dict = {}

    def model(self, run: str, epoch: float, device):
        key = (run, epoch)
        if key not in self.models:
            model = load_checkpoint((self.main if run == "main" else self.control)[epoch]).to(device)
            self.models[key] = model.to(memory_format=torch.channels_last)  # faster convolutions on CPU
        return self.models[key]

    def images(self, split: str, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The listed ``split`` images (val or train), decoded once: (N, 3, r, r) channels-last, (N,) labels."""
        if split not in self.decoded:
            rows = dict(self.lists)[f"{split}_images"]
            x = torch.stack([load_image(self.data / row["path"], self.cfg["resolution"]) for row in rows])
            self.decoded[split] = (x.contiguous(memory_format=torch.channels_last).to(device),
                                   torch.tensor([int(row["label"]) for row in rows], device=device))
        return self.decoded[split]

    def compute(self, part: Part[Piece], device) -> dict:
        """The piece's named arrays (on the CPU, for its npz file)."""
        kind, e, T, c = part.key.kind, part.key.epoch, self.cfg["temperature"], self.chunk_size
        val = self.images("val", device)
        main = lambda: [self.model("main", t, device) for t in self.cfg["epochs"]]  # noqa: E731
        if kind == "row":
            arrays = _row(cross_gating_rows(self.model("main", e, device), main(), *val, (None, T), chunk_size=c))
        elif kind == "jaccard":
            arrays = {"per_site": jaccard_matrix(main(), val[0], c, per_site=True)}
        elif kind == "random":
            gen = torch.Generator().manual_seed(self.cfg["seed"] * 100_003 + round(e * 100))
            model = self.model("main", e, device)
            arrays = cross_gated_predictions(model, [model], *val, None, chunk_size=c, control=gen)
        elif kind == "seed":
            arrays = _seed_control(self.model("main", e, device), self.model("control", e, device), val, T, c)
        elif kind == "kernel_input":
            train = self.images("train", device)
            arrays = _knn_predictions(input_kernel(val[0], train[0]), train[1])
        else:
            arrays = _kernel_piece(self.model("main", e, device), val, self.images("train", device), T, c)
        return {k: v.cpu() for k, v in arrays.items()}


def _checked_setup(data, checkpoints, control, s: StabilitySettings) -> tuple[Path, dict, dict, dict, list]:
    """Validate settings, data and checkpoints; returns (data root, checkpoints by epoch, the measurement
    settings, identity, image lists)."""
    if data is None:
        raise ValueError("no Imagenette: pass --data or set IMAGENETTE_ROOT (e.g. ../shared/data/imagenette2-224)")
    check_temperature(s.temperature)
    check_at_least(s, 1, ("resolution", "chunk_size"))
    check_at_least(s, 10, ("kernel_train",))  # a class-balanced subset: kernel_train // 10 images per class
    if not s.epochs or not s.kernel_epochs:
        raise ValueError(f"epochs and kernel_epochs need at least one epoch each, got {s.epochs}, {s.kernel_epochs}")
    cfg = {"images": s.images, "seed": s.seed, "resolution": s.resolution, "temperature": s.temperature,
           "gate": "sigmoid", "epochs": sorted(float(e) for e in s.epochs),
           "kernel_epochs": sorted(float(e) for e in s.kernel_epochs), "kernel_train": s.kernel_train,
           "knn_k": list(KNN_K)}
    data = Path(data).resolve()
    lists = [("val_images", seeded_subset(data, "val", s.images, s.seed)),
             ("train_images", seeded_subset(data, "train", s.kernel_train, s.seed, balanced=True))]
    lists = [(name, [{"path": Path(p).relative_to(data).as_posix(), "label": y} for p, y in files])
             for name, files in lists]
    main = dict(list_checkpoints(checkpoints)) if Path(checkpoints).is_dir() else {}
    wanted = sorted(set(cfg["epochs"]) | set(cfg["kernel_epochs"]))
    missing = [e for e in wanted if e not in main]
    if missing:
        raise FileNotFoundError(f"{checkpoints} has no checkpoint for epochs {missing}; it has {sorted(main)}")
    identity = {**cfg, "checkpoints": _identity_path(checkpoints), "control": _identity_path(control), "data_root": str(data),
                **{f"{name}_sha256": list_sha256(rows) for name, rows in lists},
                "checkpoints_sha256": {epoch_tag(e): file_sha256(main[e]) for e in wanted}}
    return data, main, cfg, identity, lists


def run_study(data=None, checkpoints=CHECKPOINTS / "seed0", control=CHECKPOINTS / "seed1", out=RESULTS / "stability",
              media=MEDIA / "stability", progress: bool = True, **settings) -> dict | None:
    """Compute every missing piece, then write the CSVs (and figures into ``media`` unless None).

    ``settings`` are the fields of :class:`StabilitySettings` (``images``, ``epochs``, ``resolution``, ...).
    Returns :func:`utils.experiments.stability.load_study` of ``out`` (None on the other ranks under
    ``torchrun``). ``epochs`` / ``kernel_epochs`` must all exist in ``checkpoints``; ``control`` may be missing
    or partial. See the module docstring for what is measured. The settings, data and checkpoints are checked
    before anything is written to ``out``; the pieces are the parts of :func:`~..runner.run_parts` (resumable,
    one timing line each in ``timing_rank<r>.csv``), which holds ``out``'s writer lock while it writes.
    """
    s = StabilitySettings(**settings)
    data, main, cfg, identity, lists = _checked_setup(data or data_root_from_env(), checkpoints, control, s)
    control_runs = _control_checkpoints(control, cfg["epochs"])

    def prepare(device, rank):
        return _StabilityJob(cfg, data, main, control_runs, lists, Path(out), identity, s.chunk_size)

    def merge(folder: Path, pieces: dict) -> dict:
        for name, rows in lists:
            write_csv(folder / f"{name}.csv", rows)
        write_tables(folder, cfg, pieces)
        if media is not None:
            plot_study(folder, media)
        return load_study(folder)

    return run_parts(prepare, merge, "stability pieces", progress)


def _control_checkpoints(control, epochs) -> dict:
    """The control run's checkpoints by epoch (none if its folder is missing), saying which epochs lack one."""
    folder = Path(control) if control else None
    found = dict(list_checkpoints(folder)) if folder is not None and folder.is_dir() else {}
    absent = [e for e in epochs if e not in found]
    if absent:
        print(f"control run {folder}: {'no checkpoints' if not found else 'partial'}; seed controls for epochs "
              f"{[e for e in epochs if e in found] or 'none'}, none yet for {absent} (re-run later to add them)",
              file=sys.stderr)
    return found


def _identity_path(path) -> str:
    """A path for config.json: relative to the repository when inside it (the committed file names no machine),
    else absolute, so that the identity does not depend on the working directory."""
    return shown(Path(path).resolve())


def _row(rows: dict) -> dict:
    """A :func:`cross_gating_rows` result for temperatures (None, T) as flat arrays: hard_* and soft_*."""
    flat = {"own_pred": rows["own_pred"], "own_true": rows["own_true"]}
    for k, kind in enumerate(("hard", "soft")):
        flat.update({f"{kind}_pred": rows["pred"][k], f"{kind}_true": rows["true"][k], f"{kind}_active": rows["active"][k]})
    return flat


def _seed_control(mine, other, val, temperature: float, chunk_size: int) -> dict:
    """The weights of the main run at an epoch (``mine``) with the gates of the control run at that epoch
    (``other``), hard and soft."""
    rows = cross_gating_rows(other, [mine], *val, (None, temperature), chunk_size=chunk_size)
    return {"hard_pred": rows["pred"][0, 0], "hard_true": rows["true"][0, 0], "soft_pred": rows["pred"][1, 0],
            "soft_true": rows["true"][1, 0], "own_pred": rows["own_pred"],
            "jaccard_per_site": jaccard_matrix([mine, other], val[0], chunk_size, per_site=True)[0, 1]}


def _knn_predictions(kernel: torch.Tensor, train_labels: torch.Tensor) -> dict:
    return {"pred": torch.stack([kernel_knn_predict(kernel, train_labels, k) for k in KNN_K])}


def _kernel_piece(model, val, train, temperature: float, chunk_size: int) -> dict:
    """kNN predictions (len(KNN_K), N) of the hard and soft excitation kernels and the penultimate cosine."""
    (xv, _), (xt, yt) = val, train
    # All val gates held at once (1.6 GB per kind at 112px for 500 images): the train images pass only once.
    hard, soft = excitation_kernels(model, xv, xt, (None, temperature), chunk_size=chunk_size, block_size=500)
    fv, ft = penultimate_features(model, xv, chunk_size), penultimate_features(model, xt, chunk_size)
    with torch.no_grad():
        model_pred = model.fc(fv).argmax(1)
    return {"hard_path": _knn_predictions(hard, yt)["pred"], "soft_path": _knn_predictions(soft, yt)["pred"],
            "penultimate": _knn_predictions(input_kernel(fv, ft), yt)["pred"], "model_pred": model_pred}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="Imagenette root with train/ and val/ (default $IMAGENETTE_ROOT)")
    parser.add_argument("--checkpoints", default=str(CHECKPOINTS / "seed0"))
    parser.add_argument("--control", default=str(CHECKPOINTS / "seed1"),
                        help="checkpoints of a run with another seed (missing or partial: uses the epochs it has)")
    parser.add_argument("--out", default=str(RESULTS / "stability"))
    parser.add_argument("--media", default=str(MEDIA / "stability"), help="'' to skip the figures")
    parser.add_argument("--threads", type=int, default=None)
    return settings_arguments(parser, StabilitySettings)


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    settings = dataclasses.asdict(settings_from_args(StabilitySettings, args, {}))
    study = run_study(args.data, args.checkpoints, args.control, args.out, args.media or None, **settings)
    print(f"done in {time.perf_counter() - start:.0f} s; tables in {args.out}")
    for row in study["summary"]:
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
