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

Checked parts, resuming, the identity in ``config.json`` and torchrun sharding are those of :mod:`.run`;
rank 0 writes ``scores.csv``, ``summary.csv`` and ``paired.csv`` (pullback minus gradient per image).

Cost: four backward passes per image and model, no ascent. 500 images and the three trained models took
6.6 minutes with two processes on the 2-core CPU here (the sum of each rank's timing file).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from ...analysis.alignment import cosine, field
from ...core.gates import check_temperature
from ...data.imagenette import load_image, require_imagenette
from ...paths import RESULTS
from ..faithfulness.run import _distributed, evaluation_images
from ..records import check_identity, read_csv
from .report import format_summary, headline
from .run import (COLUMNS, FIELD_METHODS, SCHEME, SIX, _Rows, compute_parts, field_key, load_models, logit_targets,
                  merge, ready_models, run_identity, settings_arguments, settings_from_args)

MEASURES = ("agree_field", "agree_field_mismatched", "agree_field_specific", "target_cosine")
SMOKE = dict(images=4, batch=2, size=64)


@dataclasses.dataclass(frozen=True)
class ControlSettings:
    """Everything that changes a score; stored in ``<out>/config.json`` and checked when resuming."""
    models: tuple[str, ...] = ("bundled", "bundled_seed1", "bundled_plain")
    images: int = 500
    seed: int = 0
    batch: int = 25
    size: int = 224
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
    rows = _Rows()
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
    settings: ControlSettings
    out: Path
    models: dict
    picks: list

    def __post_init__(self):
        n, b = len(self.picks), self.settings.batch
        self.parts = [("batch", range(i, min(i + b, n))) for i in range(0, n, b)]

    def path(self, p: int) -> Path:
        return self.out / "parts" / f"batch_{p:04d}.csv"

    def rows(self, p: int) -> int:
        m = len(self.models)
        return len(self.parts[p][1]) * len(FIELD_METHODS) * (m + 3 * m * (m - 1) // 2)

    def compute(self, p: int, device) -> list[dict]:
        items = self.parts[p][1]
        s = self.settings
        images = torch.stack([load_image(self.picks[i][1], s.size) for i in items]).to(device)
        targets = torch.tensor([SIX[i % len(SIX)] for i in items], device=device)
        rows = control_rows(self.models, images, targets, mismatched(targets, items), s.temperature)
        for row in rows:
            i = items[row.pop("row")]
            row.update(image=self.picks[i][0], file=Path(self.picks[i][1]).name, label=self.picks[i][2],
                       target=SIX[i % len(SIX)])
        return [{c: r[c] for c in COLUMNS} for r in rows]


def prepare(settings: ControlSettings, data_root, out, device, rank: int = 0, models: dict | None = None):
    """Validate, pick the images, load the models (or take ``models``), then check or store the identity."""
    if models is not None:
        settings = dataclasses.replace(settings, models=tuple(models))
    check_temperature(settings.temperature)
    if len(set(settings.models)) < 2:
        raise ValueError(f"the control compares models: give at least two distinct models, got {settings.models}")
    for name in ("images", "batch", "size"):
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(settings, name)}")
    data_root = Path(data_root).resolve()
    picks = evaluation_images(data_root, settings.images, settings.seed)
    models = ready_models(models or load_models(settings.models, device), device)
    identity = run_identity(settings, data_root, picks, models, SCHEME + "; mismatched target SIX[(k + 1) % 6]")
    out = Path(out)
    if rank == 0:
        check_identity(out, identity)
    return _ControlJob(settings, out, models, picks)


def run(settings: ControlSettings, data_root, out, models: dict | None = None, progress: bool = True):
    """Run (or resume) the control; the summary rows on rank 0, None on other ranks."""
    rank, world, device = _distributed()
    job = prepare(settings, data_root, out, device, rank, models)
    compute_parts(job, "alignment control", rank, world, device, progress)
    return merge(job) if rank == 0 else None


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
