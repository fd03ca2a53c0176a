"""The explorer's inputs: the models it offers, uploaded files, default images, class lists across models."""
from __future__ import annotations

import io
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from ...data import imagenette
from ...data.imagenette import IMAGENETTE_CLASSES, IMAGENETTE_TO_IMAGENET
from ...models.zoo import (BUNDLED, OFFLINE_DEFAULT, PAPER_MODELS, PAPER_MODELS_IMAGENETTE, cached_checkpoint,
                           trained_weights)

MAX_UPLOAD_PIXELS = 40_000_000  # larger uploads are refused before decoding (a 9000 x 9000 PNG takes 0.9 GB)


class UploadError(OSError):
    """An uploaded file the explorer cannot use; the message is written for the person who uploaded it."""


def imagenet_weights(name: str):
    import torchvision

    return torchvision.models.get_model_weights(name).IMAGENET1K_V1


def can_download(url: str, timeout: float = 1.5) -> bool:
    """Whether the host of ``url`` accepts a connection within ``timeout`` seconds, name lookup included
    (no request is sent)."""
    import threading

    host, answer = urlparse(url), []

    def connect():
        try:
            socket.create_connection((host.hostname, host.port or 443), timeout=timeout).close()
            answer.append(True)
        except OSError:
            pass
    thread = threading.Thread(target=connect, daemon=True)  # a hanging name lookup is left behind
    thread.start()
    thread.join(timeout)
    return bool(answer)


def loadable_models(first: str | None = None, probe=can_download) -> list[str]:
    """The models the explorer offers: ``first`` (default: :data:`OFFLINE_DEFAULT`), the networks trained here
    whose weights are in the checkout, and the paper's ImageNet models whose weights torch.hub has cached or
    ``probe(url)`` finds downloadable (never probed with ``PULLBACK_DOWNLOAD=0``)."""
    names = [first or OFFLINE_DEFAULT]
    names += [n for n in (*PAPER_MODELS_IMAGENETTE, BUNDLED) if trained_weights(n).is_file()]
    offline = os.environ.get("PULLBACK_DOWNLOAD", "").strip().lower() in ("0", "false", "no", "off")
    reachable = None
    for name in PAPER_MODELS:
        weights = imagenet_weights(name)
        if not cached_checkpoint(weights).is_file():
            if offline:
                continue
            reachable = probe(weights.url) if reachable is None else reachable
            if not reachable:
                continue
        names.append(name)
    return list(dict.fromkeys(names))


def decode_upload(content: bytes, size: int = 224) -> torch.Tensor:
    """An uploaded image file's bytes as (3, size, size) in [-1, 1] (:func:`read_upload` without the size)."""
    return read_upload(content, size=size)[0]


def read_upload(content: bytes, name: str = "the file", size: int = 224) -> tuple[torch.Tensor, tuple[int, int]]:
    """An uploaded image file's bytes as (3, size, size) in [-1, 1], decoded as every image of the repo is
    (:func:`utils.data.imagenette.read_rgb`: upright, 16-bit grey scaled; shorter side resized, centre-cropped),
    and its decoded size (height, width).

    Raises:
        UploadError: not an image, or over :data:`MAX_UPLOAD_PIXELS`; the message names ``name``.
    """
    from PIL import Image

    content = bytes(content)
    try:
        with Image.open(io.BytesIO(content)) as probe:
            width, height = probe.size
    except Exception as error:  # Pillow raises several kinds for files that are not images
        raise UploadError(f"{name} is not an image file this page can read (try a PNG or JPEG)") from error
    if width * height > MAX_UPLOAD_PIXELS:
        raise UploadError(f"{name} is too large ({width} x {height} pixels); the limit is "
                          f"{MAX_UPLOAD_PIXELS // 1_000_000} million pixels")
    try:
        rgb = imagenette.read_rgb(content)
    except Exception as error:
        raise UploadError(f"{name} could not be decoded: the file seems damaged or incomplete") from error
    return imagenette.to_unit_range(imagenette.resize_center(rgb, size)), tuple(rgb.shape[1:])


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
