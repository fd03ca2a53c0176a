"""The attribution heat-map gallery: what it draws is each method's channel-summed map, in one scale."""
import numpy as np
import pytest
import torch
from PIL import Image

from utils import excitation_pullback, load_model, vanilla_gradient
from utils.figures.heatmaps import (GALLERY_METHODS, HEAT_CMAP, as_heat, gallery_figure, gallery_maps,
                                    heatmap_gallery, pixel_relevance)

SIZE = 64


@pytest.fixture(scope="module")
def setup():
    model = load_model("bundled", "cpu")
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    targets = [0, 4]
    return model, images, targets, gallery_maps(model, images, targets)


def test_as_heat_scales_by_a_quantile_and_keeps_signs():
    r = torch.linspace(-2, 4, 1000).reshape(20, 50)
    heat = as_heat(r, quantile=0.5)
    scale = torch.quantile(r.abs().flatten(), 0.5).item()
    np.testing.assert_allclose(heat, (r.double() / scale).clamp(-1, 1).numpy())
    assert heat.min() == -1 and heat.max() == 1 and np.all(np.sign(heat) == np.sign(r.numpy()))
    assert np.all(as_heat(torch.zeros(4, 4)) == 0)


def test_maps_are_the_methods_channel_sums(setup):
    model, images, targets, maps = setup
    assert list(maps) == list(GALLERY_METHODS)
    assert all(m.shape == (2, SIZE, SIZE) for m in maps.values())
    for r, t in enumerate(targets):
        x = images[r:r + 1]
        pullback = excitation_pullback(model, x, t, temperature=0.3)
        gradient = vanilla_gradient(model, x, t)
        assert torch.allclose(maps["pullback"][r], pullback.double().sum(1)[0], atol=1e-12)
        assert torch.allclose(maps["pullback_x_input"][r], (pullback * x).double().sum(1)[0], atol=1e-6)
        assert torch.allclose(maps["gradient"][r], gradient.double().sum(1)[0], atol=1e-12)
        assert torch.allclose(maps["gradient_x_input"][r], (gradient * x).double().sum(1)[0], atol=1e-6)
    assert (maps["gradcam"] >= 0).all()  # Grad-CAM keeps only positive evidence
    # Integrated Gradients is complete (sums to the logit change from the mid-grey baseline), roughly with 8 steps
    with torch.no_grad():
        change = model(images)[range(2), targets] - model(torch.zeros_like(images))[range(2), targets]
    assert torch.allclose(maps["integrated_gradients"].sum((1, 2)).float(), change, rtol=0.3, atol=0.5)


def test_figure_draws_each_map_at_its_place(setup):
    model, images, targets, maps = setup
    fig = gallery_figure(images, maps, ["tench", "church"])
    axes = np.array(fig.axes[:-1]).reshape(2, len(maps) + 1)  # the last axes is the colour bar
    for r in range(2):
        np.testing.assert_allclose(axes[r, 0].images[0].get_array(), (images[r].permute(1, 2, 0).numpy() + 1) / 2,
                                   atol=1e-6)
        for c, method in enumerate(maps, start=1):
            shown = axes[r, c].images[0]
            assert shown.get_cmap().name == HEAT_CMAP and shown.get_clim() == (-1, 1)
            np.testing.assert_array_equal(shown.get_array(), as_heat(pixel_relevance(
                excitation_pullback(model, images[r:r + 1], targets[r])) [0]) if method == "pullback"
                else as_heat(maps[method][r]))
    assert [a.get_title() for a in axes[0]] == ["image", "excitation pullback", "pullback \u00d7 input",
                                                "vanilla gradient", "gradient \u00d7 input", "Integrated Gradients",
                                                "Grad-CAM"]
    assert axes[1, 0].get_ylabel() == "church"


def test_gallery_file_layout(setup, tmp_path):
    model, images, targets, _ = setup
    path = heatmap_gallery(model, images, targets, tmp_path, methods=("pullback", "gradcam"))
    assert path == tmp_path / "heatmaps" / "bundled.jpg"
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    # 3 columns of 2.2 in plus a 0.35 in margin; 2 rows of 2.2 in plus 1.55 in of titles and colour bar; 100 dpi
    assert (width, height) == (round(100 * (3 * 2.2 + 0.35)), round(100 * (2 * 2.2 + 0.75 + 0.8)))
    # the Grad-CAM column is white to red only (no blue): channel R >= B wherever it is drawn
    cell = pixels[int(0.75 * 100) + 10:int(0.75 * 100) + 200, int(100 * (0.35 + 2 * 2.2)) + 10:width - 10]
    assert (cell[..., 0] >= cell[..., 2] - 8).mean() > 0.99
