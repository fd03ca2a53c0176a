"""Image decoding, one function for files and uploads (utils.data.imagenette.read_rgb): every image comes upright,
as a photo viewer shows it, and a 16-bit image keeps its levels."""
import numpy as np
import pytest
import torch
from PIL import Image

from utils.data.imagenette import load_image, read_rgb
from utils.figures.explore.inputs import decode_upload

RED, BLUE = (255, 0, 0), (0, 0, 255)
ORIENTATION = 0x0112  # the EXIF tag


def test_a_16_bit_grey_png_keeps_its_levels(tmp_path):
    path = tmp_path / "grey16.png"
    values = np.arange(32 * 64, dtype=np.int64).reshape(32, 64) * 32  # 0 .. 65504: every 8-bit level
    Image.fromarray(values.astype(np.uint16)).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"  # the case: Pillow's own RGB conversion clips it to white
    levels = torch.from_numpy(np.rint(values / 257)).to(torch.uint8)  # the nearest 8-bit level of v / 65535
    assert torch.equal(read_rgb(path), levels.expand(3, 32, 64))
    # the centre crop at size 32, in [-1, 1]; the upload decodes the same bytes to the same tensor
    want = levels[:, 16:48].float().div(127.5).sub(1.0).expand(3, 32, 32)
    assert torch.equal(load_image(path, 32), want)
    assert torch.equal(decode_upload(path.read_bytes(), 32), want)


@pytest.mark.parametrize("orientation, top, shape", [(1, None, (3, 32, 64)), (6, RED, (3, 64, 32)),
                                                      (8, BLUE, (3, 64, 32)), (3, None, (3, 32, 64))])
def test_a_jpeg_comes_upright_by_its_exif_orientation(tmp_path, orientation, top, shape):
    """A photo stored 64 wide and 32 high, its left half red and right half blue. Orientation 6 says "turn it
    90 degrees clockwise to show it": the stored left column becomes the top row, so the top is red; 8 turns it
    the other way (blue on top); 3 turns it half round (blue on the left)."""
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32], pixels[:, 32:] = RED, BLUE
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "photo.jpg"
    image.save(path, quality=95, exif=exif.tobytes())
    rgb = read_rgb(path).int()
    assert rgb.shape == shape
    first, second = (rgb[:, :8], rgb[:, -8:]) if top else (rgb[:, :, :8], rgb[:, :, -8:])
    want_first = top or (RED if orientation == 1 else BLUE)
    for half, colour in ((first, want_first), (second, BLUE if want_first == RED else RED)):
        assert (half.float().mean((1, 2)) - torch.tensor(colour)).abs().max() < 8, (half.float().mean((1, 2)), colour)
    assert torch.equal(decode_upload(path.read_bytes(), 32), load_image(path, 32))
