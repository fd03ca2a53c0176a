"""Faithfulness evaluation of excitation pullbacks against Captum's attribution baselines.

    python -m utils.experiments.faithfulness --data ../shared/data/imagenette2-224     # bundled model, 500 images
    torchrun --nproc_per_node=4 -m utils.experiments.faithfulness --model resnet50 ...  # same, sharded

Scores N seeded Imagenette val images (default 500) with every method of
:mod:`utils.analysis.attribution` plus a random-attribution control, on deletion / insertion AUC,
faithfulness correlation, infidelity (:mod:`utils.analysis.faithfulness`) and, on the first
``--randomisation-images``, the cascading model-randomisation check. Images go in fixed batches; each
finished batch is a checked part under ``<out>/parts/`` (:mod:`utils.experiments.records`), so a rerun
skips it, and recomputes it, with a warning, if it was damaged. Under ``torchrun`` rank r takes batches
r, r + W, ... (gloo on CPU, NCCL on GPUs) and rank 0 merges ``scores.csv`` (one row per image, method,
metric) and ``summary.csv`` (mean and bootstrap 95% CI). Every random draw is seeded per batch, so
sharded, resumed and single runs write the same numbers.

Default budget: the whole default run (500 images, 9 methods + control, every metric, the
randomisation check on 20 images) must fit 45 minutes on a 2-core CPU. At 224 px it would take
about twice that, so the bundled model is scored at 160 px (its training resolution in epochs
13-14; 88.5% val accuracy there, 87.2% at 224 px) with 8 SmoothGrad samples, 8 Integrated-Gradients
nodes, 6 deletion / insertion steps, 24 subsets for faithfulness correlation and 4 infidelity
samples (the measured time of a batch: ``benchmarks/README.md``, "What the studies cost"; a run's seconds
per batch go to ``timing_rank<r>.csv``). ImageNet models are scored at 224 px; ``--size`` and the sample
counts are options.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
from pathlib import Path

import torch

from ...analysis.attribution import METHODS, attribute_many
from ...analysis.faithfulness import (cascading_randomisation, deletion_insertion, faithfulness_correlation,
                                      infidelity, pixel_relevance)
from ...analysis.stats import spearman
from ...core.gates import check_temperature
from ...data.imagenette import IMAGENETTE_TO_IMAGENET, data_root_from_env
from ...models.zoo import BUNDLED, PAPER_MODELS, load_model
from ...paths import RESULTS
from ..records import state_sha256, write_csv
from ..runner import (Part, batches, check_at_least, check_input_size, evaluation_images, labelled, load_images,
                      run_identity, run_parts, settings_arguments, settings_from_args)
from .report import CONTROL, RANDOMISATION, format_summary, summarise

# Guided Grad-CAM is available but not in the default run: its metrics cost ~8% of the time budget.
DEFAULT_METHODS = tuple(m for m in METHODS if m != "guided_gradcam")
COLUMNS = ("image", "file", "label", "method", "metric", "randomised_layers", "layers", "value")
# Faithfulness correlation's subsets: PATCHES squares of PATCH x PATCH pixels, so an image needs at least
# PATCHES cells of the PATCH-pixel grid.
PATCHES, PATCH = 32, 8


@dataclasses.dataclass(frozen=True)
class FaithfulnessSettings:
    """Everything that changes a score; stored in ``<out>/config.json`` and checked when resuming."""
    model: str = BUNDLED
    images: int = 500
    seed: int = 0
    batch: int = 10
    methods: tuple[str, ...] = dataclasses.field(default=DEFAULT_METHODS, metadata={"choices": sorted(METHODS)})
    temperature: float = 0.3
    # image side in pixels: 160 for the bundled model, else 224 (see above)
    size: int | None = dataclasses.field(default=None, metadata={"type": int,
                                                                 "default": "160 for the bundled model, else 224"})
    smoothgrad_samples: int = 8
    ig_steps: int = 8             # Gauss-Legendre nodes
    steps: int = 6                # deletion / insertion steps over the pixel budget
    budget: float = 1.0           # fraction of the pixels deleted / inserted
    correlation_runs: int = 24    # random subsets for faithfulness correlation
    infidelity_samples: int = 4
    infidelity_sigma: float = 0.1
    randomisation_images: int = 20
    randomisation_stages: int = 4

    def method_options(self, method: str) -> dict:
        if method in ("pullback", "pullback_x_input", "pullback_ascent_5"):
            return {"temperature": self.temperature}
        return {"smoothgrad": {"samples": self.smoothgrad_samples},
                "integrated_gradients": {"steps": self.ig_steps}}.get(method, {})


SMOKE = dict(images=4, batch=2, smoothgrad_samples=2, ig_steps=4, steps=4, correlation_runs=8,
             infidelity_samples=2, randomisation_images=2, randomisation_stages=2)


def validate(settings: FaithfulnessSettings) -> FaithfulnessSettings:
    """The settings with ``size`` filled in, or a ValueError naming the first bad one."""
    check_temperature(settings.temperature)
    if settings.model not in PAPER_MODELS + (BUNDLED,):
        raise ValueError(f"unknown model {settings.model!r}: choose one of {PAPER_MODELS + (BUNDLED,)}")
    unknown = set(settings.methods) - set(METHODS)
    if unknown or not settings.methods:
        raise ValueError(f"unknown or no methods {sorted(unknown)}; choose from {sorted(METHODS)}")
    check_at_least(settings, 1, ("images", "batch", "smoothgrad_samples", "ig_steps", "steps", "correlation_runs",
                                 "infidelity_samples", "randomisation_stages"))
    check_at_least(settings, 0, ("randomisation_images",))
    if not 0 < settings.budget <= 1 or not settings.infidelity_sigma > 0:
        raise ValueError(f"budget must be a fraction in (0, 1] and infidelity_sigma > 0, got {settings.budget} "
                         f"and {settings.infidelity_sigma}")
    if settings.size is None:
        settings = dataclasses.replace(settings, size=160 if settings.model == BUNDLED else 224)
    smallest = PATCH * math.isqrt(PATCHES - 1) + 1  # the grid needs ceil(sqrt(PATCHES)) cells a side
    if settings.size < smallest:
        raise ValueError(f"size must be at least {smallest} px (faithfulness correlation masks {PATCHES} squares of "
                         f"{PATCH} x {PATCH} pixels), got {settings.size}")
    return settings


@contextlib.contextmanager
def _seeded(images: torch.Tensor, seed: int):
    """A seeded scope for the global generator (Captum's SmoothGrad draws its noise from it)."""
    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)
        yield


def batch_scores(model, images: torch.Tensor, targets: torch.Tensor, settings: FaithfulnessSettings, seed: int,
                 randomised=(), randomise: int = 0) -> list[dict]:
    """Scores of one batch: rows ``{"row", "method", "metric", "randomised_layers", "layers", "value"}``
    with ``row`` the position in the batch.

    ``randomised`` holds ``(k, L, model)`` triples from :func:`cascading_randomisation`; the first
    ``randomise`` images of the batch get the randomisation check against them.
    """
    generator = torch.Generator().manual_seed(seed)
    options = {m: settings.method_options(m) for m in settings.methods}
    with _seeded(images, seed):
        attributions = attribute_many(model, images, targets, settings.methods, options)
    attributions[CONTROL] = torch.randn(images.shape, generator=generator).to(images)
    relevance = {m: pixel_relevance(a) for m, a in attributions.items()}
    rows = []

    def add(method, metric, values, randomised_layers="", layers=""):
        rows.extend({"row": i, "method": method, "metric": metric, "randomised_layers": randomised_layers,
                     "layers": layers, "value": float(v)} for i, v in enumerate(values.tolist()))

    for method, curves in deletion_insertion(model, images, targets, relevance, generator, steps=settings.steps,
                                             budget=settings.budget).items():
        add(method, "deletion_auc", curves["deletion_auc"])
        add(method, "insertion_auc", curves["insertion_auc"])
    correlations = faithfulness_correlation(model, images, targets, relevance, generator,
                                            runs=settings.correlation_runs, patches=PATCHES, patch=PATCH)
    for method, values in correlations.items():
        add(method, "faithfulness_correlation", values)
    for method, a in attributions.items():
        add(method, "infidelity", infidelity(model, images, targets, a, seed=seed, samples=settings.infidelity_samples,
                                             sigma=settings.infidelity_sigma))
    x, t = images[:randomise], targets[:randomise]
    for k, total, random_model in (randomised if randomise else ()):
        with _seeded(images, seed):
            changed = attribute_many(random_model, x, t, settings.methods, options)
        for m in settings.methods:
            add(m, RANDOMISATION, spearman(relevance[m][:randomise].abs(), pixel_relevance(changed[m]).abs()), k, total)
    return rows


@dataclasses.dataclass
class _FaithfulnessJob:
    """A validated run: its settings, model, picked images and one part per batch of them."""
    settings: FaithfulnessSettings
    out: Path
    identity: dict
    model: torch.nn.Module
    picks: list
    randomised: list

    def __post_init__(self):
        # items: the images' indices (what the part covers); key: their positions in the picks
        self.parts: list[Part[range]] = [Part(f"batch_{b:04d}", tuple(self.picks[i][0] for i in items), items)
                                         for b, items in enumerate(batches(len(self.picks), self.settings.batch))]

    def compute(self, part: Part[range], device) -> list[dict]:
        """Decode a batch, score it and return its rows in the part's column order."""
        s, items = self.settings, part.key
        images = load_images(self.picks, items, s.size, device)
        imagenet = s.model != BUNDLED
        targets = torch.tensor([IMAGENETTE_TO_IMAGENET[y] if imagenet else y for _, _, y in
                                (self.picks[i] for i in items)], device=device)
        # The randomisation check goes to the first randomisation_images images overall.
        randomise = max(0, min(len(items), s.randomisation_images - items.start))
        rows = batch_scores(self.model, images, targets, s, seed=s.seed * 1_000_003 + items.start // s.batch,
                            randomised=self.randomised, randomise=randomise)
        samples = [{"image": self.picks[i][0], "file": Path(self.picks[i][1]).name, "label": self.picks[i][2]}
                   for i in items]
        return labelled(rows, samples, COLUMNS)


def prepare(settings: FaithfulnessSettings, data_root, out, device) -> _FaithfulnessJob:
    """Validate the settings and the data, load the model and build the run's identity; writes nothing."""
    settings = validate(settings)
    data_root = Path(data_root).resolve()
    picks = evaluation_images(data_root, settings.images, settings.seed)
    model = load_model(settings.model, device).to(memory_format=torch.channels_last)  # faster convolutions on CPU
    check_input_size({settings.model: model}, settings.size, device)
    identity = run_identity(settings, data_root, picks, state_sha256(model))
    randomised = list(cascading_randomisation(model, settings.randomisation_stages, settings.seed))
    return _FaithfulnessJob(settings, Path(out), identity, model, picks, randomised)


def run(settings: FaithfulnessSettings, data_root, out, progress: bool = True) -> list[dict] | None:
    """Run (or resume) the evaluation; returns the summary rows on rank 0, None on other ranks.

    Everything is checked before ``config.json`` is written, so a refused run leaves no record that would
    block its corrected rerun.
    """
    return run_parts(lambda device, rank: prepare(settings, data_root, out, device), merge,
                     f"evaluate {settings.model}", progress)


def merge(out: Path, scores: list[dict]) -> list[dict]:
    """Write ``scores.csv`` and ``summary.csv`` from every part's rows; returns the summary."""
    summary = summarise(scores)
    write_csv(out / "scores.csv", scores)
    write_csv(out / "summary.csv", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", default=data_root_from_env(), help="Imagenette root (default $IMAGENETTE_ROOT)")
    parser.add_argument("--out", default=None, help="results folder (default results/faithfulness/<model>)")
    parser.add_argument("--smoke", action="store_true", help="a few images and samples: every method and metric, fast")
    return settings_arguments(parser, FaithfulnessSettings)


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("no data: pass --data or set $IMAGENETTE_ROOT to a folder with val/<wnid>/")
    settings = settings_from_args(FaithfulnessSettings, args, SMOKE if args.smoke else {})
    out = Path(args.out or RESULTS / "faithfulness" / (settings.model + ("-smoke" if args.smoke else "")))
    summary = run(settings, args.data, out)
    if summary is not None:
        print(format_summary(summary))
        print(f"scores and summary in {out}")
