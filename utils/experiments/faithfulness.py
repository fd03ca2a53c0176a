"""Faithfulness evaluation of excitation pullbacks against Captum's attribution baselines.

    python -m utils.evaluate --data ../shared/data/imagenette2-224           # bundled model, 500 images
    torchrun --nproc_per_node=4 -m utils.evaluate --model resnet50 ...       # same, sharded

Scores N seeded Imagenette val images (default 500) with every method of
:mod:`utils.explainers` plus a random-attribution control, on deletion / insertion AUC, faithfulness
correlation, infidelity (:mod:`utils.faithfulness`) and, on the first ``--randomisation-images``,
the cascading model-randomisation check. Images go in fixed batches; each finished batch is written
to ``<out>/parts/`` and skipped when the command is run again, so an interrupted run resumes. Under
``torchrun`` rank r takes batches r, r + W, ... (gloo on CPU, NCCL on GPUs) and rank 0 merges
``scores.csv`` (one row per image, method, metric) and ``summary.csv`` (mean and bootstrap 95% CI).
Every random draw is seeded per batch, so sharded, resumed and single runs write the same numbers.

Default budget: the whole default run (500 images, 9 methods + control, every metric, the
randomisation check on 20 images) must fit 45 minutes on a 2-core CPU. At 224 px it would take
about twice that, so the bundled model is scored at 160 px (its training resolution in epochs
13-14; 88.5% val accuracy there, 87.2% at 224 px) with 8 SmoothGrad samples, 8 Integrated-Gradients
nodes, 6 deletion / insertion steps, 24 subsets for faithfulness correlation and 4 infidelity
samples: about 45 s per batch of 10 at this machine's full speed (seconds per batch are appended to
``timing_rank<r>.csv``). ImageNet models are scored at 224 px; ``--size`` and the sample counts are
options.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..data.imagenette import IMAGENETTE_TO_IMAGENET, data_root_from_env, imagenette_files, load_image
from ..analysis.attribution import METHODS, attribute_many
from ..analysis.faithfulness import (cascading_randomisation, deletion_insertion, faithfulness_correlation, infidelity,
                           pixel_relevance)
from ..models.zoo import BUNDLED, load_model
from ..paths import RESULTS
from .records import check_settings, read_csv, write_csv
from ..analysis.stats import bootstrap_ci, spearman

CONTROL = "random"  # attributions drawn from N(0, 1): what a score means when it carries no information
LOWER_IS_BETTER = {"deletion_auc", "infidelity"}
# Guided Grad-CAM is available but not in the default run: its metrics cost ~8% of the time budget.
DEFAULT_METHODS = tuple(m for m in METHODS if m != "guided_gradcam")


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


def evaluation_images(root, count: int, seed: int = 0) -> list[tuple[int, str, int]]:
    """``(index, path, label)`` of ``count`` val images drawn without replacement by a seeded permutation."""
    files = imagenette_files(root, "val")
    if not 0 < count <= len(files):
        raise ValueError(f"images must be in 1..{len(files)}, got {count}")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:count]
    return [(int(i), *files[int(i)]) for i in order]


def batch_scores(model, images: torch.Tensor, targets: torch.Tensor, settings: Settings, seed: int,
                 randomised=(), randomise: int = 0) -> list[dict]:
    """Scores of one batch: rows ``{"row", "method", "metric", "value"}`` with ``row`` the position in the batch.

    ``randomised`` holds ``(label, model)`` pairs from :func:`cascading_randomisation`; the first
    ``randomise`` images of the batch get the randomisation check against them.
    """
    generator = torch.Generator().manual_seed(seed)
    options = {m: settings.method_options(m) for m in settings.methods}
    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)  # Captum's SmoothGrad draws its noise from the global generator
        attributions = attribute_many(model, images, targets, settings.methods, options)
    attributions[CONTROL] = torch.randn(images.shape, generator=generator).to(images)
    relevance = {m: pixel_relevance(a) for m, a in attributions.items()}
    rows = []

    def add(method, metric, values):
        rows.extend({"row": i, "method": method, "metric": metric, "value": float(v)}
                    for i, v in enumerate(values.tolist()))

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
    if randomise:
        x, t = images[:randomise], targets[:randomise]
        for label, random_model in randomised:
            with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
                torch.manual_seed(seed)
                changed = attribute_many(random_model, x, t, settings.methods, options)
            for m in settings.methods:
                add(m, f"randomisation_spearman[{label}]", spearman(relevance[m][:randomise].abs(),
                                                                    pixel_relevance(changed[m]).abs()))
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


def summarise(scores: list[dict]) -> list[dict]:
    """Mean, bootstrap 95% CI and count per (method, metric); NaN scores (e.g. constant maps) are dropped."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in scores:
        groups.setdefault((row["method"], row["metric"]), []).append(float(row["value"]))
    summary = []
    for (method, metric), values in groups.items():
        v = torch.tensor(values, dtype=torch.float64)
        v = v[~v.isnan()]
        low, high = bootstrap_ci(v) if len(v) > 1 else (float("nan"), float("nan"))
        summary.append({"method": method, "metric": metric, "mean": round(v.mean().item(), 6),
                        "ci_low": round(low, 6), "ci_high": round(high, 6), "n": len(v),
                        "better": "lower" if metric in LOWER_IS_BETTER or metric.startswith("randomisation")
                        else "higher"})
    return summary


def run(settings: Settings, data_root, out, progress: bool = True) -> list[dict] | None:
    """Run (or resume) the evaluation; returns the summary rows on rank 0, None on other ranks."""
    rank, world, device = _distributed()
    if settings.size is None:
        settings = dataclasses.replace(settings, size=160 if settings.model == BUNDLED else 224)
    out = Path(out)
    parts = out / "parts"
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
        check_settings(out, dataclasses.asdict(settings))
    if world > 1:
        dist.barrier()
    unknown = set(settings.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")
    model = load_model(settings.model, device).to(memory_format=torch.channels_last)  # ~1.5x faster convs on CPU
    picks = evaluation_images(data_root, settings.images, settings.seed)
    imagenet = settings.model != BUNDLED
    randomised = list(cascading_randomisation(model, settings.randomisation_stages, settings.seed))
    batches = [picks[i:i + settings.batch] for i in range(0, len(picks), settings.batch)]
    mine = [b for b in range(len(batches)) if b % world == rank]
    todo = [b for b in mine if not (parts / f"batch_{b:04d}.csv").exists()]
    bar = tqdm(todo, desc=f"evaluate {settings.model}" + (f" rank {rank}" if world > 1 else ""), position=rank,
               disable=not progress, initial=len(mine) - len(todo), total=len(mine))
    for b in bar:
        batch = batches[b]
        images = torch.stack([load_image(path, settings.size) for _, path, _ in batch]).to(device)
        labels = [label for _, _, label in batch]
        targets = torch.tensor([IMAGENETTE_TO_IMAGENET[y] if imagenet else y for y in labels], device=device)
        first = b * settings.batch
        randomise = max(0, min(len(batch), settings.randomisation_images - first))
        started = time.perf_counter()
        rows = batch_scores(model, images, targets, settings, seed=settings.seed * 1_000_003 + b,
                            randomised=randomised, randomise=randomise)
        for row in rows:
            index, path, label = batch[row.pop("row")]
            row.update(image=index, file=Path(path).name, label=label)
        write_csv(parts / f"batch_{b:04d}.csv", [{k: r[k] for k in ("image", "file", "label", "method", "metric",
                                                                     "value")} for r in rows])
        with open(out / f"timing_rank{rank}.csv", "a") as f:
            f.write(f"{b},{time.perf_counter() - started:.1f}\n")
    if world > 1:
        dist.barrier()
    if rank != 0:
        return None
    missing = [b for b in range(len(batches)) if not (parts / f"batch_{b:04d}.csv").exists()]
    if missing:
        raise RuntimeError(f"batches {missing} have no results in {parts}")
    scores = [row for b in range(len(batches)) for row in read_csv(parts / f"batch_{b:04d}.csv")]
    write_csv(out / "scores.csv", scores)
    summary = summarise(scores)
    write_csv(out / "summary.csv", summary)
    return summary


def main(argv=None):
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


def load_results(results_dir=RESULTS / "faithfulness") -> dict[str, dict]:
    """Every finished evaluation under ``results_dir`` (one folder per run, e.g. ``bundled``), from its files
    alone: name -> ``{"config": settings dict, "summary": summary rows, "scores": per-image rows}``."""
    return {folder.name: {"config": json.loads((folder / "config.json").read_text()),
                          "summary": read_csv(folder / "summary.csv"), "scores": read_csv(folder / "scores.csv")}
            for folder in sorted(Path(results_dir).iterdir()) if (folder / "summary.csv").exists()}


def short_metric(metric: str) -> str:
    """``randomisation_spearman[top 16/31 layers]`` -> ``rand. top 16/31``; other names unchanged."""
    return "rand. " + metric.split("[")[1].split(" layers")[0] if metric.startswith("randomisation") else metric


def format_summary(summary: list[dict], metrics=None) -> str:
    """The summary as a plain-text table: one line per method, one column per metric (mean [95% CI])."""
    metrics = metrics or list(dict.fromkeys(r["metric"] for r in summary))
    methods = list(dict.fromkeys(r["method"] for r in summary))
    cell = {(r["method"], r["metric"]): f"{float(r['mean']):.3f} [{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}]"
            for r in summary}
    lines = ["method".ljust(22) + "".join(short_metric(m).ljust(25) for m in metrics)]
    for method in methods:
        if any((method, m) in cell for m in metrics):
            lines.append(method.ljust(22) + "".join(cell.get((method, m), "-").ljust(25) for m in metrics))
    return "\n".join(lines)


def paired_difference(scores: list[dict], a: str, b: str, metric: str) -> tuple[float, float, float, int] | None:
    """Mean of ``score(a) - score(b)`` over the images both methods scored on ``metric``, with its
    percentile bootstrap 95% CI and the number of pairs; None when they share no image.

    Every method is scored on the same images (and the same perturbations), so the paired difference is the
    right comparison: it removes the image-to-image spread that dominates each method's own interval.
    """
    def by_image(method):
        return {r["image"]: float(r["value"]) for r in scores if r["method"] == method and r["metric"] == metric}
    va, vb = by_image(a), by_image(b)
    shared = [i for i in va if i in vb and va[i] == va[i] and vb[i] == vb[i]]  # drop NaN on either side
    if len(shared) < 2:
        return None
    d = torch.tensor([va[i] - vb[i] for i in shared], dtype=torch.float64)
    low, high = bootstrap_ci(d)
    return d.mean().item(), low, high, len(shared)


def compare(scores: list[dict], ours: str, others) -> list[str]:
    """Plain-words verdicts of method ``ours`` against each of ``others`` on every metric they share, from the
    per-image ``scores``: "better than" / "worse than" when the 95% CI of the paired difference
    (:func:`paired_difference`) excludes 0 in that direction, "no clear difference from" otherwise; each with
    the mean difference ``ours - other``."""
    lines = []
    for metric in dict.fromkeys(r["metric"] for r in scores):
        lower = metric in LOWER_IS_BETTER or metric.startswith("randomisation")
        verdicts = []
        for other in others:
            diff = None if other == ours else paired_difference(scores, ours, other, metric)
            if diff is None:
                continue
            mean, low, high, _ = diff
            if low > 0 or high < 0:
                verdict = "better than" if (low > 0) != lower else "worse than"
            else:
                verdict = "no clear difference from"
            verdicts.append(f"{verdict} {other} ({mean:+.3f})")
        if verdicts:
            lines.append(f"{ours} on {short_metric(metric)}: " + ", ".join(verdicts))
    return lines


if __name__ == "__main__":
    main()
