"""On-disk records of the long-running commands (faithfulness, path stability, alignment, training).

Four guarantees, each in one place:

* every file is written through :func:`atomic_write` (a temporary file in the same folder, renamed when
  complete), so an interrupted run leaves either the old file or the new one, never half of one;
* a *part* (one resumable piece of a run under ``<out>/parts/``) is saved with a check file holding its
  row count, SHA-256, file name, the run that made it and the items it covers (:func:`save_part`);
  :func:`load_part` returns None, with a warning naming the file, for a part that is missing its check, cut
  short, emptied or altered, made by another run, or copied over another part, so the run recomputes it;
* a run's identity (data root, image list, weights' hash, settings) goes to ``<out>/config.json`` only
  after the caller has validated the settings (:func:`check_identity`); a resumed run with another
  identity is refused with a message that lists what differs, and its hash (:func:`run_id`) is what each
  part carries, so parts outlive neither a deleted ``config.json`` nor a change of settings;
* one writer per results folder (:class:`WriterLock`): ``<out>/writer.lock`` names the holder's process;
  a second run into the folder is refused while that process lives, and a writer whose lock has gone
  (its folder removed, another run in its place) stops before its next write.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch


class DamagedPartWarning(UserWarning):
    """A part file failed its check and will be recomputed."""


class ForeignPartWarning(DamagedPartWarning):
    """A part made by another run, or for other items than its name's: recomputed."""


class RunMismatchError(ValueError):
    """A results folder holds a run with another identity."""


class RunLockedError(RuntimeError):
    """Another process writes into the results folder, or this run lost the folder to another."""


def atomic_write(path, write: Callable, binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path`` and rename it to ``path`` once complete.

    The temporary name starts with a dot and ends in ``.partial``, so no reader's pattern matches it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), binary=True)


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def write_json(path, value) -> Path:
    return write_text(path, json.dumps(value, indent=1) + "\n")


def torch_save(obj, path) -> Path:
    """``torch.save`` through :func:`atomic_write` (checkpoints, weights)."""
    return atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def append_line(path, line: str) -> Path:
    """Append one line to a small log file (e.g. timings), rewriting it atomically."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    return write_text(path, old + line + "\n")


def csv_bytes(rows: list[dict], decimals: int | None = None) -> bytes:
    """Dict rows as CSV (the first row's keys as header; floats rounded to ``decimals`` if given)."""
    if decimals is not None:
        rows = [{k: (f"{v:.{decimals}f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def write_csv(path, rows: list[dict], decimals: int | None = None) -> Path:
    return write_bytes(path, csv_bytes(rows, decimals))


def write_rows(path, lines: list[list]) -> Path:
    """Write plain CSV lines (the first one the header), e.g. a labelled matrix."""
    text = io.StringIO(newline="")
    csv.writer(text).writerows(lines)
    return write_bytes(path, text.getvalue().encode())


def parse_csv(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def read_csv(path) -> list[dict]:
    """The rows of a CSV file with a header, as dicts of strings."""
    return parse_csv(Path(path).read_bytes())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and values, in order): its weights' identity."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def list_sha256(items: Iterable) -> str:
    """SHA-256 of a list of JSON-able items (e.g. image file names with labels)."""
    return sha256(json.dumps(list(items)).encode())


# --- parts ---------------------------------------------------------------------------------------------

def _check_path(path: Path) -> Path:
    return path.with_name(path.name + ".check.json")


def save_part(path, data: bytes, rows: int, run: str | None = None, items=None) -> Path:
    """Write a part and then its check file ``<part>.check.json``, both atomically.

    The check holds the part's row count, SHA-256 and file name, and, when given, the :func:`run_id` of the
    run that made it and its ``items`` (JSON-able: what it covers, e.g. image indices), which
    :func:`load_part` compares with the loading run's.
    """
    path = Path(path)
    write_bytes(path, data)
    check = {"rows": rows, "sha256": sha256(data), "name": path.name}
    if run is not None:
        check["run"] = run
    if items is not None:
        check["items"] = _plain(items)
    write_json(_check_path(path), check)
    return path


def load_part(path, rows: int | None = None, run: str | None = None, items=None) -> bytes | None:
    """The bytes of a part that passes its check; None for a part not there yet, and None with a
    :class:`DamagedPartWarning` naming the file for a damaged or partial one.

    Given ``rows``, the part must hold that many rows; given ``run`` and ``items``, it must have been made by
    that run for those items under its own file name (else a :class:`ForeignPartWarning`).
    """
    path = Path(path)
    if not path.exists():
        return None
    problem, kind = _part_problem(path, rows, run, items)
    if problem is None:
        return path.read_bytes()
    warnings.warn(f"part {path} {problem}: recomputing it", kind, stacklevel=2)
    return None


def _part_problem(path: Path, rows: int | None, run: str | None, items) -> tuple[str | None, type]:
    check = _check_path(path)
    try:
        stored = json.loads(check.read_text())
        want_rows, want_hash = int(stored["rows"]), stored["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"has no valid check file {check.name}", DamagedPartWarning
    if rows is not None and want_rows != rows:
        return f"holds {want_rows} rows, {rows} expected", DamagedPartWarning
    if file_sha256(path) != want_hash:
        return "does not match its recorded checksum (cut short, emptied or altered)", DamagedPartWarning
    if run is not None and stored.get("run") != run:
        return (f"was made by another run ({stored.get('run', 'not recorded')}, this run is {run}: other "
                f"settings, data or weights)"), ForeignPartWarning
    if items is not None and stored.get("items") != _plain(items):
        return (f"covers items {_shown(stored.get('items'))}, this part is for {_shown(_plain(items))}",
                ForeignPartWarning)
    if run is not None and stored.get("name") != path.name:
        return f"was written as {stored.get('name')}, not as {path.name}", ForeignPartWarning
    return None, DamagedPartWarning


def _plain(value):
    """A JSON-able value as it comes back from a file (tuples and ranges as lists)."""
    return json.loads(json.dumps(value, default=list))


def save_csv_part(path, rows: list[dict], run: str | None = None, items=None) -> Path:
    """Save dict rows as a checked CSV part; its row count is recorded as it is written."""
    return save_part(path, csv_bytes(rows), len(rows), run, items)


def load_csv_part(path, rows: int | None = None, run: str | None = None, items=None) -> list[dict] | None:
    """The rows of a checked CSV part (:func:`load_part`), or None."""
    data = load_part(path, rows, run, items)
    return None if data is None else parse_csv(data)


def save_array_part(path, arrays: dict, run: str | None = None, items=None) -> Path:
    """Save named arrays (tensors) as a checked npz part; its row count is the number of arrays."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return save_part(path, buffer.getvalue(), len(arrays), run, items)


def load_array_part(path, rows: int | None = None, run: str | None = None, items=None) -> dict | None:
    """The named arrays of a checked npz part (:func:`load_part`) as tensors, or None."""
    data = load_part(path, rows, run, items)
    if data is None:
        return None
    with np.load(io.BytesIO(data)) as f:
        return {k: torch.from_numpy(v) for k, v in f.items()}


# --- run identity --------------------------------------------------------------------------------------

def run_id(identity: dict, keys=None) -> str:
    """A run's short name: the first 16 hex digits of the SHA-256 of its identity (restricted to ``keys``),
    the identity as :func:`check_identity` stores it."""
    identity = _plain(identity)
    chosen = {k: identity.get(k) for k in sorted(keys or identity)}
    return sha256(json.dumps(chosen, sort_keys=True).encode())[:16]


def check_identity(out, identity: dict, keys=None) -> str:
    """Store ``identity`` in ``out/config.json``, or, if a run is there already, raise
    :class:`RunMismatchError` unless the stored identity agrees on ``keys`` (default: all of them).
    Returns the run's :func:`run_id`.

    Call it only after validating the settings: a run refused for a bad setting must not leave a
    ``config.json`` that blocks its corrected rerun.
    """
    out = Path(out)
    path = out / "config.json"
    identity = _plain(identity)  # tuples -> lists, as they come back from the file
    if not path.exists():
        write_json(path, identity)
        return run_id(identity, keys)
    stored = json.loads(path.read_text())
    missing = object()
    differs = [f"{k}: stored {_shown(stored.get(k, missing))}, now {_shown(identity.get(k, missing))}"
               for k in (keys or identity) if stored.get(k, missing) != identity.get(k, missing)]
    if differs:
        raise RunMismatchError(f"{out} holds results made with other settings; differing: " + "; ".join(differs)
                               + f". To start afresh delete {out} or pass another --out.")
    return run_id(identity, keys)


def _shown(value) -> str:
    if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
        return "(absent)"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- one writer per folder -----------------------------------------------------------------------------

class WriterLock:
    """``<out>/writer.lock`` while a run writes into ``out``: the holder's pid, host, run and start time.

    :meth:`acquire` creates the file atomically (a complete file or none); a lock of a live process, or of
    one on another host, is refused with :class:`RunLockedError` naming it; a lock whose process is gone (a
    killed run) is taken over with a warning. :meth:`check` before each write stops a run whose lock has
    gone, e.g. when its folder was removed and another run started there. Use it as a context manager.
    """

    NAME = "writer.lock"

    def __init__(self, out, run: str):
        self.path = Path(out) / self.NAME
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "run": run, "token": uuid.uuid4().hex,
                       "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def acquire(self) -> "WriterLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.NAME}.{self.holder['token']}.partial")
        tmp.write_text(json.dumps(self.holder) + "\n")
        try:
            for _ in range(2):
                try:
                    os.link(tmp, self.path)  # fails if the lock exists: no two writers both succeed
                    return self
                except FileExistsError:
                    self._take_over_if_stale(read_lock(self.path))
        finally:
            tmp.unlink(missing_ok=True)
        raise RunLockedError(f"could not take {self.path}: another run took it first")

    def _take_over_if_stale(self, holder: dict | None) -> None:
        if holder is None:
            raise RunLockedError(f"{self.path} exists but cannot be read: another run may be starting in "
                                 f"{self.path.parent}; if none is, delete the lock and run again")
        where = f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"
        if holder.get("host") != self.holder["host"] or _alive(holder.get("pid")):
            raise RunLockedError(f"{self.path.parent} is being written by {where}: wait for it to finish or "
                                 f"pass another --out; if that process is gone, delete {self.path}")
        warnings.warn(f"taking over {self.path}: its {where} no longer runs", stacklevel=3)
        self.path.unlink(missing_ok=True)

    def check(self, token: bool = True) -> None:
        """Raise :class:`RunLockedError` unless the lock is still this run's (its token, or with
        ``token=False`` just its run: the other ranks of a torchrun job, whose rank 0 holds it)."""
        holder = read_lock(self.path)
        key = "token" if token else "run"
        if holder is None or holder.get(key) != self.holder[key]:
            now = "is gone" if holder is None else f"is held by process {holder.get('pid')} of run {holder.get('run')}"
            raise RunLockedError(f"this run (process {os.getpid()}) lost {self.path}: it {now}, so another run "
                                 f"writes into {self.path.parent} or the folder was removed; stopping before "
                                 f"the next write (the parts written so far stay, checked)")

    def release(self) -> None:
        """Remove the lock if it is still this run's."""
        holder = read_lock(self.path)
        if holder is not None and holder.get("token") == self.holder["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def read_lock(path) -> dict | None:
    """The holder recorded in a lock file, or None if there is none (or it cannot be read)."""
    try:
        holder = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(pid) -> bool:
    """Whether a process with this pid runs on this machine (one we may not signal counts as running)."""
    try:
        pid = int(pid)
        if pid <= 0:  # 0 and negative numbers name process groups, never a holder
            return False
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (ProcessLookupError, TypeError, ValueError, OverflowError):
        return False
    return True
