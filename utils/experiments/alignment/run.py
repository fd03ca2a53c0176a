"""The alignment study (issue 15, "Is it aligned?"): are excitation pullbacks more than a model's own noise?

    python -m utils.experiments.alignment --data ../shared/data/imagenette2-224            # three models, 500 images
    torchrun --nproc_per_node=2 -m utils.experiments.alignment --data ...                   # same, sharded

On N seeded Imagenette val images (default 500, :func:`utils.experiments.runner.evaluation_images`)
with the *six-column scheme* of targets (image k in seeded order gets ``SIX[k % 6]``: tench, cassette
player, church, garbage truck, golf ball, and English springer standing in for the paper's ostrich), it
measures with :mod:`utils.analysis.alignment`:

* ``pg_field`` / ``pg_ascent``: cosine between pullback (each temperature) and gradient, per model, as
  fields and as ``steps``-step ascent perturbations;
* ``agree_field`` / ``agree_ascent``: cosine between two models' fields / perturbations (every unordered
  pair), for the pullback at ``temperature`` and for the gradient;
* ``transfer_logp`` / ``transfer_became``: a source model's perturbation, scaled to L2 norm ``eps`` for
  both methods, applied to another model (every ordered pair): rise of log p(target), and whether its top-1
  became the target (NaN where it already was);
* ``focus``: on ``mosaics`` 2x2 mosaics of four images of four classes (from the same images, seeded), the
  share of positive attribution in the target's quadrant, each quadrant's class a target, for every method
  of :data:`FOCUS_METHODS`.

Measure 5, pg_* and agree_* on training checkpoints over epochs, is :mod:`.over_training` (reusing
:func:`model_fields`, :func:`pg_rows`, :func:`agree_rows`).

Image batches and groups of mosaics are checked parts under ``<out>/parts/``, run by the runners' skeleton
(:func:`utils.experiments.runner.run_parts`): a rerun skips valid parts and recomputes damaged ones; under
``torchrun`` rank r takes parts r, r + W, ... and rank 0 merges ``scores.csv``, ``summary.csv`` and
``paired.csv`` (:mod:`.report`). Nothing is random but the image and mosaic picks, which are seeded, so
sharded, resumed and single runs agree.

Cost: almost all of it is the ascent (``steps`` backward passes per temperature and model; each ascent starts
from the field already computed). Measured times of a batch, a group of mosaics and the default run are in
``benchmarks/README.md`` ("What the studies cost").
"""
from __future__ import annotations

import argparse
import dataclasses
from itertools import permutations
from pathlib import Path
from typing import Literal

import torch

from ...analysis.alignment import cosine, field, focus, mosaic, pairwise_cosines, perturbation, scale_to_norm, transfer
from ...analysis.attribution import OURS, attribute_many
from ...core.gates import check_temperature
from ...data.imagenette import IMAGENETTE_CLASSES, IMAGENETTE_TO_IMAGENET, require_imagenette
from ...models.zoo import load_model
from ...paths import RESULTS
from ..records import read_csv, state_sha256, write_csv
from ..runner import (Part, batches, check_at_least, check_input_size, evaluation_images, labelled, load_images,
                      run_identity, run_parts, settings_arguments, settings_from_args)
from .report import format_summary, paired, summarise, verdicts

SIX = (0, 2, 4, 6, 8, 1)
SCHEME = ("six-column scheme: image k (in seeded order) gets target SIX[k % 6], SIX = (0, 2, 4, 6, 8, 1) in "
          "Imagenette indices: " + ", ".join(IMAGENETTE_CLASSES[i] for i in SIX) + " (standing in for ostrich)")
FOCUS_METHODS = ("pullback", "pullback_x_input", "gradient", "gradient_x_input", "integrated_gradients", "gradcam")
COLUMNS = ("image", "file", "label", "target", "measure", "model", "other", "method", "temperature", "value")
FIELD_METHODS = ("pullback", "gradient")


@dataclasses.dataclass(frozen=True)
class ModelsAndImages:
    """The settings the study and its control share: the models compared, the first ``images`` of the seeded
    val images (``seed``) at ``size`` px, in batches of ``batch``."""
    models: tuple[str, ...] = ("bundled", "bundled_seed1", "bundled_plain")
    images: int = 500
    seed: int = 0
    batch: int = 10
    size: int = 224


@dataclasses.dataclass(frozen=True)
class AlignmentSettings(ModelsAndImages):
    """Everything that changes a score; stored in ``<out>/config.json`` and checked when resuming."""
    temperatures: tuple[float, ...] = (0.1, 0.3, 1.0, 2.0)
    temperature: float = 0.3      # the one used for agreement, transfer and focus
    steps: int = 5                # ascent steps
    alpha: float = 20.0           # L2 norm of each ascent step (pixel units in [-1, 1])
    eps: float = 100.0            # L2 ball of the ascent, and the norm of every transferred perturbation
    mosaics: int = 50
    ig_steps: int = 8             # Gauss-Legendre nodes of Integrated Gradients (focus)

    def method_options(self, method: str) -> dict:
        if method in OURS:
            return {"temperature": self.temperature}
        return {"steps": self.ig_steps} if method == "integrated_gradients" else {}

    def method_temperature(self, method: str):
        """The temperature column of a row: the pullback's temperature, empty for gradient methods."""
        return self.temperature if method in OURS else ""


SMOKE = dict(images=6, batch=3, size=64, temperatures=(0.1, 1.0), steps=2, mosaics=2, ig_steps=2)


def validate(settings: AlignmentSettings) -> AlignmentSettings:
    """The settings, or a ValueError naming the first bad one (nothing is loaded or written before this)."""
    for t in (*settings.temperatures, settings.temperature):
        check_temperature(t)
    if not settings.temperatures:
        raise ValueError("temperatures must hold at least one temperature")
    if len(set(settings.models)) < 2 or len(set(settings.models)) != len(settings.models):
        raise ValueError(f"the alignment study needs at least two distinct models, got {list(settings.models)}")
    check_at_least(settings, 1, ("images", "batch", "size", "steps", "mosaics", "ig_steps"))
    if settings.size % 2:
        raise ValueError(f"size must be even (2x2 mosaics), got {settings.size}")
    if settings.alpha <= 0 or settings.eps <= 0:
        raise ValueError(f"alpha and eps must be > 0, got {settings.alpha}, {settings.eps}")
    return settings


def load_models(names, device) -> dict:
    """``{name: utils.models.zoo.load_model(name, device)}``; a ValueError naming any model the zoo lacks."""
    models = {}
    for name in names:
        try:
            models[name] = load_model(name, device)
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f"the alignment study cannot load model {name!r}: {error}") from error
    return models


def logit_targets(model, targets: torch.Tensor) -> torch.Tensor:
    """Imagenette targets as the model's logit indices (ImageNet indices for a 1000-class model)."""
    if len(getattr(model, "class_names", IMAGENETTE_CLASSES)) == len(IMAGENETTE_CLASSES):
        return targets
    return torch.tensor(IMAGENETTE_TO_IMAGENET, device=targets.device)[targets]


def model_fields(model, x: torch.Tensor, target: torch.Tensor, s, ascent_temperatures=None) -> dict:
    """``{"gradient": (field, perturbation), T: (field, perturbation)}`` for every temperature and ``s.temperature``.

    ``s`` holds ``temperatures``, ``temperature``, ``steps``, ``alpha`` and ``eps`` (:class:`AlignmentSettings` or the
    like). The gradient always gets its ascent; a pullback only at the temperatures in ``ascent_temperatures``
    (default: all of them), elsewhere its perturbation is None. Each ascent starts from the field computed
    here (``initial_field``: one backward pass saved).
    """
    out = {}
    for key in ("gradient", *dict.fromkeys((*s.temperatures, s.temperature))):
        method, t = ("gradient", 0.3) if key == "gradient" else ("pullback", key)
        f = field(model, x, target, method, t)
        ascend = key == "gradient" or ascent_temperatures is None or key in ascent_temperatures
        out[key] = (f, perturbation(model, x, target, method, t, s.steps, s.alpha, s.eps, initial_field=f)
                    if ascend else None)
    return out


class ScoreRows(list):
    """Score rows ``{"row", measure, model, other, method, temperature, value}``, one per sample of ``values``."""

    def add(self, measure, model, other, method, temperature, values: torch.Tensor):
        self.extend({"row": i, "measure": measure, "model": model, "other": other, "method": method,
                     "temperature": temperature, "value": float(v)} for i, v in enumerate(values.tolist()))


def field_key(method: str, temperature: float) -> tuple:
    """``(key in model_fields' dict, temperature column)`` of a method's agreement and transfer rows."""
    return (temperature, temperature) if method == "pullback" else ("gradient", "")


def pg_rows(fields: dict, s) -> list[dict]:
    """pg_field rows at every temperature of ``s.temperatures``, pg_ascent rows where the pullback was ascended;
    ``fields``: model name -> :func:`model_fields`."""
    rows = ScoreRows()
    for name, f in fields.items():
        for t in s.temperatures:
            rows.add("pg_field", name, "", "pullback_vs_gradient", t, cosine(f[t][0], f["gradient"][0]))
            if f[t][1] is not None:
                rows.add("pg_ascent", name, "", "pullback_vs_gradient", t, cosine(f[t][1], f["gradient"][1]))
    return rows


def agree_rows(fields: dict, s, methods=FIELD_METHODS) -> list[dict]:
    """agree_field and agree_ascent rows of every unordered pair of models (none for one model), per method
    (the pullback at ``s.temperature``, the gradient)."""
    rows = ScoreRows()
    for method in methods:
        key, temperature = field_key(method, s.temperature)
        for i, kind in enumerate(("agree_field", "agree_ascent")):
            for (a, b), values in pairwise_cosines({n: f[key][i] for n, f in fields.items()}).items():
                rows.add(kind, a, b, method, temperature, values)
    return rows


def transfer_rows(models: dict, fields: dict, images, targets, s, method: str) -> list[dict]:
    """transfer_logp and transfer_became rows of every ordered pair of models for one method."""
    key, temperature = field_key(method, s.temperature)
    rows = ScoreRows()
    for a, b in permutations(models, 2):
        delta = scale_to_norm(fields[a][key][1], s.eps)
        moved = transfer(models[b], images, delta, logit_targets(models[b], targets))
        became = torch.where(moved["was_target"], float("nan"), moved["became"].double())
        rows.add("transfer_logp", a, b, method, temperature, moved["logp_rise"])
        rows.add("transfer_became", a, b, method, temperature, became)
    return rows


def batch_scores(models: dict, images: torch.Tensor, targets: torch.Tensor, s: AlignmentSettings) -> list[dict]:
    """pg_*, agree_* and transfer_* rows of one image batch (``row`` = position in the batch)."""
    fields = {name: model_fields(m, images, logit_targets(m, targets), s) for name, m in models.items()}
    rows = pg_rows(fields, s)
    for method in FIELD_METHODS:
        rows += agree_rows(fields, s, (method,)) + transfer_rows(models, fields, images, targets, s, method)
    return rows


def mosaic_scores(models: dict, mosaics: torch.Tensor, labels: torch.Tensor, s: AlignmentSettings) -> list[dict]:
    """focus rows of mosaics (M, 3, H, W) whose quadrants hold classes ``labels`` (M, 4); ``row`` = 4 m + quadrant."""
    x = mosaics.repeat_interleave(4, dim=0)
    quadrant = torch.arange(4).repeat(len(mosaics))
    options = {m: s.method_options(m) for m in FOCUS_METHODS}
    rows = ScoreRows()
    for name, model in models.items():
        maps = attribute_many(model, x, logit_targets(model, labels.flatten()), FOCUS_METHODS, options)
        for method, attribution in maps.items():
            rows.add("focus", name, "", method, s.method_temperature(method), focus(attribution, quadrant))
    return rows


def mosaic_picks(picks: list, count: int, seed: int) -> list[list[int]]:
    """``count`` seeded quadruples of positions in ``picks`` whose images have four different classes."""
    generator = torch.Generator().manual_seed(seed + 15)
    chosen = []
    for _ in range(count):
        four, classes = [], set()
        for i in torch.randperm(len(picks), generator=generator).tolist():
            if picks[i][2] not in classes and len(four) < 4:
                four.append(i)
                classes.add(picks[i][2])
        if len(four) < 4:
            raise ValueError(f"mosaics need images of four classes; the {len(picks)} images have {len(classes)}")
        chosen.append(four)
    return chosen


def six_targets(positions, device) -> torch.Tensor:
    """The six-column scheme's target of each image position: ``SIX[k % 6]``."""
    return torch.tensor([SIX[k % len(SIX)] for k in positions], device=device)


def image_samples(picks: list, positions) -> list[dict]:
    """The image, file, label and six-column target of each picked image position, for :func:`labelled`."""
    return [{"image": picks[k][0], "file": Path(picks[k][1]).name, "label": picks[k][2], "target": SIX[k % len(SIX)]}
            for k in positions]


PartKind = Literal["batch", "mosaic"]
"""An alignment part's key: a batch of picked images (items: their positions) or of mosaics (items: mosaic
numbers)."""


@dataclasses.dataclass
class _AlignmentJob:
    """A validated run: settings, models, the seeded images and the parts (image batches, mosaic groups)."""
    settings: AlignmentSettings
    out: Path
    identity: dict
    models: dict
    picks: list
    mosaics: list

    def __post_init__(self):
        s, per = self.settings, max(1, self.settings.batch // 4)  # 4 samples per mosaic
        self.parts: list[Part[PartKind]] = (
            [Part(f"batch_{b:04d}", tuple(items), "batch") for b, items in enumerate(batches(len(self.picks), s.batch))]
            + [Part(f"mosaic_{b:04d}", tuple(items), "mosaic") for b, items in enumerate(batches(s.mosaics, per))])

    def compute(self, part: Part[PartKind], device) -> list[dict]:
        """Load the part's images, score them and return its rows in column order."""
        s = self.settings
        if part.key == "batch":
            images = load_images(self.picks, part.items, s.size, device)
            rows = batch_scores(self.models, images, six_targets(part.items, device), s)
            return labelled(rows, image_samples(self.picks, part.items), COLUMNS)
        quads = [self.mosaics[m] for m in part.items]
        images = torch.stack([mosaic(load_images(self.picks, q, s.size, "cpu")) for q in quads]).to(device)
        targets = torch.tensor([[self.picks[i][2] for i in q] for q in quads], device=device)
        rows = mosaic_scores(self.models, images, targets, s)
        samples = [{"image": self.picks[i][0], "file": f"mosaic{m:03d}/{Path(self.picks[i][1]).name}",
                    "label": self.picks[i][2], "target": self.picks[i][2]}  # a quadrant's target is its class
                   for m, q in zip(part.items, quads) for i in q]
        return labelled(rows, samples, COLUMNS)


def prepare(settings: AlignmentSettings, data_root, out, device, models: dict | None = None) -> _AlignmentJob:
    """Validate the settings, pick the images, load the models and build the run's identity; writes nothing.

    ``models`` (name -> classifier) replaces loading from the zoo (tests); its names become ``settings.models``.
    """
    if models is not None:
        settings = dataclasses.replace(settings, models=tuple(models))
    settings = validate(settings)
    data_root = Path(data_root).resolve()
    picks = evaluation_images(data_root, settings.images, settings.seed)
    quads = mosaic_picks(picks, settings.mosaics, settings.seed)
    models = ready_models(models or load_models(settings.models, device), settings.size, device)
    identity = run_identity(settings, data_root, picks, {n: state_sha256(m) for n, m in models.items()}, targets=SCHEME)
    return _AlignmentJob(settings, Path(out), identity, models, picks, quads)


def ready_models(models: dict, size: int, device) -> dict:
    """The models on ``device``, in eval mode and channels-last (faster convolutions on CPU), checked to take
    images of side ``size``."""
    models = {n: m.to(device).eval().to(memory_format=torch.channels_last) for n, m in models.items()}
    check_input_size(models, size, device)
    return models


def run(settings: AlignmentSettings, data_root, out, models: dict | None = None,
        progress: bool = True) -> list[dict] | None:
    """Run (or resume) the study; the summary rows on rank 0, None on other ranks."""
    return run_parts(lambda device, rank: prepare(settings, data_root, out, device, models), merge, "alignment",
                     progress)


def merge(out: Path, scores: list[dict]) -> list[dict]:
    """Write ``scores.csv``, ``summary.csv`` and ``paired.csv`` from every part's rows; returns the summary."""
    summary = summarise(scores)
    write_csv(out / "scores.csv", scores)
    write_csv(out / "summary.csv", summary)
    write_csv(out / "paired.csv", paired(scores))
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", default=None, help="Imagenette root with train/ and val/ (default $IMAGENETTE_ROOT)")
    parser.add_argument("--out", default=None, help="results folder (default results/alignment, -smoke for --smoke)")
    parser.add_argument("--smoke", action="store_true", help="few small images, two temperatures: every measure")
    return settings_arguments(parser, AlignmentSettings)


def main(argv=None):
    args = _parser().parse_args(argv)
    data = require_imagenette(args.data, "the alignment study")
    settings = settings_from_args(AlignmentSettings, args, SMOKE if args.smoke else {})
    out = Path(args.out or RESULTS / ("alignment-smoke" if args.smoke else "alignment"))
    summary = run(settings, data, out)
    if summary is not None:
        print(format_summary(summary))
        print("\n".join(verdicts(summary, read_csv(out / "paired.csv"))))
        print(f"scores, summary and paired differences in {out}")
