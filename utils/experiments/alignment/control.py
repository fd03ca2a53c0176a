"""A control for measure 2 of the alignment study: is the cross-model agreement about the target?

    python -m utils.experiments.alignment.control --data ../shared/data/imagenette2-224
    torchrun --nproc_per_node=2 -m utils.experiments.alignment.control --data ...        # same, sharded

Two fields agree more when both are smooth, or when both follow the image's edges, whatever class they are
for. So for the main study's images and targets (:mod:`.run`: the first ``images`` of the seeded list, image
k with target ``c = SIX[k % 6]``) this also takes a *mismatched* target ``c' = SIX[(k + 1) % 6]`` (never
``c``) and computes, for the pullback at ``temperature`` and for the gradient:

* ``agree_field``: cosine between two models' fields for ``c`` (the main study's measure, recomputed: equal
  to its rows for the same images);
* ``agree_field_mismatched``: the mean of cos(A for c, B for c') and cos(A for c', B for c): agreement that
  owes nothing to the target;
* ``agree_field_specific``: their difference per image, the part of the agreement that follows the target;
* ``target_cosine``: per model, cosine between its own fields for ``c`` and ``c'`` (1: the field ignores the
  target).

Checked parts, resuming, the identity in ``config.json`` and torchrun sharding are those of every runner
(:func:`utils.experiments.runner.run_parts`); rank 0 writes ``scores.csv``, ``summary.csv`` and ``paired.csv`` (pullback minus gradient per image).

Cost: four backward passes per image and model, no ascent (measured time: ``benchmarks/README.md``, "What the
studies cost").
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from ...analysis.alignment import cosine, field
from ...core.gates import check_temperature
from ...data.imagenette import require_imagenette
from ...paths import RESULTS
from ..records import read_csv, state_sha256
from ..runner import (Part, batches, check_at_least, evaluation_images, labelled, load_images, run_identity,
                      run_parts, settings_arguments, settings_from_args)
from .report import format_summary, headline
from .run import (COLUMNS, FIELD_METHODS, SCHEME, SIX, ModelsAndImages, ScoreRows, field_key, image_samples,
                  load_models, logit_targets, merge, ready_models, six_targets)

MEASURES = ("agree_field", "agree_field_mismatched", "agree_field_specific", "target_cosine")
SMOKE = dict(images=4, batch=2, size=64)


@dataclasses.dataclass(frozen=True)
class ControlSettings(ModelsAndImages):
    """Everything that changes a score; stored in ``<out>/config.json`` and checked when resuming."""
    batch: int = 25
    temperature: float = 0.3


def mismatched(targets: torch.Tensor, positions) -> torch.Tensor:
    """The control target of each image: the next one of the six-column scheme, ``SIX[(k + 1) % 6]``."""
    return torch.tensor([SIX[(k + 1) % len(SIX)] for k in positions], device=targets.device)


def control_rows(models: dict, images: torch.Tensor, targets: torch.Tensor, others: torch.Tensor,
                 temperature: float) -> list[dict]:
    """The rows of :data:`MEASURES` for one batch (``row`` = position in the batch); ``targets`` and ``others``
    (N,) are Imagenette classes, different per image."""
    if bool((targets == others).any()):
        raise ValueError("every mismatched target must differ from the image's target")
    rows = ScoreRows()
    for method in FIELD_METHODS:
        _, column = field_key(method, temperature)
        fields = {name: [field(m, images, logit_targets(m, t), method, temperature) for t in (targets, others)]
                  for name, m in models.items()}
        names = list(fields)
        for name in names:
            rows.add("target_cosine", name, "", method, column, cosine(*fields[name]))
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                matched = cosine(fields[a][0], fields[b][0])
                other = (cosine(fields[a][0], fields[b][1]) + cosine(fields[a][1], fields[b][0])) / 2
                rows.add("agree_field", a, b, method, column, matched)
                rows.add("agree_field_mismatched", a, b, method, column, other)
                rows.add("agree_field_specific", a, b, method, column, matched - other)
    return rows


@dataclasses.dataclass
class _ControlJob:
    """A validated control run: settings, models, the main study's images and one part per batch of them."""
    settings: ControlSettings
    out: Path
    identity: dict
    models: dict
    picks: list

    def __post_init__(self):
        self.parts: list[Part[None]] = [Part(f"batch_{b:04d}", tuple(items)) for b, items in
                                        enumerate(batches(len(self.picks), self.settings.batch))]

    def compute(self, part: Part[None], device) -> list[dict]:
        images = load_images(self.picks, part.items, self.settings.size, device)
        targets = six_targets(part.items, device)
        rows = control_rows(self.models, images, targets, mismatched(targets, part.items), self.settings.temperature)
        return labelled(rows, image_samples(self.picks, part.items), COLUMNS)


def prepare(settings: ControlSettings, data_root, out, device, models: dict | None = None) -> _ControlJob:
    """Validate, pick the images, load the models (or take ``models``) and build the identity; writes nothing."""
    if models is not None:
        settings = dataclasses.replace(settings, models=tuple(models))
    check_temperature(settings.temperature)
    if len(set(settings.models)) < 2:
        raise ValueError(f"the control compares models: give at least two distinct models, got {settings.models}")
    check_at_least(settings, 1, ("images", "batch", "size"))
    data_root = Path(data_root).resolve()
    picks = evaluation_images(data_root, settings.images, settings.seed)
    models = ready_models(models or load_models(settings.models, device), settings.size, device)
    identity = run_identity(settings, data_root, picks, {n: state_sha256(m) for n, m in models.items()},
                            targets=SCHEME + "; mismatched target SIX[(k + 1) % 6]")
    return _ControlJob(settings, Path(out), identity, models, picks)


def run(settings: ControlSettings, data_root, out, models: dict | None = None, progress: bool = True):
    """Run (or resume) the control; the summary rows on rank 0, None on other ranks."""
    return run_parts(lambda device, rank: prepare(settings, data_root, out, device, models), merge,
                     "alignment control", progress)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="Imagenette root with train/ and val/ (default $IMAGENETTE_ROOT)")
    parser.add_argument("--out", default=None, help="results folder (default results/alignment/control)")
    parser.add_argument("--smoke", action="store_true", help="four small images")
    args = settings_arguments(parser, ControlSettings).parse_args(argv)
    data = require_imagenette(args.data, "the alignment control")
    settings = settings_from_args(ControlSettings, args, SMOKE if args.smoke else {})
    out = Path(args.out or RESULTS / "alignment" / ("control-smoke" if args.smoke else "control"))
    summary = run(settings, data, out)
    if summary is not None:
        print(format_summary(summary))
        print("\n".join(headline(read_csv(out / "paired.csv"))))


if __name__ == "__main__":
    main()
