"""Imagenette: file lists in torchvision's order, decoding to [-1, 1] tensors, the paper's batch.

Images live in [-1, 1] throughout this repo (``x = 2 * pixel / 255 - 1``); models wrap their
own normalisation (see :mod:`utils.models.zoo`).

Two kinds of root hold images in the same layout, ``<root>/val/<wnid>/<file>.JPEG``: the full
Imagenette (also ``train/``; needed by the evaluation, the study and training) and the ten
examples in ``data/examples/`` (one val image per class, enough for the figures and the
README; see ``data/README.md`` and :mod:`utils.data.examples`).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import find_classes, make_dataset
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

from ..paths import DATA

# torchvision's Imagenette class order (sorted WordNet ids) and the ImageNet-1k index of each.
IMAGENETTE_WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)
IMAGENETTE_CLASSES = (
    "tench", "English springer", "cassette player", "chain saw", "church",
    "French horn", "garbage truck", "gas pump", "golf ball", "parachute",
)
IMAGENETTE_TO_IMAGENET = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)

# The five classes of the paper's figures (rows), as Imagenette indices.
PAPER_CLASSES = (0, 2, 4, 6, 8)

DATA_ROOT_ENV = "IMAGENETTE_ROOT"
DEFAULT_DOWNLOAD_DIR = DATA
# The ten example images, one per class: EXAMPLES / "val" / <wnid> / <Imagenette file name>.
EXAMPLES = DATA / "examples"
# Their file names, in class order: the first file of each class met by the paper's seeded loader
# (seed 314) over the val split, i.e. first_per_class(root, range(10), seed=314), that is at most
# EXAMPLE_MAX_BYTES (all ten first picks are). The paper's five are the entries of PAPER_CLASSES.
EXAMPLE_NAMES = (
    "n01440764_7531.JPEG", "n02102040_6072.JPEG", "n02979186_1450.JPEG", "n03000684_14171.JPEG",
    "ILSVRC2012_val_00034220.JPEG", "n03394916_56850.JPEG", "n03417042_21862.JPEG", "n03425413_8660.JPEG",
    "n03445777_5861.JPEG", "n03888257_482.JPEG",
)
EXAMPLE_SEED = 314
EXAMPLE_MAX_BYTES = 40_000


def data_root_from_env() -> Path | None:
    """The Imagenette root named by ``$IMAGENETTE_ROOT`` (a folder with ``train/`` and ``val/``), or None."""
    value = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(value) if value else None


def require_imagenette(root: str | os.PathLike | None, what: str) -> Path:
    """The root of the full Imagenette (``train/`` and ``val/``), or a clear error saying ``what`` needs it.

    Args:
        root: a folder (e.g. from ``--data``), or None to use ``$IMAGENETTE_ROOT``.
        what: what needs the data, e.g. ``"the faithfulness evaluation"``.

    Raises:
        FileNotFoundError: no root given, or it lacks ``train/<wnid>/`` or ``val/<wnid>/``.
    """
    given = Path(root) if root is not None and str(root).strip() else data_root_from_env()
    missing = ["train/", "val/"] if given is None else [
        f"{split}/" for split in ("train", "val") if not (given / split / IMAGENETTE_WNIDS[0]).is_dir()]
    if missing:
        where = "no folder given" if given is None else f"{given} has no {' or '.join(missing)}"
        raise FileNotFoundError(
            f"{what} needs the full Imagenette (train/ and val/): set {DATA_ROOT_ENV} or pass --data; "
            f"the ten examples in data/examples are enough only for the figures ({where})")
    return given


def download_imagenette(directory: str | os.PathLike = DEFAULT_DOWNLOAD_DIR, size: str = "160px") -> Path:
    """Download Imagenette (torchvision's archive, 160px by default) and return its root.

    Needs internet access; the root holds ``train/<wnid>/`` and ``val/<wnid>/``.
    """
    from torchvision.datasets import Imagenette

    dataset = Imagenette(str(directory), split="val", size=size, download=True)
    return Path(dataset._size_root)


def imagenette_files(root: str | os.PathLike, split: str = "val") -> list[tuple[str, int]]:
    """``(path, label)`` pairs of one split, in torchvision's ``Imagenette`` order.

    The order is the one ``torchvision.datasets.Imagenette`` uses (sorted wnids, sorted file
    names), so seeded shuffles over it reproduce the paper's picks.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no Imagenette split at {folder}: expected {split}/<wnid>/*.JPEG under the root "
            f"(set ${DATA_ROOT_ENV} or download with utils.data.imagenette.download_imagenette())"
        )
    wnids, wnid_to_idx = find_classes(str(folder))
    if tuple(wnids) != IMAGENETTE_WNIDS:
        raise ValueError(f"{folder} does not hold the ten Imagenette classes: found {wnids}")
    return make_dataset(str(folder), wnid_to_idx, extensions=".jpeg")


def load_image(source: str | os.PathLike | bytes, size: int = 224) -> torch.Tensor:
    """One RGB image (a file's path or its bytes) as a float tensor in [-1, 1], shape (3, size, size).

    Decoded by :func:`read_rgb` (upright, 16-bit grey scaled to 8 bits); the shorter side is resized to
    ``size`` (antialiased) and the centre cropped, as in the ImageNet evaluation transform; the shared 224px
    copy passes through unchanged at size 224.
    """
    return to_unit_range(resize_center(read_rgb(source), size))


MAX_PIXELS = 50_000_000
"""The largest image :func:`read_rgb` decodes, in pixels (width x height): a 50-megapixel photo, e.g. 8,660 x
5,773. Decoding takes about 20 bytes per pixel at its peak (1 GB here); a larger file, upload or path alike, is
refused from its header, before any pixel is decoded. Pass ``max_pixels`` to allow more."""


def read_rgb(source: str | os.PathLike | bytes, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """An image file (its path, or its bytes, e.g. an upload) as uint8 RGB (3, H, W), decoded by Pillow.

    The image comes upright, as a photo viewer shows it (its EXIF orientation applied); a 16-bit grey image
    (Pillow modes ``I;16*`` and ``I``) is scaled to 8 bits, ``round(v / 257)``, where Pillow's own conversion
    would clip every value above 255 to white; a float image (mode ``F``) with values in [0, 1] is scaled by 255,
    one in [0, 255] taken as 8-bit levels (rounded), where Pillow would clip [0, 1] to black.

    Raises:
        OSError: the file is missing, truncated, not an image, larger than ``max_pixels`` (default
            :data:`MAX_PIXELS`, checked before decoding), or a float image with values outside [0, 255]; the
            message names the file.
    """
    raw = isinstance(source, (bytes, bytearray, memoryview))
    name = f"uploaded image ({len(source)} bytes)" if raw else os.fspath(source)
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: the limit below is ours, and lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(source)) if raw else source) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise _TooLarge(f"{width} x {height} = {width * height:,} pixels is more than the "
                                    f"{max_pixels:,} read_rgb decodes (max_pixels)")
                return _upright_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # PIL raises all of them
        kind = FileNotFoundError if isinstance(error, FileNotFoundError) else OSError
        reason = str(error) if isinstance(error, _TooLarge) else f"{type(error).__name__}: {error}"
        raise kind(f"could not read image {name}: {reason}") from error


class _TooLarge(ValueError):
    """An image over the pixel limit (reported as an OSError naming the file)."""


def _upright_rgb(image: Image.Image) -> torch.Tensor:
    """A decoded Pillow image as uint8 RGB (3, H, W): EXIF orientation applied, 16-bit grey rounded to 8 bits."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "F":  # 32-bit float grey
        return _float_grey(np.asarray(image, dtype=np.float64))
    if image.mode.startswith("I"):  # integer grey, e.g. a 16-bit PNG: "I;16", "I;16B", or "I" in older Pillow
        grey = torch.from_numpy(np.asarray(image).astype(np.int64)).clamp(0, 65535)
        return ((grey + 128) // 257).to(torch.uint8).expand(3, *grey.shape).contiguous()
    return TF.pil_to_tensor(image.convert("RGB"))


def _float_grey(values: np.ndarray) -> torch.Tensor:
    """Float grey levels as uint8 RGB (3, H, W): [0, 1] scaled by 255, else [0, 255] as they are; others refused."""
    if not np.isfinite(values).all() or values.min(initial=0.0) < 0 or values.max(initial=0.0) > 255:
        raise ValueError(f"a float image needs values in [0, 1] or [0, 255], got [{values.min():g}, {values.max():g}]")
    if values.max(initial=0.0) <= 1.0:
        values = values * 255.0
    grey = torch.from_numpy(np.rint(values)).to(torch.uint8)
    return grey.expand(3, *grey.shape).contiguous()


def resize_center(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and centre-crop to (size, size); uint8 in, uint8 out."""
    if min(image.shape[-2:]) != size:
        image = TF.resize(image, size, antialias=True)
    return TF.center_crop(image, [size, size])


def to_unit_range(image: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1]."""
    return image.float().div(127.5).sub(1.0)


class ImagenetteFolder(Dataset):
    """Imagenette split as ``(image in [-1, 1] of shape (3, size, size), label)``."""

    def __init__(self, root: str | os.PathLike, split: str = "val", size: int = 224):
        self.samples = imagenette_files(root, split)
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return load_image(path, self.size), label


def decode_split(root: str | os.PathLike, split: str, size: int = 224, progress: bool = True):
    """Decode a whole split into memory: uint8 images (N, 3, size, size) and int64 labels (N,)."""
    from tqdm.auto import tqdm

    samples = imagenette_files(root, split)
    images = torch.empty(len(samples), 3, size, size, dtype=torch.uint8)
    for i, (path, _) in enumerate(tqdm(samples, desc=f"decode {split}", disable=not progress)):
        images[i] = resize_center(read_rgb(path), size)
    labels = torch.tensor([label for _, label in samples])
    return images, labels


def first_per_class(root: str | os.PathLike, classes=PAPER_CLASSES, per_class: int = 1, seed: int = 314,
                    split: str = "val") -> list[str]:
    """Paths of the first ``per_class`` images of each class met by a seeded, shuffled DataLoader.

    The order is that of ``DataLoader(dataset, shuffle=True, generator=Generator().manual_seed(seed))``
    over torchvision's Imagenette order; returned grouped by class, in ``classes`` order.
    """
    samples = imagenette_files(root, split)
    # Iterate a shuffled DataLoader over indices: the same sampler and generator draws as over the
    # images themselves, without decoding every image on the way.
    order = DataLoader(range(len(samples)), batch_size=1, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    picked: dict[int, list[str]] = {c: [] for c in classes}
    remaining = len(classes) * per_class
    for (index,) in order:
        path, label = samples[int(index)]
        if label in picked and len(picked[label]) < per_class:
            picked[label].append(path)
            remaining -= 1
            if remaining == 0:
                break
    return [p for c in classes for p in picked[c]]


def example_files(root: str | os.PathLike | None = None) -> list[tuple[str, int]]:
    """``(path, Imagenette class index)`` of the ten example images, in class order.

    Args:
        root: the examples folder (default ``data/examples``), holding ``val/<wnid>/<file>.JPEG``.

    Raises:
        FileNotFoundError: an example is missing; the message says how to get them.
    """
    root = Path(EXAMPLES if root is None else root)
    files = [(root / "val" / wnid / name, label)
             for label, (wnid, name) in enumerate(zip(IMAGENETTE_WNIDS, EXAMPLE_NAMES))]
    missing = [str(path) for path, _ in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the ten example images are missing (first: {missing[0]}). Create them from a "
            f"local Imagenette val split with `python -m utils.data.examples --data <root>` (see data/README.md), "
            f"or pass an Imagenette root / set {DATA_ROOT_ENV}")
    return [(str(path), label) for path, label in files]


def class_batch(root: str | os.PathLike | None = None, classes=PAPER_CLASSES, per_class: int = 1,
                seed: int = 314, size: int = 224):
    """Up to ``per_class`` images of each class, chosen by the paper's seeded loader (:func:`first_per_class`).

    On the full Imagenette each class gives ``per_class`` images; on the examples (``root=None``,
    ``data/examples``) each gives one. Labels follow the images, so callers need not assume a count.

    Returns:
        ``(images, labels, paths)``: images (N, 3, size, size) in [-1, 1], Imagenette labels (N,)
        grouped by class in ``classes`` order, and the source file paths.
    """
    if root is None:
        example_files()  # a clear error when the examples are missing
        root = EXAMPLES
    samples = dict(imagenette_files(root, "val"))
    paths = first_per_class(root, classes, per_class, seed)
    images = torch.stack([load_image(p, size) for p in paths])
    return images, torch.tensor([samples[p] for p in paths]), paths


def paper_batch(root: str | os.PathLike | None = None, seed: int = 314, size: int = 224, classes=PAPER_CLASSES):
    """The paper's five images: one each of tench, cassette player, church, garbage truck, golf ball.

    Chosen as the authors did: torchvision's Imagenette val order, a ``DataLoader`` with
    ``shuffle=True`` and ``generator=torch.Generator().manual_seed(seed)``, keeping the first image
    of each class as iteration goes.

    Args:
        root: folder holding ``val/<wnid>/`` (the shared 224px copy or torchvision's extracted
            ``imagenette2-160``); None (default) reads the same five files from ``data/examples``,
            where they were copied byte for byte from the 224px copy, so the tensors are identical
            to ``paper_batch(<224px copy>)`` for the default seed (other seeds need the full split).
        seed: the loader's seed (default 314, the paper's).
        size: output side length in pixels (default 224): the shorter side is resized to it, the centre cropped.
        classes: Imagenette indices (0-9) of the rows, in row order (default :data:`PAPER_CLASSES`,
            ``(0, 2, 4, 6, 8)``).

    Returns:
        ``(images, labels, paths)``: images, float32 (len(classes), 3, size, size) in [-1, 1] (5 by default);
        Imagenette labels, int64 (len(classes),), in row order; and the source file paths (strings).

    Raises:
        ValueError: ``root`` is None and ``seed`` is not 314 (the examples hold that seed's picks only), or
            ``root``'s ``val/`` does not hold the ten Imagenette classes.
        FileNotFoundError: ``root`` is None and an example is missing (the message says how to create them),
            or ``root`` has no ``val/`` folder.
        KeyError: ``root`` is None and a class in ``classes`` is not in 0-9.
        OSError: an image file cannot be decoded (the message names it).

    Example:
        >>> from utils import paper_batch
        >>> images, labels, paths = paper_batch()  # the five files in data/examples: no dataset needed
        >>> images.shape, images.dtype
        (torch.Size([5, 3, 224, 224]), torch.float32)
        >>> labels.tolist()
        [0, 2, 4, 6, 8]
        >>> bool(images.min() >= -1 and images.max() <= 1)
        True
        >>> paper_batch(size=64, classes=(4,))[0].shape  # one row, smaller
        torch.Size([1, 3, 64, 64])
    """
    if root is None:
        if seed != EXAMPLE_SEED:
            raise ValueError(f"the examples in data/examples hold the picks of seed {EXAMPLE_SEED}; "
                             f"seed {seed} needs the full val split: pass its root")
        files = dict((label, path) for path, label in example_files())
        paths = [files[c] for c in classes]
    else:
        paths = first_per_class(root, classes, 1, seed)
    images = torch.stack([load_image(p, size) for p in paths])
    return images, torch.tensor(classes), paths
