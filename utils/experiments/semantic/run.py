"""The Semantic Pullbacks table (arXiv:2507.22832 v6), reproduced: its explainers scored by its six metrics and Focus.

    python -m utils.experiments.semantic --model resnet50_imagenette --data /path/to/imagenette2-224
    torchrun --nproc_per_node=2 -m utils.experiments.semantic --model densenet121_imagenette --data ...
    python -m utils.experiments.semantic --model resnet50 --data /path/to/imagenet/val     # online, see below

Three kinds of part, each one image (or one mosaic), so that a run stopped at any moment keeps its work and a
rerun resumes: ``single_<k>`` scores the single-pass explainers (every row but the four below) on the k-th
seeded val image with the six metrics (``--images``, default 200); ``smooth_<k>`` the SmoothGrad/FusionGrad
rows and their pullback versions (``--smooth-images``, default 50: their Max-Sensitivity alone costs 500-1,000
backward passes an image); ``focus_<k>`` Focus on the k-th mosaic (``--mosaics``, default 200), every explainer.
The parts run in proportion (the k-th part of each kind at the same fraction of its count), so a stopped run
holds comparable prefixes of all three. Every draw is seeded per part: sharded, resumed and single runs write
the same numbers. Per-image scores go to ``parts/`` and, once every part is done, ``scores.csv``; the seconds
each explainer and metric took per image to ``timing.csv``. ``--collect`` merges a running or stopped run's
finished parts into the same files; ``python -m utils.experiments.pages`` then writes the page.

Online, the paper's three models (torchvision's ``resnet50`` and ``vgg11_bn`` with ``IMAGENET1K_V1``, timm's
``pvt_v2_b1``; weights downloaded on first use) on an ImageNet val folder ``<val>/<wnid>/*.JPEG`` (the 1,000
synset folders), at the paper's count with every explainer (PVT has no Grad-CAM layer), on a GPU:

    for m in resnet50 vgg11_bn pvt_v2_b1; do
        python -m utils.experiments.semantic --model $m --data /path/to/imagenet/val --images 1000 \
            --smooth-images 1000 --mosaics 500; done
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from ...analysis.evaluation import attributions_of, score
from ...analysis.explainers import EXPLAINERS, SMOOTHING, available, seeded
from ...data.imagenette import data_root_from_env
from ...paths import RESULTS
from ..records import state_sha256, write_csv, write_json
from ..runner import (Part, check_at_least, check_input_size, run_identity, run_parts, settings_arguments,
                      settings_from_args)
from . import sources
from .report import COLUMNS, FOCUS, PROGRESS, part_rows, timing_rows

METRIC_NAMES = ("Infidelity", "Faith.Corr", "Faith.Est", "Mono.Corr", "Max.Sens", "Rand.Logit")
KINDS = ("single", "smooth", "focus")


@dataclasses.dataclass(frozen=True)
class SemanticSettings:
    """Everything that changes a score; stored in ``<out>/config.json`` and checked when resuming."""
    model: str = dataclasses.field(default="resnet50_imagenette", metadata={"choices": sources.MODELS})
    images: int = 200
    smooth_images: int = 50
    mosaics: int = 200
    seed: int = 0
    size: int = 224
    explainers: tuple[str, ...] = dataclasses.field(default=tuple(EXPLAINERS),
                                                    metadata={"choices": list(EXPLAINERS)})
    metrics: tuple[str, ...] = dataclasses.field(default=METRIC_NAMES, metadata={"choices": list(METRIC_NAMES)})


SMOKE = dict(images=2, smooth_images=1, mosaics=2, size=112)


def validate(settings: SemanticSettings) -> SemanticSettings:
    """The settings checked (a ValueError naming the first bad one)."""
    if settings.model not in sources.MODELS:
        raise ValueError(f"unknown model {settings.model!r}: choose one of {sources.MODELS}")
    check_at_least(settings, 0, ("images", "smooth_images", "mosaics"))
    if not (settings.images or settings.smooth_images or settings.mosaics):
        raise ValueError("nothing to do: images, smooth_images and mosaics are all 0")
    if settings.size < 32 or settings.size % 2:
        raise ValueError(f"size must be an even number >= 32 (mosaics are 2 x 2 tiles), got {settings.size}")
    for name, chosen, known in (("explainers", settings.explainers, EXPLAINERS), ("metrics", settings.metrics,
                                                                               METRIC_NAMES)):
        unknown = sorted(set(chosen) - set(known))
        if unknown or not chosen:
            raise ValueError(f"unknown or no {name} {unknown}: choose from {list(known)}")
    return settings


def part_order(settings: SemanticSettings) -> list[tuple[str, int]]:
    """``(kind, k)`` of every part, the k-th part of each kind at the fraction ``(k + 1) / count`` of its count."""
    counts = dict(zip(KINDS, (settings.images, settings.smooth_images, settings.mosaics)))
    parts = [(kind, k) for kind in KINDS for k in range(counts[kind])]
    return sorted(parts, key=lambda p: ((p[1] + 1) / counts[p[0]], KINDS.index(p[0])))


@dataclasses.dataclass
class _SemanticJob:
    """A validated run: its settings, model, picked images and one part per image or mosaic."""
    settings: SemanticSettings
    out: Path
    identity: dict
    model: torch.nn.Module
    picks: list
    explainers: dict

    def __post_init__(self):
        self.parts = [Part(f"{kind}_{k:04d}", self._items(kind, k), key=(kind, k))
                      for kind, k in part_order(self.settings)]
        self._pool = None

    def _items(self, kind: str, k: int) -> tuple:
        return (kind, k) if kind == FOCUS else (kind, self.picks[k][0])

    def rows_for(self, kind: str) -> list[str]:
        smooth = kind == "smooth"
        return [n for n in self.explainers if kind == FOCUS or (n in SMOOTHING) == smooth]

    def compute(self, part: Part, device) -> list[dict]:
        kind, k = part.key
        seed = (self.settings.seed * 1_000_003 + k) * len(KINDS) + KINDS.index(kind)
        if kind == FOCUS:
            return self._focus(k, seed, device)
        s = self.settings
        image = sources.load_picked(s.model, self.picks[k][1], s.size)[None].to(device)
        targets = torch.tensor([self.picks[k][2]], device=device)
        names = self.rows_for(kind)
        explainers = seeded(names, seed, device)
        timings = {}
        attributions = attributions_of(self.model, image, targets, explainers, timings)
        scores = score(self.model, image, targets, attributions, names, _metric_specs(s.metrics), seed, timings)
        sample = {"kind": kind, "item": k, "image": self.picks[k][0], "file": Path(self.picks[k][1]).name,
                  "label": self.picks[k][2]}
        rows = [{**sample, "explainer": n, "metric": m, "value": float(v)}
                for m, by_name in scores.items() for n, values in by_name.items() for v in values.tolist()]
        return rows + [{**sample, "explainer": n, "metric": "seconds", "value": round(t, 3)}
                       for n, t in timings.items()]

    def _focus(self, k: int, seed: int, device) -> list[dict]:
        from ...analysis.metrics import focus, make_mosaics

        pool, labels = self._mosaic_pool(device)
        generator = torch.Generator().manual_seed(seed)
        mosaic, target, quadrants = make_mosaics(pool, labels, generator, 1, tile=self.settings.size // 2)
        explainers = seeded(self.rows_for(FOCUS), seed, device)
        timings = {}
        attributions = attributions_of(self.model, mosaic, target.to(device), explainers, timings)
        scores = focus(attributions, mosaic, quadrants)
        where = "".join("1" if q else "0" for q in quadrants[0].tolist())  # the target's quadrants
        sample = {"kind": FOCUS, "item": k, "image": "", "file": f"quadrants {where}", "label": int(target[0])}
        return ([{**sample, "explainer": n, "metric": "Focus", "value": float(v[0])} for n, v in scores.items()]
                + [{**sample, "explainer": n, "metric": "seconds", "value": round(t, 3)} for n, t in timings.items()])

    def _mosaic_pool(self, device):
        """Every picked image at tile size with its label: the pool the mosaics draw from (decoded once)."""
        if self._pool is None:
            tile = self.settings.size // 2
            images = torch.stack([sources.load_picked(self.settings.model, p, tile) for _, p, _ in self.picks])
            self._pool = (images.to(device), torch.tensor([y for _, _, y in self.picks]))
        return self._pool


def _metric_specs(names) -> dict:
    from ...analysis.metrics import METRICS

    return {n: METRICS[n] for n in names}


def prepare(settings: SemanticSettings, data_root, out, device, pretrained: bool = True) -> _SemanticJob:
    """Validate the settings and the data, load the model and build the run's identity; writes nothing."""
    settings = validate(settings)
    data_root = Path(data_root).resolve()
    count = max(settings.images, settings.smooth_images, settings.mosaics, 2)
    picks = sources.picks_for(settings.model, data_root, count, settings.seed)
    # channels_last: CPUs run convolutions faster in it (benchmarks/README.md); the same scores up to float rounding
    model = sources.study_model(settings.model, device, pretrained).to(memory_format=torch.channels_last)
    check_input_size({settings.model: model}, settings.size, device)
    names = available(model, settings.explainers)
    identity = run_identity(settings, data_root, picks, state_sha256(model), explainers_run=names)
    return _SemanticJob(settings, Path(out), identity, model, picks, dict.fromkeys(names))


def run(settings: SemanticSettings, data_root, out, progress: bool = True, pretrained: bool = True):
    """Run (or resume) the study; returns the merged score rows on rank 0, None on other ranks."""
    return run_parts(lambda device, rank: prepare(settings, data_root, out, device, pretrained), merge,
                     f"semantic {settings.model}", progress)


def merge(out: Path, rows: list[dict], complete: bool = True, parts: int | None = None) -> list[dict]:
    """Write ``scores.csv`` (every score), ``timing.csv`` (seconds per image per explainer and metric) and
    ``progress.json`` (whether every part is in, and how many are)."""
    scores = [r for r in rows if r["metric"] != "seconds"]
    write_csv(out / "scores.csv", [{c: r[c] for c in COLUMNS} for r in scores])
    write_csv(out / "timing.csv", timing_rows(rows))
    done = len({(r["kind"], str(r["item"])) for r in rows})
    write_json(out / PROGRESS, {"complete": complete, "parts_done": done, "parts": done if parts is None else parts})
    return scores


def collect(out) -> list[dict]:
    """Merge the finished parts of a run that is still going or was stopped (the page reads the merged files)."""
    out = Path(out)
    if not (out / "config.json").exists():
        raise FileNotFoundError(f"no run in {out} (no config.json)")
    config = json.loads((out / "config.json").read_text())
    total = len(part_order(SemanticSettings(**{f.name: config[f.name] for f in dataclasses.fields(SemanticSettings)})))
    rows = part_rows(out)
    done = len({(r["kind"], str(r["item"])) for r in rows})
    return merge(out, rows, complete=done == total, parts=total)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", default=data_root_from_env(),
                        help="Imagenette root (default $IMAGENETTE_ROOT); for an online model, an ImageNet val folder")
    parser.add_argument("--out", default=None, help="results folder (default results/semantic/<model>)")
    parser.add_argument("--smoke", action="store_true", help="2 images, 1 smoothing image, 2 mosaics at 112 px")
    parser.add_argument("--collect", action="store_true",
                        help="only merge the finished parts of the run in --out (one going or stopped) for the page")
    return settings_arguments(parser, SemanticSettings)


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.collect:
        out = Path(args.out or RESULTS / "semantic" / (args.model or SemanticSettings.model))
        print(f"{len(collect(out))} scores of the finished parts merged in {out}")
        return
    if args.data is None:
        parser.error("no data: pass --data (Imagenette root, or an ImageNet val folder for an online model)")
    settings = settings_from_args(SemanticSettings, args, SMOKE if args.smoke else {})
    out = Path(args.out or RESULTS / "semantic" / (settings.model + ("-smoke" if args.smoke else "")))
    began = time.perf_counter()
    scores = run(settings, args.data, out)
    if scores is not None:
        print(f"{len(scores)} scores in {out} ({time.perf_counter() - began:.0f} s)")
