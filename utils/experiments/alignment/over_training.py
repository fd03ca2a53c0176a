"""Measure 5 of the alignment study: do pullback-gradient alignment and cross-model agreement change over training?

    python -m utils.experiments.alignment.over_training --data ../shared/data/imagenette2-224
    python -m utils.experiments.alignment.over_training --data ... --run seed0 poolresnet data/checkpoints/seed0 \\
        --run seed1 poolresnet data/checkpoints/seed1 --out results/alignment/over_training
    torchrun --nproc_per_node=2 -m -- utils.experiments.alignment.over_training --data ...   # same, sharded

(Under torchrun the ``--`` before the module name keeps torchrun from taking ``--run`` for its ``--run-path``.)

On the training checkpoints (:mod:`utils.experiments.training.checkpoints`) of each run at ``epochs`` (default
0, 1, 2, 4, 8, 16; epoch 0 is the initialisation), this computes measures 1 and 2 of :mod:`.run`:

* ``pg_field`` at every temperature and ``pg_ascent`` at ``temperature`` only: cosine between pullback and
  gradient per run, as fields and as ``steps``-step ascent perturbations;
* ``agree_field`` / ``agree_ascent``: cosine between two runs' fields / perturbations at the same epoch (every
  unordered pair; none with a single run), for the pullback at ``temperature`` and for the gradient.

Images and targets are those of the main study: the first ``images`` (default 100) of the seeded list
:func:`utils.experiments.runner.evaluation_images` (one seeded permutation of the val set cut to
length, so with the same seed they are the first 100 of the main study's 500) with the six-column scheme
(:data:`.run.SIX`, by position). Rows have the columns of :data:`.run.COLUMNS` plus ``epoch``.

One checked part per (epoch, image batch) holds every run at that epoch, so agreement compares the runs on
the same images; a rerun skips valid parts; under ``torchrun`` rank r takes parts r, r + W, ... and rank 0
writes ``scores.csv`` and ``summary.csv`` (mean and bootstrap 95% CI per epoch x measure x model x other x
method x temperature; :func:`.report.curve_table` compares the first epoch with the last). The identity in
``config.json`` holds the SHA-256 of every checkpoint's model state, so a checkpoint rewritten with other
weights is refused on resume.

Cost: per model, five fields and two ascents (about half the backward passes of :mod:`.run`'s batches); the
default is 2 runs x 6 epochs x 100 images (measured time: ``benchmarks/README.md``, "What the studies cost").
"""
from __future__ import annotations

import argparse
import dataclasses
import pickle
from pathlib import Path

import torch
from torch import nn

from ...core.gates import check_temperature
from ...data.imagenette import IMAGENETTE_CLASSES, require_imagenette
from ...models.nets import ARCHITECTURES
from ...models.zoo import Classifier
from ...paths import RESULTS
from ..records import state_sha256, write_csv
from ..runner import (Part, batches, check_at_least, evaluation_images, labelled, load_images, run_identity,
                      run_parts, settings_arguments, settings_from_args)
from ..training.checkpoints import checkpoint_name, default_folder, epoch_tag, load_checkpoint
from .report import KEY, curve_sentences, curve_table, format_summary, summarise
from .run import COLUMNS, SCHEME, agree_rows, image_samples, model_fields, pg_rows, six_targets

CURVE_COLUMNS = ("epoch", *COLUMNS)
CURVE_KEY = ("epoch", *KEY)
DEFAULT_RUNS = tuple((f"seed{seed}", "poolresnet", str(default_folder("poolresnet", seed))) for seed in (0, 1))

__all__ = ["CURVE_COLUMNS", "CURVE_KEY", "CurveSettings", "SMOKE", "checkpoint_model", "checkpoint_paths",
           "curve_sentences", "curve_table", "main", "prepare", "run", "validate"]


@dataclasses.dataclass(frozen=True)
class CurveSettings:
    """Everything that changes a score; stored in ``<out>/config.json`` and checked when resuming."""
    runs: tuple[tuple[str, str, str], ...] = DEFAULT_RUNS   # (name, architecture, checkpoint folder)
    epochs: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
    images: int = 100
    seed: int = 0
    batch: int = 10
    size: int = 224
    temperatures: tuple[float, ...] = (0.1, 0.3, 1.0, 2.0)  # pg_field
    temperature: float = 0.3      # the pullback's ascent (pg_ascent) and agreement; one of temperatures
    steps: int = 5                # ascent steps
    alpha: float = 20.0           # L2 norm of each ascent step (pixel units in [-1, 1])
    eps: float = 100.0            # L2 ball of the ascent


SMOKE = dict(images=4, batch=2, size=64, temperatures=(0.1, 0.3), steps=2, epochs=(0.0, 1.0, 2.0))


def validate(settings: CurveSettings) -> CurveSettings:
    """The settings with runs' folders made absolute and epochs floats, or a ValueError naming the first bad
    one (nothing is loaded or written before this). One run is allowed: it has pg rows and no agreement."""
    s = settings
    for t in (*s.temperatures, s.temperature):
        check_temperature(t)
    if s.temperature not in s.temperatures:
        raise ValueError(f"temperature {s.temperature} (of the ascent) must be one of temperatures {s.temperatures}")
    check_at_least(s, 1, ("images", "batch", "size", "steps"))
    if s.alpha <= 0 or s.eps <= 0:
        raise ValueError(f"alpha and eps must be > 0, got {s.alpha}, {s.eps}")
    epochs = tuple(float(e) for e in s.epochs)
    if not epochs or len(set(epochs)) != len(epochs) or min(epochs) < 0:
        raise ValueError(f"epochs must be distinct and >= 0 (at least one), got {list(s.epochs)}")
    runs = tuple((str(name), str(arch), str(Path(folder).resolve())) for name, arch, folder in s.runs)
    names = [name for name, _, _ in runs]
    if not runs or len(set(names)) != len(names):
        raise ValueError(f"runs need distinct names (at least one run), got {names}")
    for name, arch, _ in runs:
        if arch not in ARCHITECTURES:
            raise ValueError(f"run {name!r}: unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return dataclasses.replace(s, runs=runs, epochs=epochs)


def checkpoint_paths(settings: CurveSettings) -> dict:
    """``{(run name, epoch): checkpoint path}``; a ValueError naming the missing folder or file and the
    training command that writes it."""
    paths = {}
    for name, arch, folder in settings.runs:
        train = (f"`python -m utils.experiments.training --data <imagenette root> --arch {arch} --seed <seed> "
                 f"--checkpoints {folder}` (it saves epoch 0 and every whole epoch up to 16)")
        if not Path(folder).is_dir():
            raise ValueError(f"run {name!r}: no checkpoint folder {folder}; train the run with {train}")
        for epoch in settings.epochs:
            path = Path(folder) / checkpoint_name(epoch)
            if not path.is_file():
                raise ValueError(f"run {name!r}: no checkpoint {path} for epoch {epoch:g}; it is written by "
                                 f"{train}, or that run has not reached it yet")
            paths[name, epoch] = path
    return paths


def checkpoint_model(path, arch: str, name: str, device="cpu") -> Classifier:
    """The network of a training checkpoint as a classifier of images in [-1, 1] (the zoo's wrapping: the net
    takes them directly), channels-last, eval mode; a ValueError naming the file if it does not load."""
    try:
        net = load_checkpoint(path, len(IMAGENETTE_CLASSES), arch)
    except (RuntimeError, OSError, KeyError, ValueError, pickle.UnpicklingError) as error:
        raise ValueError(f"cannot load checkpoint {path} as architecture {arch!r}: {error}") from error
    model = Classifier(net, nn.Identity(), IMAGENETTE_CLASSES, name)
    return model.to(device, memory_format=torch.channels_last).eval()


@dataclasses.dataclass
class _CurveJob:
    """A validated run: settings, checkpoints, the seeded images and the parts (epoch, image batch)."""
    settings: CurveSettings
    out: Path
    identity: dict | None
    checkpoints: dict
    picks: list

    def __post_init__(self):
        s = self.settings
        self.parts: list[Part[float]] = [Part(f"epoch_{epoch_tag(epoch)}_batch_{b:04d}", tuple(items), epoch)
                                         for epoch in s.epochs for b, items in enumerate(batches(len(self.picks), s.batch))]
        self._epoch, self._models = None, {}

    def models(self, epoch: float, device) -> dict:
        """Every run's classifier at ``epoch`` (the last epoch's are kept: a rank's parts go epoch by epoch)."""
        if self._epoch != epoch:
            self._models = {}  # free the previous epoch's models first
            self._models = {name: checkpoint_model(self.checkpoints[name, epoch], arch, name, device)
                            for name, arch, _ in self.settings.runs}
            self._epoch = epoch
        return self._models

    def compute(self, part: Part[float], device) -> list[dict]:
        """Load the part's images, score every run at its epoch and return the rows in column order."""
        s, epoch = self.settings, part.key
        images = load_images(self.picks, part.items, s.size, device)
        targets = six_targets(part.items, device)
        fields = {name: model_fields(model, images, targets, s, ascent_temperatures=(s.temperature,))
                  for name, model in self.models(epoch, device).items()}
        samples = [{**sample, "epoch": f"{epoch:g}"} for sample in image_samples(self.picks, part.items)]
        return labelled(pg_rows(fields, s) + agree_rows(fields, s), samples, CURVE_COLUMNS)


def prepare(settings: CurveSettings, data_root, out, rank: int = 0) -> _CurveJob:
    """Validate the settings, find every checkpoint and pick the images; on rank 0 also hash every checkpoint's
    model state for the run's identity. Writes nothing."""
    settings = validate(settings)
    checkpoints = checkpoint_paths(settings)
    data_root = Path(data_root).resolve()
    picks = evaluation_images(data_root, settings.images, settings.seed)
    identity = None
    if rank == 0:
        arch = {name: a for name, a, _ in settings.runs}
        weights = {name: {} for name in arch}
        for (name, epoch), path in checkpoints.items():
            weights[name][epoch_tag(epoch)] = state_sha256(checkpoint_model(path, arch[name], name))
        identity = run_identity(settings, data_root, picks, weights, targets=SCHEME)
    return _CurveJob(settings, Path(out), identity, checkpoints, picks)


def run(settings: CurveSettings, data_root, out, progress: bool = True) -> list[dict] | None:
    """Run (or resume) the over-training measures; the summary rows on rank 0, None on other ranks."""
    return run_parts(lambda device, rank: prepare(settings, data_root, out, rank), merge, "alignment over training",
                     progress)


def merge(out: Path, scores: list[dict]) -> list[dict]:
    """Write ``scores.csv`` and ``summary.csv`` from every part's rows; returns the summary."""
    summary = summarise(scores, CURVE_KEY)
    write_csv(out / "scores.csv", scores)
    write_csv(out / "summary.csv", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", default=None, help="Imagenette root with train/ and val/ (default $IMAGENETTE_ROOT)")
    parser.add_argument("--out", default=None,
                        help="results folder (default results/alignment/over_training; alignment-smoke/ for --smoke)")
    parser.add_argument("--smoke", action="store_true", help="few small images, two temperatures, epochs 0, 1, 2")
    parser.add_argument("--run", dest="runs", nargs=3, action="append", metavar=("NAME", "ARCH", "FOLDER"),
                        help="a training run: name, architecture, checkpoint folder (repeat for each run; default "
                             + "; ".join(" ".join(r) for r in DEFAULT_RUNS) + ")")
    return settings_arguments(parser, CurveSettings, skip=("runs",))


def main(argv=None):
    args = _parser().parse_args(argv)
    data = require_imagenette(args.data, "the alignment study over training")
    settings = settings_from_args(CurveSettings, args, SMOKE if args.smoke else {})
    settings = dataclasses.replace(settings, runs=tuple(tuple(r) for r in settings.runs))
    out = Path(args.out or RESULTS / ("alignment-smoke" if args.smoke else "alignment") / "over_training")
    summary = run(settings, data, out)
    if summary is not None:
        print(format_summary(summary, CURVE_KEY))
        print("\n".join(curve_sentences(curve_table(summary))))
        print(f"scores and summary in {out}")


if __name__ == "__main__":
    main()
