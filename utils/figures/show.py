"""Showing written figures in the notebook at reading size, with where they are and what they reproduce."""
from __future__ import annotations

import io
from pathlib import Path

from IPython.display import Image, display
from PIL import Image as PILImage

from ..models.zoo import PAPER_MODELS
from ..paths import shown

READING_WIDTH = 800  # pixels: the width a notebook shows a figure at
READING_QUALITY = 65  # JPEG quality of the displayed copy; the file on disk keeps its own


def reading_copy(path, width: int = READING_WIDTH, quality: int = READING_QUALITY) -> bytes:
    """A JPEG of the image at ``path``, at most ``width`` pixels wide (aspect kept), transparency on white."""
    with PILImage.open(path) as image:
        image = image.convert("RGBA")
        flat = PILImage.new("RGB", image.size, "white")
        flat.paste(image, mask=image.getchannel("A"))
    if flat.width > width:
        flat = flat.resize((width, round(flat.height * width / flat.width)), PILImage.LANCZOS)
    buffer = io.BytesIO()
    flat.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def show_figure(path, caption: str | None = None, width: int = READING_WIDTH) -> None:
    """Print ``caption`` and the figure's location (relative to the repository when inside it), then display a
    downscaled JPEG of it (:func:`reading_copy`), so the notebook does not carry the full-size file again."""
    if caption:
        print(caption)
    print(shown(path))
    display(Image(data=reading_copy(path, width), format="jpeg"))


def weights_note(model) -> str:
    """Which weights a loaded model carries, from its name and classes, e.g. for a figure caption."""
    classes = len(model.class_names)
    if model.name in PAPER_MODELS:
        return f"{model.name}, torchvision IMAGENET1K_V1 weights (ImageNet, {classes} classes), as in the paper"
    trained = "trained here on Imagenette" if classes == 10 else "not the paper's weights"
    return f"{model.name}, {trained} ({classes} classes)"
