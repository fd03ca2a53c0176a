"""On-disk records of the long-running commands (faithfulness, path stability, training).

Three guarantees, each in one place:

* every file is written through :func:`atomic_write` (a temporary file in the same folder, renamed when
  complete), so an interrupted run leaves either the old file or the new one, never half of one;
* a *part* (one resumable piece of a run under ``<out>/parts/``) is saved with a check file holding its
  row count and SHA-256 (:func:`save_part`); :func:`load_part` returns None, with a warning naming the
  file, for a part that is missing its check, cut short, emptied or altered, so the run recomputes it;
* a run's identity (data root, image list, weights' hash, settings) goes to ``<out>/config.json`` only
  after the caller has validated the settings (:func:`check_identity`); a resumed run with another
  identity is refused with a message that lists what differs.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch


class DamagedPartWarning(UserWarning):
    """A part file failed its check and will be recomputed."""


class RunMismatchError(ValueError):
    """A results folder holds a run with another identity."""


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


def save_part(path, data: bytes, rows: int) -> Path:
    """Write a part and then its check file ``<part>.check.json`` (row count and SHA-256), both atomically."""
    path = Path(path)
    write_bytes(path, data)
    write_json(_check_path(path), {"rows": rows, "sha256": sha256(data)})
    return path


def load_part(path, rows: int | None = None) -> bytes | None:
    """The bytes of a part that passes its check (and holds ``rows`` rows, if given); None for a part not
    there yet, and None with a :class:`DamagedPartWarning` naming the file for a damaged or partial one."""
    path = Path(path)
    if not path.exists():
        return None
    problem = _part_problem(path, rows)
    if problem is None:
        return path.read_bytes()
    warnings.warn(f"part {path} {problem}: recomputing it", DamagedPartWarning, stacklevel=2)
    return None


def _part_problem(path: Path, rows: int | None) -> str | None:
    check = _check_path(path)
    try:
        stored = json.loads(check.read_text())
        want_rows, want_hash = int(stored["rows"]), stored["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"has no valid check file {check.name}"
    if rows is not None and want_rows != rows:
        return f"holds {want_rows} rows, {rows} expected"
    if file_sha256(path) != want_hash:
        return "does not match its recorded checksum (cut short, emptied or altered)"
    return None


def save_csv_part(path, rows: list[dict]) -> Path:
    return save_part(path, csv_bytes(rows), len(rows))


def load_csv_part(path, rows: int | None = None) -> list[dict] | None:
    data = load_part(path, rows)
    return None if data is None else parse_csv(data)


# --- run identity --------------------------------------------------------------------------------------

def check_identity(out, identity: dict, keys=None) -> None:
    """Store ``identity`` in ``out/config.json``, or, if a run is there already, raise
    :class:`RunMismatchError` unless the stored identity agrees on ``keys`` (default: all of them).

    Call it only after validating the settings: a run refused for a bad setting must not leave a
    ``config.json`` that blocks its corrected rerun.
    """
    out = Path(out)
    path = out / "config.json"
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as they come back from the file
    if not path.exists():
        write_json(path, identity)
        return
    stored = json.loads(path.read_text())
    missing = object()
    differs = [f"{k}: stored {_shown(stored.get(k, missing))}, now {_shown(identity.get(k, missing))}"
               for k in (keys or identity) if stored.get(k, missing) != identity.get(k, missing)]
    if differs:
        raise RunMismatchError(f"{out} holds results made with other settings; differing: " + "; ".join(differs)
                               + f". To start afresh delete {out} or pass another --out.")


def _shown(value) -> str:
    if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
        return "(absent)"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
