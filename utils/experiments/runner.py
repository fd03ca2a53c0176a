"""The skeleton every experiment runner shares (faithfulness, path stability, the alignment study, its control
and its curves over training).

* :func:`distributed`: rank, world size and device, under ``torchrun`` or alone;
* :func:`seeded_images` / :func:`evaluation_images`: the seeded image picks;
* :func:`check_at_least`, :func:`check_input_size`: settings checked before anything is written;
* :func:`run_identity`: what ``config.json`` holds and a resumed run must match;
* :class:`Part` and :func:`run_parts`: the part loop. A job names its parts; under the folder's writer lock
  rank r computes the parts r, r + W, ... that have no valid file yet and saves each as a checked file (a CSV
  of rows, or with :data:`ARRAY_PARTS` an npz of named arrays) that records its size, the run's id and the
  items it covers (:mod:`.records`); rank 0 then merges them;
* :func:`settings_arguments` / :func:`settings_from_args`: the command line built from a settings dataclass
  (a field's ``metadata`` may give its ``type``, ``choices``, ``help`` and shown ``default``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable, Generic, Protocol, TypeVar

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..data.imagenette import imagenette_files, load_image
from .records import (WriterLock, append_line, check_identity, list_sha256, load_array_part, load_csv_part,
                      read_lock, run_id, save_array_part, save_csv_part)


def distributed() -> tuple[int, int, torch.device]:
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


# --- images and settings -------------------------------------------------------------------------------

def seeded_images(root, split: str, seed: int) -> list[tuple[int, str, int]]:
    """Every image of a split as ``(index in torchvision's order, path, label)``, in a seeded random order."""
    files = imagenette_files(root, split)
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    return [(i, *files[i]) for i in order]


def evaluation_images(root, count: int, seed: int = 0, split: str = "val") -> list[tuple[int, str, int]]:
    """``(index, path, label)`` of ``count`` images drawn without replacement by a seeded permutation (so
    fewer images with the same seed are a prefix of more)."""
    images = seeded_images(root, split, seed)
    if not 0 < count <= len(images):
        raise ValueError(f"{split} images must be in 1..{len(images)}, got {count}")
    return images[:count]


def load_images(picks: list, positions, size: int, device) -> torch.Tensor:
    """The picked images at ``positions`` decoded to (len(positions), 3, size, size) in [-1, 1] on ``device``."""
    return torch.stack([load_image(picks[i][1], size) for i in positions]).to(device)


def check_at_least(settings, minimum, names) -> None:
    """A ValueError naming the first of the settings ``names`` below ``minimum``."""
    for name in names:
        if getattr(settings, name) < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {getattr(settings, name)}")


def check_input_size(models: dict, size: int, device) -> None:
    """A ValueError unless every model (name -> module) takes images of side ``size``: one forward pass of a
    blank image each, so that a size the networks cannot take is refused before anything is written."""
    blank = torch.zeros(1, 3, size, size, device=device)
    for name, model in models.items():
        try:
            with torch.no_grad():
                model(blank)
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"model {name!r} cannot take {size} x {size} images ({type(error).__name__}: "
                             f"{error}); choose a larger --size") from error


def run_identity(settings, data_root: Path, picks: list, weights, **extra) -> dict:
    """What ``config.json`` holds and a resumed run must match: the settings (a dataclass), ``extra`` (e.g.
    the target scheme), the data root, the SHA-256 of the picked images' list, and ``weights`` (the weights'
    SHA-256, or a dict of them)."""
    return {**dataclasses.asdict(settings), **extra, "data_root": str(data_root),
            "images_sha256": list_sha256((i, Path(p).relative_to(data_root).as_posix(), y) for i, p, y in picks),
            "weights_sha256": weights}


# --- the part loop -------------------------------------------------------------------------------------

K = TypeVar("K")


@dataclasses.dataclass(frozen=True)
class Part(Generic[K]):
    """One resumable piece of a run: ``<out>/parts/<name>.<suffix>`` (its name also keys the timing files), the
    ``items`` it covers (JSON-able, e.g. image indices, recorded in its check file; None for a part of every
    image the run's identity names) and ``key``: what else the job needs to compute it, of one type per study
    (e.g. the image positions of a batch, an epoch, or the kind of part)."""
    name: str
    items: tuple | None
    key: K = None


@dataclasses.dataclass(frozen=True)
class PartFormat:
    """How a job's parts are stored: the file suffix, ``save(path, value, run, items)``, ``load(path, run=,
    items=)`` (None when the file is missing or fails its check) and ``merge(parts, values)``: the parts and
    their values, in part order, made into what the job's merge function receives."""
    suffix: str
    save: Callable
    load: Callable
    merge: Callable[[list[Part], list], object]


CSV_PARTS = PartFormat(".csv", save_csv_part, load_csv_part,
                       lambda parts, values: [row for rows in values for row in rows])
"""Rows (dicts with the same keys); merged into one list of rows."""
ARRAY_PARTS = PartFormat(".npz", save_array_part, load_array_part,
                         lambda parts, values: {part.name: value for part, value in zip(parts, values)})
"""Named arrays (dicts of tensors); merged into a dict part name -> its arrays."""


class Job(Protocol[K]):
    """What :func:`run_parts` needs of a runner: the results folder, the run's identity (on rank 0), the parts,
    and a function computing one part (for :data:`CSV_PARTS`, rows: dicts with the same keys, in column order).
    A job may also set ``part_format`` (default :data:`CSV_PARTS`) and ``identity_keys``: the identity's keys
    that must match on resuming and make the run's id (default all)."""
    out: Path
    identity: dict | None
    parts: list[Part[K]]

    def compute(self, part: Part[K], device): ...


def batches(count: int, size: int) -> list[range]:
    """The positions 0 .. count - 1 in consecutive batches of ``size`` (the last one may be shorter)."""
    return [range(i, min(i + size, count)) for i in range(0, count, size)]


def run_parts(prepare: Callable[[torch.device, int], Job], merge: Callable[[Path, object], object],
              label: str, progress: bool = True):
    """Run (or resume) a job under torchrun or alone; ``merge(out, merged parts)`` on rank 0, else None.

    ``prepare(device, rank)`` validates the settings, picks the images and loads the models, writing nothing
    (rank 0's job carries the run's identity). Rank 0 then takes the folder's :class:`~.records.WriterLock`
    and checks or stores the identity; every rank computes its parts that have no valid file, checking that
    the lock is still its run's before each save (each part's seconds go to ``timing_rank<r>.csv``); rank 0
    checks every part and merges them, then releases the lock.
    """
    rank, world, device = distributed()
    job = prepare(device, rank)
    keys = getattr(job, "identity_keys", None)
    lock = WriterLock(job.out, run_id(job.identity, keys)) if rank == 0 else None
    with lock or contextlib.nullcontext():
        if rank == 0:
            check_identity(job.out, job.identity, keys)
        if world > 1:
            dist.barrier()
        if lock is None:  # another rank of this torchrun job: rank 0 holds the lock, which names the run
            lock = WriterLock(job.out, (read_lock(job.out / WriterLock.NAME) or {}).get("run", ""))
        _compute_parts(job, lock, rank, world, device, label, progress)
        if world > 1:
            dist.barrier()
        if rank == 0:
            scores = merged_scores(job, lock.holder["run"])
            lock.check()
            return merge(job.out, scores)
    return None


def part_format(job: Job) -> PartFormat:
    return getattr(job, "part_format", CSV_PARTS)


def part_path(job: Job, part: Part) -> Path:
    return job.out / "parts" / f"{part.name}{part_format(job).suffix}"


def _compute_parts(job: Job, lock: WriterLock, rank: int, world: int, device, label: str, progress: bool) -> None:
    run, fmt = lock.holder["run"], part_format(job)
    mine = job.parts[rank::world]
    todo = [part for part in mine if fmt.load(part_path(job, part), run=run, items=part.items) is None]
    label += f" rank {rank}" if world > 1 else ""
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc=label, position=rank, disable=not progress) as bar:
        for part in todo:
            began = time.perf_counter()
            value = job.compute(part, device)
            lock.check(token=rank == 0)
            fmt.save(part_path(job, part), value, run, part.items)
            seconds = time.perf_counter() - began
            append_line(job.out / f"timing_rank{rank}.csv", f"{part.name},{seconds:.1f}")
            bar.update()


def merged_scores(job: Job, run: str):
    """Every part of ``job`` in part order, merged by its :class:`PartFormat` (for CSV parts, their rows); a
    RuntimeError naming the parts with no valid file."""
    fmt = part_format(job)
    parts = [fmt.load(part_path(job, part), run=run, items=part.items) for part in job.parts]
    missing = [part_path(job, part).name for part, value in zip(job.parts, parts) if value is None]
    if missing:
        raise RuntimeError(f"parts {missing} have no valid results in {job.out / 'parts'}: run the command again")
    return fmt.merge(job.parts, parts)


def labelled(rows: list[dict], samples: list[dict], columns) -> list[dict]:
    """Score rows whose ``row`` is a position in the batch, with that sample's columns (e.g. image, file,
    label), in ``columns`` order."""
    return [{c: ({**r, **samples[r["row"]]})[c] for c in columns} for r in rows]


# --- the command line ----------------------------------------------------------------------------------

def settings_arguments(parser: argparse.ArgumentParser, cls, skip=()) -> argparse.ArgumentParser:
    """One option per field of the settings dataclass ``cls`` (``--ig-steps``; ``nargs="+"`` for tuples), typed
    by its default; a field's ``metadata`` may set ``type``, ``nargs``, ``choices``, ``help`` and the
    ``default`` shown. None for the fields in ``skip``; options not given stay None, so that
    :func:`settings_from_args` keeps the dataclass's defaults."""
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        value, meta = field.default, field.metadata
        many = isinstance(value, tuple)
        shown = meta.get("default", " ".join(map(str, value if many else [value])))
        kind = meta.get("type", type(value[0] if many else value))
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind,
                            nargs=meta.get("nargs", "+" if many else None), choices=meta.get("choices"),
                            help=f"{meta['help']} (default {shown})" if "help" in meta else f"default {shown}")
    return parser


def settings_from_args(cls, args: argparse.Namespace, preset: dict):
    """``cls`` from ``preset`` (e.g. a smoke run's settings) overridden by every option given (lists become
    tuples)."""
    chosen = {**preset, **{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                           if getattr(args, f.name, None) is not None}}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in chosen.items()})
