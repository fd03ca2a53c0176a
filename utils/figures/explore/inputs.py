"""The explorer's inputs: uploaded files, default images, class lists across models."""
from __future__ import annotations

from pathlib import Path

import torch

from ...data import imagenette
from ...data.imagenette import IMAGENETTE_CLASSES, IMAGENETTE_TO_IMAGENET


def decode_upload(content: bytes, size: int = 224) -> torch.Tensor:
    """An uploaded image file's bytes as (3, size, size) in [-1, 1], decoded as every image of the repo is
    (:func:`utils.data.imagenette.load_image`: upright, 16-bit grey scaled, shorter side resized, centre-cropped)."""
    return imagenette.load_image(bytes(content), size)


def default_images() -> tuple[dict, str]:
    """``({name: image (3, 224, 224)}, where they came from)``: the ten examples in ``data/examples``, else the
    ten classes' first images under ``$IMAGENETTE_ROOT``, else nothing (upload your own)."""
    def named(files):
        return {IMAGENETTE_CLASSES[label]: imagenette.load_image(path) for path, label in files}

    reasons = []
    try:
        return named(imagenette.example_files()), "the examples in data/examples"
    except FileNotFoundError as error:  # a checkout without them: try the next source
        reasons.append(str(error).split(". ")[0])
    root = imagenette.data_root_from_env()
    if root is not None:
        try:
            paths = imagenette.first_per_class(root, range(10), 1, 314)
            return named([(p, c) for c, p in enumerate(paths)]), f"Imagenette val at {root}"
        except (OSError, ValueError) as error:
            reasons.append(f"{type(error).__name__}: {error}")
    return {}, "no example images (" + "; ".join(reasons or ["IMAGENETTE_ROOT unset"]) + "): upload one"


def as_image_dict(images) -> dict:
    """``images`` as ``{name: (3, H, W)}``: a dict, a tensor (N, 3, H, W), or a sequence of file paths."""
    if isinstance(images, dict):
        return {str(k): v for k, v in images.items()}
    if isinstance(images, torch.Tensor):
        images = images if images.dim() == 4 else images.unsqueeze(0)
        return {f"image {i}": x for i, x in enumerate(images)}
    return {Path(p).name: imagenette.load_image(p) for p in images}


def class_options(class_names) -> list[tuple[str, int]]:
    """Dropdown options ``(name, index)``; repeated names (ImageNet has two "crane"s) get their index."""
    counts: dict[str, int] = {}
    for name in class_names:
        counts[name] = counts.get(name, 0) + 1
    return [(name if counts[name] == 1 else f"{name} (#{i})", i) for i, name in enumerate(class_names)]


def same_class(index: int, old_names, new_names) -> int | None:
    """The class of ``new_names`` that is ``old_names[index]`` (by name, or Imagenette <-> ImageNet), or None."""
    name = old_names[index]
    if name in new_names:
        return list(new_names).index(name)
    if len(old_names) == len(IMAGENETTE_CLASSES) and len(new_names) > max(IMAGENETTE_TO_IMAGENET):
        return IMAGENETTE_TO_IMAGENET[index]
    if len(new_names) == len(IMAGENETTE_CLASSES) and index in IMAGENETTE_TO_IMAGENET:
        return IMAGENETTE_TO_IMAGENET.index(index)
    return None
