"""Weights files checked before torch reads them.

An empty file, one cut short, one altered, or a Git LFS pointer left where the weights should be (a clone
without ``git lfs pull``) makes torch's reader fail with an error that names no file, or (altered bytes)
load without complaint. :func:`load_state` checks the file first against its recorded size and SHA-256
and raises :class:`WeightsFileError` naming the file, what is wrong and how to get it back.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

LFS_POINTER = b"version https://git-lfs"  # the first bytes of every Git LFS pointer file


class WeightsFileError(RuntimeError):
    """A weights file is empty, cut short, altered, a Git LFS pointer, or not a readable state dict."""


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def weights_problem(path, sha256: str | None = None, size: int | None = None) -> str | None:
    """What is wrong with the weights file at ``path`` (a phrase), or None when nothing is.

    ``size`` (bytes) and ``sha256`` (hex; a prefix of it is enough, as torch.hub's file names carry) are
    the recorded values; without them only an empty file or an LFS pointer is caught here.
    """
    actual = Path(path).stat().st_size
    if actual == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        if f.read(len(LFS_POINTER)) == LFS_POINTER:
            return (f"is a Git LFS pointer ({actual} bytes of text), not the weights: fetch the real file "
                    "(`git lfs pull`, or a fresh clone of the repository)")
    if size is not None and actual != size:
        return f"has {actual:,} bytes, not the recorded {size:,} ({'cut short' if actual < size else 'too long'})"
    if sha256 is not None:
        digest = file_sha256(path)
        if not digest.startswith(sha256):
            return f"has SHA-256 {digest}, not the recorded {sha256}: its bytes were altered"
    return None


def load_state(path, sha256: str | None = None, size: int | None = None, remedy: str = "") -> dict:
    """The state dict saved at ``path`` (CPU tensors, ``weights_only``), after :func:`weights_problem`'s checks.

    Raises:
        FileNotFoundError: no file at ``path``.
        WeightsFileError: a check failed, or torch could not read the file; the message names the file,
            the problem and ``remedy`` (what to do about it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}" + (f": {remedy}" if remedy else ""))
    end = f"; {remedy}" if remedy else ""
    problem = weights_problem(path, sha256, size)
    if problem is not None:
        raise WeightsFileError(f"the weights file {path} {problem}{end}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and EOF errors all mean "not a complete torch.save file"
        raise WeightsFileError(f"the weights file {path} could not be read ({type(error).__name__}: {error}); "
                               f"it is damaged or not a torch.save'd state dict{end}") from error
    if not isinstance(state, dict):
        raise WeightsFileError(f"the weights file {path} holds a {type(state).__name__}, not a state dict{end}")
    return state
