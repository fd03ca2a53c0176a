"""The explorer, without a browser: set widget values, update, and check what it shows."""
import datetime
import io

import numpy as np
import pytest
import torch
from PIL import Image

from utils import excitation_pullback, load_model, pullback_ascent, vanilla_gradient
from utils.figures.explore import widget as explore_module
from utils.figures.explore import Explorer, explore, explore_path, heat_rgb, panel_arrays
from utils.figures.heatmaps import as_heat, pixel_relevance
from utils.models.zoo import PretrainedUnavailableError

SIZE = 128  # smaller than the figures' 224 px to keep the suite quick; the bundled model takes any size


@pytest.fixture(scope="module")
def model():
    return load_model("bundled", "cpu")


@pytest.fixture(scope="module")
def images():
    """Two smooth images (upsampled noise): no data needed, and the model is unsure of them."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    x = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return {"first": x[0], "second": x[1]}


def png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_compute_is_the_library_ascent(model, images):
    x = images["first"]
    for method, kwargs in (("pullback", dict(temperature=0.5, gate="normal_cdf")), ("gradient", {})):
        result = explore_path(model, x, 3, method, steps=3, **kwargs)
        reference = pullback_ascent(model, x[None], 3, steps=3, method=method, return_trajectory=True, **kwargs)[:, 0]
        assert torch.equal(result.trajectory, reference)
        direct = (excitation_pullback(model, x[None], 3, **kwargs) if method == "pullback"
                  else vanilla_gradient(model, x[None], 3))[0]
        assert torch.equal(result.field, direct)
        with torch.no_grad():
            expected = model(reference).softmax(1)
        assert torch.allclose(result.probabilities, expected[:, 3], atol=1e-6)
        assert torch.equal(result.predictions, expected.argmax(1))


def test_a_continued_path_is_the_whole_path(model, images):
    x = images["second"]
    whole = explore_path(model, x, 6, steps=3, temperature=0.3)
    continued = explore_path(model, x, 6, steps=3, temperature=0.3,
                             start=explore_path(model, x, 6, steps=1, temperature=0.3))
    assert torch.equal(whole.trajectory, continued.trajectory)
    assert torch.allclose(whole.probabilities, continued.probabilities, atol=1e-6)
    # a start with other settings is ignored, not continued
    other = explore_path(model, x, 6, steps=2, start=explore_path(model, x, 7, steps=1))
    assert torch.equal(other.trajectory, whole.trajectory[:3])


def test_zero_steps_give_the_field_alone(model, images):
    result = explore_path(model, images["first"], 2, steps=0)
    assert result.trajectory.shape == (1, 3, SIZE, SIZE) and result.probabilities.shape == (1,)
    assert torch.equal(result.field, excitation_pullback(model, images["first"][None], 2)[0])


def test_the_widget_shows_what_the_settings_ask_for(model, images):
    widget = explore(model, images)
    explorer = widget.explorer
    assert explorer.result is not None  # it drew once on construction
    names = model.class_names
    with explorer.hold():
        explorer.image.value = "first"
        explorer.target.value = names.index("golf ball")
        explorer.method.value = "pullback"
        explorer.temperature.value = 0.5
        explorer.gate.value = "sigmoid"
        explorer.steps.value = 4
    x, target = images["first"], names.index("golf ball")

    # the field shown is the excitation pullback for these settings, and its panel is its heat map
    field = excitation_pullback(model, x[None], target, temperature=0.5)[0]
    assert torch.equal(explorer.shown["field"], field)
    heat = as_heat(pixel_relevance(field))
    np.testing.assert_array_equal(explorer.shown["heat"], heat)
    shown = png_array(explorer.panels["field"].value)
    assert shown.shape == (SIZE, SIZE, 3)
    assert np.abs(shown.astype(float) - heat_rgb(heat) * 255).max() <= 1

    # the target's probability rises along the pullback overall (the ascent is on the logit, so the
    # probability need not rise at every step) and is the model's softmax at each iterate
    p = explorer.shown["probabilities"]
    assert len(p) == 5
    assert p[-1] > p[0] + 0.1, p
    assert "golf ball" in explorer.status.value

    # the perturbation and the perturbed image shown are those of pullback_ascent after k steps
    path = pullback_ascent(model, x[None], target, steps=4, temperature=0.5)[0]
    assert torch.equal(explorer.shown["perturbed"], path)
    assert torch.equal(explorer.shown["perturbation"], path - x)
    assert png_array(explorer.panels["perturbed"].value).shape == (SIZE, SIZE, 3)
    assert png_array(explorer.panels["probability"].value).shape[2] == 3

    # fewer steps: the same path, cut short, from the cache
    before = explorer.panels["perturbation"].value
    explorer.steps.value = 2
    assert len(explorer.shown["probabilities"]) == 3
    np.testing.assert_array_equal(explorer.shown["probabilities"], p[:3])
    assert explorer.panels["perturbation"].value != before

    # switching the method changes the field to the vanilla gradient, and disables T and the gate
    explorer.method.value = "gradient"
    assert torch.equal(explorer.shown["field"], vanilla_gradient(model, x[None], target)[0])
    assert not torch.equal(explorer.shown["field"], field)
    assert explorer.temperature.disabled and explorer.gate.disabled

    # the temperature changes the pullback's field
    with explorer.hold():
        explorer.method.value = "pullback"
        explorer.temperature.value = 2.0
    assert torch.equal(explorer.shown["field"], excitation_pullback(model, x[None], target, temperature=2.0)[0])
    assert not explorer.temperature.disabled


def test_uploads_are_decoded_and_resized(model, images):
    explorer = Explorer(model, images)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="png")
    with explorer.hold(update=False):
        explorer.steps.value = 1
    explorer.upload.value = ({"name": "mine.png", "type": "image/png", "size": len(buffer.getvalue()),
                              "content": memoryview(buffer.getvalue()),
                              "last_modified": datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)},)
    assert explorer.image.value == "upload 1: mine.png" and explorer.upload.value == ()
    assert explorer.shown["perturbed"].shape == (3, 224, 224)
    expected = torch.from_numpy(np.array(picture)).permute(2, 0, 1)
    from utils.data.imagenette import resize_center, to_unit_range
    assert torch.equal(explorer.images[explorer.image.value], to_unit_range(resize_center(expected, 224)))
    assert explorer.add_image("broken.png", b"not an image") == ""
    assert "could not read broken.png" in explorer.status.value


def test_a_model_that_cannot_load_shows_an_error(model, images, monkeypatch):
    def offline(name, device=None):
        raise PretrainedUnavailableError(f"could not download the ImageNet weights for {name}")

    monkeypatch.setattr(explore_module, "load_model", offline)
    explorer = Explorer(model, images)
    with explorer.hold(update=False):
        explorer.steps.value = 1
    shown = explorer.shown
    explorer.model.value = "resnet50"
    assert "could not load resnet50" in explorer.status.value
    assert explorer.model.value == "bundled" and explorer.shown is shown


def test_another_model_keeps_the_target_class(images, monkeypatch):
    """Switching between the 10-class model and a 1000-class one maps the target through ImageNet indices."""
    small = load_model("bundled", "cpu", pretrained=False)
    big = load_model("bundled", "cpu", pretrained=False)
    big.net.fc = torch.nn.Linear(big.net.fc.in_features, 1000)
    big.class_names = [f"imagenet {i}" for i in range(1000)]
    big.class_names[497] = "church"
    big.name = "resnet50"
    monkeypatch.setattr(explore_module, "load_model", lambda name, device=None: big.eval())
    explorer = Explorer(small, {"a": images["first"][:, :64, :64]})
    with explorer.hold(update=False):
        explorer.steps.value = 1
    explorer.target.value = small.class_names.index("golf ball")
    explorer.model.value = "resnet50"
    assert explorer.target.value == 574  # golf ball in ImageNet
    assert explorer.shown["field"].shape == (3, 64, 64)


def test_no_images_is_not_an_error(model, monkeypatch):
    monkeypatch.setattr(explore_module, "default_images", lambda: ({}, "no example images: upload one"))
    explorer = Explorer(model)
    assert explorer.result is None and "upload one" in explorer.status.value


def test_panel_arrays_of_k_steps(model, images):
    result = explore_path(model, images["first"], 1, steps=2)
    arrays = panel_arrays(result, 1)
    assert torch.equal(arrays["perturbed"], result.trajectory[1])
    assert arrays["perturbation_rgb"].shape == (SIZE, SIZE, 3) and arrays["heat"].shape == (SIZE, SIZE)
    assert len(arrays["probabilities"]) == 2 and len(arrays["all_probabilities"]) == 3


def test_default_images_fall_back_to_an_upload_prompt(monkeypatch):
    from utils.data import imagenette

    def missing(root=None):
        raise FileNotFoundError("10 of the ten example images are missing. Create them ...")

    monkeypatch.setattr(imagenette, "example_files", missing)
    monkeypatch.delenv("IMAGENETTE_ROOT", raising=False)
    images, source = explore_module.default_images()
    assert images == {} and "example images are missing" in source and "upload" in source
