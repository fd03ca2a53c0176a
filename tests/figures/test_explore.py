"""The explorer, without a browser: set widget values, update, and check what it shows."""
import datetime
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from utils import excitation_pullback, load_model, pullback_ascent, vanilla_gradient
from utils.figures.explore import inputs as inputs_module
from utils.figures.explore import widget as explore_module
from utils.figures.explore.widget import method_threads
from utils.figures.explore import (Cancelled, Explorer, Updates, explore, explore_path, field_heat, heat_rgb,
                                   loadable_models, panel_arrays)
from utils.figures.heatmaps import as_heat, pixel_relevance
from utils.models.zoo import OFFLINE_DEFAULT, PAPER_MODELS, PretrainedUnavailableError

SIZE = 128  # smaller than the figures' 224 px to keep the suite quick; the bundled model takes any size
MODELS = ["bundled"]  # the list offered in these tests (no probing for downloads)


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


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return buffer.getvalue()


def counting(monkeypatch) -> list:
    """Record the method of every path :class:`Explorer` computes (a cached one is not computed)."""
    calls = []

    def counted(model, image, target, method, *args, **kwargs):
        calls.append(method)
        return explore_path(model, image, target, method, *args, **kwargs)
    monkeypatch.setattr(explore_module, "explore_path", counted)
    return calls


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
        assert torch.allclose(result.first, expected[0], atol=1e-6)  # every class at the image


def test_a_continued_path_is_the_whole_path(model, images):
    x = images["second"]
    whole = explore_path(model, x, 6, steps=3, temperature=0.3)
    continued = explore_path(model, x, 6, steps=3, temperature=0.3,
                             start=explore_path(model, x, 6, steps=1, temperature=0.3))
    assert torch.equal(whole.trajectory, continued.trajectory)
    assert torch.allclose(whole.probabilities, continued.probabilities, atol=1e-6)
    assert torch.equal(whole.first, continued.first)
    # a start with other settings is ignored, not continued
    other = explore_path(model, x, 6, steps=2, start=explore_path(model, x, 7, steps=1))
    assert torch.equal(other.trajectory, whole.trajectory[:3])


def test_zero_steps_give_the_field_alone(model, images):
    result = explore_path(model, images["first"], 2, steps=0)
    assert result.trajectory.shape == (1, 3, SIZE, SIZE) and result.probabilities.shape == (1,)
    assert torch.equal(result.field, excitation_pullback(model, images["first"][None], 2)[0])


def test_the_widget_shows_pullback_and_gradient_side_by_side(model, images, monkeypatch):
    monkeypatch.setenv("PULLBACK_DOWNLOAD", "0")  # the list offers no download: nothing is probed
    widget = explore(model, images, background=False)
    explorer = widget.explorer
    assert set(explorer.results) == {"pullback", "gradient"}  # it drew once on construction
    names = model.class_names
    target = names.index("golf ball")
    with explorer.hold():
        explorer.image.value = "first"
        explorer.target.value = target
        explorer.temperature.value = 0.5
        explorer.gate.value = "sigmoid"
        explorer.steps.value = 4
    x = images["first"]

    # each field shown is its method's, and its panel is its heat map
    fields = {"pullback": excitation_pullback(model, x[None], target, temperature=0.5)[0],
              "gradient": vanilla_gradient(model, x[None], target)[0]}
    assert not torch.equal(fields["pullback"], fields["gradient"])
    for method, field in fields.items():
        shown = explorer.shown[method]
        assert torch.equal(shown["field"], field)
        heat = as_heat(pixel_relevance(field))
        np.testing.assert_array_equal(shown["heat"], heat)
        scale = torch.quantile(pixel_relevance(field).abs().flatten(), 0.995).item()
        assert shown["heat_scale"] == pytest.approx(scale)
        panel = png_array(explorer.pngs[f"{method}_field"])
        assert panel.shape == (SIZE, SIZE, 3)
        assert np.abs(panel.astype(float) - heat_rgb(heat) * 255).max() <= 1
        # the perturbation and the perturbed image are pullback_ascent's after k steps
        path = pullback_ascent(model, x[None], target, steps=4, method=method,
                               **({"temperature": 0.5} if method == "pullback" else {}))[0]
        assert torch.equal(shown["perturbed"], path)
        assert torch.equal(shown["perturbation"], path - x)
        assert len(shown["probabilities"]) == 5
        # the panels carry alt text naming the method and the target
        for column in ("field", "perturbation", "perturbed"):
            value = explorer.panels[f"{method}_{column}"].value
            assert "alt='" in value and "golf ball" in value and f"data-panel='{method}_{column}'" in value
    p = explorer.shown["pullback"]["probabilities"]
    assert p[-1] > p[0] + 0.1, p  # the ascent raises the target's probability overall
    assert "p(golf ball): pullback" in explorer.status.value and "after 4 steps" in explorer.status.value

    # the top 3 at the image are the model's, and the page says "prediction: <class> (p = ...)"
    with torch.no_grad():
        q, top = model(x[None]).softmax(1)[0].topk(3)
    assert [name for name, _ in explorer.top] == [names[i] for i in top]
    np.testing.assert_allclose([v for _, v in explorer.top], q.numpy(), atol=1e-6)
    assert f"prediction: {names[top[0]]} (p = {q[0]:.2f})" in explorer.panels["image"].value

    # one probability plot for both, and a PNG of everything to download
    assert png_array(explorer.pngs["probability"]).shape[2] == 3
    assert png_array(explorer.download_png).shape[1] > 3 * SIZE
    assert "download=" in explorer.download.value and "data:image/png;base64," in explorer.download.value

    # the colour bar's ends are the field's scale
    assert f"+{explorer.shown['pullback']['heat_scale']:.2g}" in explorer.panels["pullback_field"].value

    # the same view as one matplotlib figure: per method image, field, perturbation, perturbed; the curves
    import matplotlib.pyplot as plt
    figure = explorer.figure(dpi=40)
    assert len(figure.axes) == 9 and len(figure.axes[-1].get_legend().get_texts()) == 2
    plt.close(figure)


def test_a_change_recomputes_only_what_it_touches(model, images, monkeypatch):
    calls = counting(monkeypatch)
    explorer = Explorer(model, images, models=MODELS)
    assert sorted(calls) == ["gradient", "pullback"]
    p = explorer.shown["pullback"]["probabilities"]
    calls.clear()
    explorer.steps.value = 2  # shorter: both from the cache, cut short
    assert calls == [] and len(explorer.shown["pullback"]["probabilities"]) == 3
    np.testing.assert_array_equal(explorer.shown["pullback"]["probabilities"], p[:3])
    explorer.temperature.value = 1.0  # T changes the pullback only; the gradient comes from the cache
    assert calls == ["pullback"]
    calls.clear()
    explorer.gate.value = "normal_cdf"
    assert calls == ["pullback"]
    calls.clear()
    with explorer.hold():  # back to settings computed before (at 5 steps >= 2)
        explorer.temperature.value = 0.3
        explorer.gate.value = "sigmoid"
    assert calls == []
    assert torch.equal(explorer.shown["pullback"]["field"],
                       excitation_pullback(model, images[explorer.image.value][None], explorer.target.value)[0])


def test_a_newer_change_cancels_the_update_in_progress(model, images):
    explorer = Explorer(model, images, models=MODELS, background=True)
    assert explorer.wait(120)
    done = explorer.updates.finished
    with explorer.hold(update=False):
        explorer.steps.value = 8
    for target in (1, 2, 3):  # three quick changes: only the last is computed to the end
        explorer.target.value = target
    assert explorer.wait(300)
    assert explorer.updates.finished == done + 1
    assert explorer.updates.generation - explorer.updates.finished >= 2
    x = images[explorer.image.value][None]
    # the two methods ran at once (the gradient on a copy of the model): each is still the library's, computed
    # with the same intra-op thread count (another count sums in another order)
    threads = torch.get_num_threads()
    torch.set_num_threads(method_threads())
    try:
        pullback, gradient = excitation_pullback(model, x, 3)[0], vanilla_gradient(model, x, 3)[0]
        path = pullback_ascent(model, x, 3, steps=8, method="gradient")[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(explorer.shown["pullback"]["field"], pullback)
    assert torch.equal(explorer.shown["gradient"]["field"], gradient)
    assert torch.equal(explorer.shown["gradient"]["perturbed"], path)
    assert f"p({model.class_names[3]})" in explorer.status.value


def test_updates_stop_when_stale():
    log, release = [], threading.Event()

    def run(generation):
        log.append(("start", generation))
        release.wait(10)
        updates.check(generation)
        log.append(("done", generation))
    updates = Updates(run, background=True)
    updates.request()
    while not log:
        pass
    updates.request()  # while the first still runs
    updates.request()  # supersedes the second before it starts
    release.set()
    assert updates.wait(10)
    assert log == [("start", 1), ("start", 3), ("done", 3)]
    assert updates.cancelled == 1 and updates.finished == 1
    with pytest.raises(Cancelled):
        updates.check(2)


def test_uploads_are_decoded_resized_and_confirmed(model, images):
    explorer = Explorer(model, images, models=MODELS)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    content = png_bytes(np.array(picture))
    with explorer.hold(update=False):
        explorer.steps.value = 1
    explorer.upload.value = ({"name": "mine.png", "type": "image/png", "size": len(content),
                              "content": memoryview(content),
                              "last_modified": datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)},)
    assert explorer.image.value == "upload 1: mine.png" and explorer.upload.value == ()
    assert explorer.shown["pullback"]["perturbed"].shape == (3, 224, 224)
    expected = torch.from_numpy(np.array(picture)).permute(2, 0, 1)
    from utils.data.imagenette import resize_center, to_unit_range
    assert torch.equal(explorer.images[explorer.image.value], to_unit_range(resize_center(expected, 224)))
    assert "added <b>mine.png</b>" in explorer.upload_note.value
    assert "200 x 150 px: the centre square was kept" in explorer.upload_note.value


def test_bad_uploads_are_explained_in_words(model, images, monkeypatch):
    explorer = Explorer(model, images, models=MODELS)
    assert explorer.add_image("broken.png", b"not an image") == ""
    note = explorer.upload_note.value
    assert "broken.png is not an image file" in note
    assert "BytesIO" not in note and "<_io" not in note and "Error" not in note
    monkeypatch.setattr(inputs_module, "MAX_UPLOAD_PIXELS", 100)  # refused before it is decoded
    assert explorer.add_image("big.png", png_bytes(np.zeros((20, 30, 3), np.uint8))) == ""
    assert "big.png is too large (30 x 20 pixels)" in explorer.upload_note.value


def test_a_model_that_cannot_load_is_explained_in_words(model, images, monkeypatch):
    def offline(name, device=None):
        raise PretrainedUnavailableError(f"could not download the ImageNet weights for {name} (URLError: ...). "
                                         "Without internet access use the bundled Imagenette model: "
                                         "load_model('bundled')")

    monkeypatch.setattr(explore_module, "load_model", offline)
    explorer = Explorer(model, images, models=["bundled", "resnet50"])
    shown = explorer.shown
    explorer.model.value = "resnet50"
    status = explorer.status.value
    assert "resnet50 needs its ImageNet weights" in status and OFFLINE_DEFAULT in status
    assert "load_model" not in status and "URLError" not in status and "Error" not in status
    assert explorer.model.value == "bundled" and explorer.shown is shown


def test_only_loadable_models_are_offered(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("PULLBACK_DOWNLOAD", raising=False)
    probed = []

    def probe(answer):
        return lambda url: probed.append(url) or answer
    offline = loadable_models(probe=probe(False))
    assert offline[0] == OFFLINE_DEFAULT and not set(PAPER_MODELS) & set(offline)
    assert len(probed) == 1  # one look at the download host, not one per model
    assert loadable_models(probe=probe(True))[-3:] == list(PAPER_MODELS)
    monkeypatch.setenv("PULLBACK_DOWNLOAD", "0")
    probed.clear()
    assert not set(PAPER_MODELS) & set(loadable_models(probe=probe(True))) and probed == []
    # weights torch.hub has cached count as loadable without a download
    cached = inputs_module.cached_checkpoint(inputs_module.imagenet_weights("vgg11_bn"))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert set(PAPER_MODELS) & set(loadable_models(probe=probe(False))) == {"vgg11_bn"}
    assert loadable_models("bundled", probe=probe(False))[0] == "bundled"


def test_another_model_keeps_the_target_class(images, monkeypatch):
    """Switching between the 10-class model and a 1000-class one maps the target through ImageNet indices."""
    small = load_model("bundled", "cpu", pretrained=False)
    big = load_model("bundled", "cpu", pretrained=False)
    big.net.fc = torch.nn.Linear(big.net.fc.in_features, 1000)
    big.class_names = [f"imagenet {i}" for i in range(1000)]
    big.class_names[497] = "church"
    big.name = "resnet50"
    monkeypatch.setattr(explore_module, "load_model", lambda name, device=None: big.eval())
    explorer = Explorer(small, {"a": images["first"][:, :64, :64]}, models=["bundled", "resnet50"])
    with explorer.hold(update=False):
        explorer.steps.value = 1
    explorer.target.value = small.class_names.index("golf ball")
    explorer.model.value = "resnet50"
    assert explorer.target.value == 574  # golf ball in ImageNet
    assert explorer.shown["gradient"]["field"].shape == (3, 64, 64)


def test_thumbnails_pick_their_image(model, images):
    explorer = Explorer(model, images, models=MODELS)
    assert [b.description for b in explorer.thumbnails] == list(images)
    explorer.thumbnails[1].click()
    assert explorer.image.value == "second"
    assert torch.equal(explorer.results["pullback"].trajectory[0], images["second"])


def test_no_images_is_not_an_error(model, monkeypatch):
    monkeypatch.setattr(explore_module, "default_images", lambda: ({}, "no example images: upload one"))
    explorer = Explorer(model, models=MODELS)
    assert explorer.results == {} and "upload one" in explorer.status.value


def test_panel_arrays_of_k_steps(model, images):
    result = explore_path(model, images["first"], 1, steps=2)
    arrays = panel_arrays(result, 1)
    assert torch.equal(arrays["perturbed"], result.trajectory[1])
    assert arrays["perturbation_rgb"].shape == (SIZE, SIZE, 3) and arrays["heat"].shape == (SIZE, SIZE)
    assert len(arrays["probabilities"]) == 2 and len(arrays["all_probabilities"]) == 3
    heat, scale = field_heat(result.field)
    np.testing.assert_array_equal(heat, as_heat(pixel_relevance(result.field)))


def test_default_images_fall_back_to_an_upload_prompt(monkeypatch):
    from utils.data import imagenette

    def missing(root=None):
        raise FileNotFoundError("10 of the ten example images are missing. Create them ...")

    monkeypatch.setattr(imagenette, "example_files", missing)
    monkeypatch.delenv("IMAGENETTE_ROOT", raising=False)
    images, source = explore_module.default_images()
    assert images == {} and "example images are missing" in source and "upload" in source
