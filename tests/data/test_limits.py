"""What an image file cannot make the decoder do: decode float images to black, or decode a huge image at all."""
import re
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils.data.imagenette import MAX_PIXELS, load_image, read_rgb


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and header claiming ``width`` x ``height`` 8-bit grey, with a few bytes of pixel data:
    a small file whose decoding would take ``width * height`` bytes and more."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [9_000, 30_000])
def test_a_huge_png_is_refused_from_its_header_with_the_files_name(tmp_path, side):
    path = tmp_path / f"huge{side}.png"
    path.write_bytes(png_header_only(side, side))
    tracemalloc.start()
    try:
        with pytest.raises(OSError, match=re.escape(str(path)) + ".*pixels"):
            read_rgb(path)
        with pytest.raises(OSError, match="uploaded image .*pixels"):
            load_image(path.read_bytes())
        assert tracemalloc.get_traced_memory()[1] < 50_000_000  # nothing decoded
    finally:
        tracemalloc.stop()


def test_the_pixel_limit_is_documented_and_can_be_raised(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "MAX_PIXELS" in (read_rgb.__doc__ or "") and "MAX_PIXELS" in readme
    assert 9_000 * 9_000 > MAX_PIXELS >= 48_000_000  # a phone's 48-megapixel photo still decodes
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((4, 30), 200, dtype=np.uint8)).save(path)
    with pytest.raises(OSError, match="120 pixels"):
        read_rgb(path, max_pixels=100)
    assert torch.equal(read_rgb(path, max_pixels=120), torch.full((3, 4, 30), 200, dtype=torch.uint8))


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_a_float_image_keeps_its_levels(tmp_path, scale):
    path = tmp_path / "float.tiff"
    levels = np.arange(256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(levels / 255.0 * scale, mode="F").save(path)
    with Image.open(path) as image:
        assert image.mode == "F"
    assert torch.equal(read_rgb(path), torch.from_numpy(levels.astype(np.uint8)).expand(3, 16, 16))


@pytest.mark.parametrize("values", [np.full((4, 4), -0.5), np.full((4, 4), 300.0), np.full((4, 4), np.nan)])
def test_a_float_image_out_of_range_is_refused_by_name(tmp_path, values):
    path = tmp_path / "float.tiff"
    Image.fromarray(values.astype(np.float32), mode="F").save(path)
    with pytest.raises(OSError, match=re.escape(str(path)) + ".*float image"):
        read_rgb(path)
