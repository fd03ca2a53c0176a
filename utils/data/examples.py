"""The ten example images in ``data/examples/``: how they are chosen and copied, and stand-ins for tests.

    python -m utils.data.examples --data ../shared/data/imagenette2-224   # writes data/examples/val/<wnid>/<file>

The choice is reproducible: per class, the first val image met by the paper's seeded loader
(:func:`utils.data.imagenette.first_per_class`, seed 314) that is at most 40 KB; the files are
copied byte for byte and keep their Imagenette names, so ``paper_batch()`` on them returns the
same tensors as ``paper_batch(root)`` on the copy they came from.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import torch
from PIL import Image

from .imagenette import (EXAMPLE_MAX_BYTES, EXAMPLE_SEED, IMAGENETTE_WNIDS, data_root_from_env, first_per_class)
from . import imagenette


def choose_examples(root: str | os.PathLike, seed: int = EXAMPLE_SEED, max_bytes: int = EXAMPLE_MAX_BYTES,
                    candidates: int = 20) -> list[tuple[str, list[str]]]:
    """Per class (in class order): the chosen val file, and the files skipped before it for being too large."""
    classes = tuple(range(len(IMAGENETTE_WNIDS)))
    ordered = first_per_class(root, classes, per_class=candidates, seed=seed)
    chosen = []
    for c in classes:
        files = [p for p in ordered if Path(p).parent.name == IMAGENETTE_WNIDS[c]]
        small = [i for i, p in enumerate(files) if os.path.getsize(p) <= max_bytes]
        if not small:
            raise ValueError(f"none of the first {candidates} {IMAGENETTE_WNIDS[c]} images is <= {max_bytes} bytes")
        chosen.append((files[small[0]], files[:small[0]]))
    return chosen


def write_examples(root: str | os.PathLike, dest: str | os.PathLike | None = None, seed: int = EXAMPLE_SEED,
                   max_bytes: int = EXAMPLE_MAX_BYTES) -> list[Path]:
    """Copy the chosen files byte for byte to ``dest/val/<wnid>/<file>`` (default ``data/examples``)."""
    dest = Path(imagenette.EXAMPLES if dest is None else dest)
    written = []
    for source, _ in choose_examples(root, seed, max_bytes):
        target = dest / "val" / Path(source).parent.name / Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target)
    return written


def write_placeholders(dest: str | os.PathLike, size: int = 224, seed: int = 0) -> list[Path]:
    """Stand-ins for the examples: smooth random JPEGs under the examples' names and layout.

    For tests on a machine with neither ``data/examples`` nor Imagenette: they exercise every code
    path that reads the examples, but show nothing.
    """
    generator = torch.Generator().manual_seed(seed)
    written = []
    for wnid, name in zip(IMAGENETTE_WNIDS, imagenette.EXAMPLE_NAMES):
        coarse = torch.rand(1, 3, 8, 8, generator=generator)
        pixels = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        array = pixels[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        target = Path(dest) / "val" / wnid / name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(target, quality=90)
        written.append(target)
    return written


def examples_for_tests(scratch: str | os.PathLike) -> tuple[Path, str]:
    """An examples folder for tests: ``(root, kind)``.

    ``data/examples`` when it holds the ten files (kind ``"data/examples"``); else copies made into
    ``scratch`` from ``$IMAGENETTE_ROOT`` (``"copied"``); else stand-ins in ``scratch`` (``"placeholders"``).
    """
    try:
        imagenette.example_files()
        return Path(imagenette.EXAMPLES), "data/examples"
    except FileNotFoundError:
        pass
    root = data_root_from_env()
    if root is not None and (root / "val").is_dir():
        write_examples(root, scratch)
        return Path(scratch), "copied"
    write_placeholders(scratch)
    return Path(scratch), "placeholders"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="Imagenette root with val/<wnid>/ (default: $IMAGENETTE_ROOT)")
    parser.add_argument("--dest", default=None, help="output folder (default: data/examples)")
    args = parser.parse_args(argv)
    root = args.data or data_root_from_env()
    if root is None:
        parser.error("pass --data or set IMAGENETTE_ROOT")
    for (source, skipped), target in zip(choose_examples(root), write_examples(root, args.dest)):
        note = f" (skipped, over {EXAMPLE_MAX_BYTES} bytes: {', '.join(Path(p).name for p in skipped)})" if skipped else ""
        print(f"{target}  {target.stat().st_size:>6} bytes{note}")


if __name__ == "__main__":
    main()
