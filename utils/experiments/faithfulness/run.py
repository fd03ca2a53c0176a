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
samples: about 45 s per batch of 10 on that machine (seconds per batch go to ``timing_rank<r>.csv``).
ImageNet models are scored at 224 px; ``--size`` and the sample counts are options.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ...analysis.attribution import METHODS, attribute_many
from ...analysis.faithfulness import (cascading_randomisation, deletion_insertion, faithfulness_correlation,
                                      infidelity, pixel_relevance)
from ...analysis.stats import spearman
from ...core.gates import check_temperature
from ...data.imagenette import IMAGENETTE_TO_IMAGENET, data_root_from_env, imagenette_files, load_image
from ...models.zoo import BUNDLED, PAPER_MODELS, load_model
from ...paths import RESULTS
from ..records import (append_line, check_identity, list_sha256, load_csv_part, save_csv_part, state_sha256,
                       write_csv)
from .report import CONTROL, RANDOMISATION, format_summary, summarise

# Guided Grad-CAM is available but not in the default run: its metrics cost ~8% of the time budget.
DEFAULT_METHODS = tuple(m for m in METHODS if m != "guided_gradcam")
COLUMNS = ("image", "file", "label", "method", "metric", "randomised_layers", "layers", "value")
METRICS_PER_IMAGE = 4  # deletion AUC, insertion AUC, faithfulness correlation, infidelity


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that changes a score; stored in ``<out>/config.json`` and checked when resuming."""
    model: str = BUNDLED
    images: int = 500
    seed: int = 0
    batch: int = 10
    methods: tuple[str, ...] = DEFAULT_METHODS
    temperature: float = 0.3
    size: int | None = None       # image side in pixels: 160 for the bundled model, else 224 (see above)
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


def validate(settings: Settings) -> Settings:
    """The settings with ``size`` filled in, or a ValueError naming the first bad one."""
    check_temperature(settings.temperature)
    if settings.model not in PAPER_MODELS + (BUNDLED,):
        raise ValueError(f"unknown model {settings.model!r}: choose one of {PAPER_MODELS + (BUNDLED,)}")
    unknown = set(settings.methods) - set(METHODS)
    if unknown or not settings.methods:
        raise ValueError(f"unknown or no methods {sorted(unknown)}; choose from {sorted(METHODS)}")
    for name in ("images", "batch", "steps", "correlation_runs", "infidelity_samples", "randomisation_stages"):
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(settings, name)}")
    if settings.size is None:
        settings = dataclasses.replace(settings, size=160 if settings.model == BUNDLED else 224)
    return settings


def evaluation_images(root, count: int, seed: int = 0) -> list[tuple[int, str, int]]:
    """``(index, path, label)`` of ``count`` val images drawn without replacement by a seeded permutation."""
    files = imagenette_files(root, "val")
    if not 0 < count <= len(files):
        raise ValueError(f"images must be in 1..{len(files)}, got {count}")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:count]
    return [(int(i), *files[int(i)]) for i in order]


@contextlib.contextmanager
def _seeded(images: torch.Tensor, seed: int):
    """A seeded scope for the global generator (Captum's SmoothGrad draws its noise from it)."""
    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)
        yield


def batch_scores(model, images: torch.Tensor, targets: torch.Tensor, settings: Settings, seed: int,
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
    correlations = faithfulness_correlation(model, images, targets, relevance, generator, runs=settings.correlation_runs)
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


def _distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device) under torchrun, or (0, 1, default device) when run directly."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        # Ranks finish at different times and rank 0 then merges: allow long waits at the barrier.
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=12))
    if world > 1 and not cuda:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return (dist.get_rank() if world > 1 else 0), world, device


@dataclasses.dataclass
class _Job:
    """A validated run: its settings, model, image batches and where each batch's part goes."""
    settings: Settings
    out: Path
    model: torch.nn.Module
    batches: list
    randomised: list
    imagenet: bool

    def part(self, b: int) -> Path:
        return self.out / "parts" / f"batch_{b:04d}.csv"

    def randomise(self, b: int) -> int:
        """How many images of batch b get the randomisation check (the first ``randomisation_images`` overall)."""
        return max(0, min(len(self.batches[b]), self.settings.randomisation_images - b * self.settings.batch))

    def rows(self, b: int) -> int:
        """Score rows a complete part of batch b holds."""
        methods = len(self.settings.methods)
        return (len(self.batches[b]) * (methods + 1) * METRICS_PER_IMAGE
                + self.randomise(b) * methods * len(self.randomised))


def prepare(settings: Settings, data_root, out, device, rank: int = 0) -> _Job:
    """Validate the settings and the data, load the model, then check or store the run's identity.

    ``config.json`` is written (on rank 0) only once everything has been checked, so a refused run leaves
    no record that would block its corrected rerun.
    """
    settings = validate(settings)
    data_root = Path(data_root).resolve()
    picks = evaluation_images(data_root, settings.images, settings.seed)
    model = load_model(settings.model, device).to(memory_format=torch.channels_last)  # ~1.5x faster convs on CPU
    identity = {**dataclasses.asdict(settings), "data_root": str(data_root),
                "images_sha256": list_sha256((i, Path(p).relative_to(data_root).as_posix(), y) for i, p, y in picks),
                "weights_sha256": state_sha256(model)}
    out = Path(out)
    if rank == 0:
        check_identity(out, identity)
    batches = [picks[i:i + settings.batch] for i in range(0, len(picks), settings.batch)]
    randomised = list(cascading_randomisation(model, settings.randomisation_stages, settings.seed))
    return _Job(settings, out, model, batches, randomised, settings.model != BUNDLED)


def score_batch(job: _Job, b: int, device) -> list[dict]:
    """Decode batch b, score it and return its rows in the part's column order."""
    batch, s = job.batches[b], job.settings
    images = torch.stack([load_image(path, s.size) for _, path, _ in batch]).to(device)
    targets = torch.tensor([IMAGENETTE_TO_IMAGENET[y] if job.imagenet else y for _, _, y in batch], device=device)
    rows = batch_scores(job.model, images, targets, s, seed=s.seed * 1_000_003 + b, randomised=job.randomised,
                        randomise=job.randomise(b))
    for row in rows:
        index, path, label = batch[row.pop("row")]
        row.update(image=index, file=Path(path).name, label=label)
    return [{k: r[k] for k in COLUMNS} for r in rows]


def run(settings: Settings, data_root, out, progress: bool = True) -> list[dict] | None:
    """Run (or resume) the evaluation; returns the summary rows on rank 0, None on other ranks."""
    rank, world, device = _distributed()
    job = prepare(settings, data_root, out, device, rank)
    if world > 1:
        dist.barrier()
    mine = [b for b in range(len(job.batches)) if b % world == rank]
    todo = [b for b in mine if load_csv_part(job.part(b), job.rows(b)) is None]
    bar = tqdm(todo, desc=f"evaluate {job.settings.model}" + (f" rank {rank}" if world > 1 else ""), position=rank,
               disable=not progress, initial=len(mine) - len(todo), total=len(mine))
    for b in bar:
        started = time.perf_counter()
        save_csv_part(job.part(b), score_batch(job, b, device))
        append_line(job.out / f"timing_rank{rank}.csv", f"{b},{time.perf_counter() - started:.1f}")
    if world > 1:
        dist.barrier()
    return merge(job) if rank == 0 else None


def merge(job: _Job) -> list[dict]:
    """Check every part, then write ``scores.csv`` and ``summary.csv`` (neither is touched if a part is bad)."""
    parts = {b: load_csv_part(job.part(b), job.rows(b)) for b in range(len(job.batches))}
    missing = [b for b, rows in parts.items() if rows is None]
    if missing:
        raise RuntimeError(f"batches {missing} have no valid results in {job.out / 'parts'}: run the command again")
    scores = [row for b in sorted(parts) for row in parts[b]]
    summary = summarise(scores)
    write_csv(job.out / "scores.csv", scores)
    write_csv(job.out / "summary.csv", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", default=data_root_from_env(), help="Imagenette root (default $IMAGENETTE_ROOT)")
    parser.add_argument("--out", default=None, help="results folder (default results/faithfulness/<model>)")
    parser.add_argument("--smoke", action="store_true", help="a few images and samples: every method and metric, fast")
    for field in dataclasses.fields(Settings):
        value = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, tuple):
            parser.add_argument(flag, nargs="+", default=None, choices=sorted(METHODS))
        else:
            kind = int if field.name == "size" else type(value)
            shown = "160 for the bundled model, else 224" if field.name == "size" else value
            parser.add_argument(flag, type=kind, default=None, help=f"default {shown}")
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("no data: pass --data or set $IMAGENETTE_ROOT to a folder with val/<wnid>/")
    chosen = {**(SMOKE if args.smoke else {}),
              **{f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if getattr(args, f.name) is not None}}
    if "methods" in chosen:
        chosen["methods"] = tuple(chosen["methods"])
    settings = Settings(**chosen)
    out = Path(args.out or RESULTS / "faithfulness" / (settings.model + ("-smoke" if args.smoke else "")))
    summary = run(settings, args.data, out)
    if summary is not None:
        print(format_summary(summary))
        print(f"scores and summary in {out}")
