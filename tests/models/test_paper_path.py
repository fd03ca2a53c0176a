"""The paper's path without network: ImageNet weights from a seeded TORCH_HOME, figures under the paper's names.

Random-weight state dicts are saved under the file names of torchvision's ``IMAGENET1K_V1`` weights,
where the weights API looks before downloading (``$TORCH_HOME/hub/checkpoints/<file of weights.url>``);
torchvision checks a file's hash only when it downloads it, and the zoo's check of a cached file against the
hash in its name (:func:`utils.models.zoo.check_cached`, tested in test_weights_files.py) is switched off here.
"""
import os
import time
from urllib.parse import urlparse

import torch
import torch.hub
import torchvision

from utils import paper_batch
from utils.config import Config, choose_models
from utils.figures.grids import FIGURE_DIRS, ascent_figures, figure_path
from utils.models import zoo
from utils.models.zoo import PAPER_MODELS


def seed_torch_home(torch_home) -> dict[str, dict]:
    """Half-precision random state dicts under the weights API's file names; returns them by model name."""
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    saved = {}
    for name in PAPER_MODELS:
        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        state = {k: v.half() if v.is_floating_point() else v
                 for k, v in torchvision.models.get_model(name, weights=None).state_dict().items()}
        torch.save(state, checkpoints / os.path.basename(urlparse(weights.url).path))
        saved[name] = state
    return saved


def test_paper_models_and_figures_offline(tmp_path, monkeypatch, examples, one_thread):
    start = time.perf_counter()
    saved = seed_torch_home(tmp_path / "torch")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case anything called torch.hub.set_dir

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(zoo, "check_cached", lambda weights: None)  # the seeded stand-ins fail the real hashes
    for name, value in {"PULLBACK_MODELS": "auto", "PULLBACK_DEVICE": "cpu",
                        "PULLBACK_MEDIA": str(tmp_path / "media")}.items():
        monkeypatch.setenv(name, value)

    config = Config.from_env()
    models, reason = choose_models(config)
    assert list(models) == list(PAPER_MODELS) and "paper's models" in reason, reason
    for name, model in models.items():  # the seeded files were loaded, not some other weights
        state = model.net.state_dict()
        assert all(torch.equal(state[k].half(), v) for k, v in saved[name].items() if v.is_floating_point())
        assert len(model.class_names) == 1000

    images = paper_batch(size=32)[0]  # the paper's five from data/examples; tiny, as the file names do not depend on size
    for name, model in models.items():
        hits = ascent_figures(model, images, out_dir=config.media, steps=(1,), alpha=config.alpha, eps=config.eps,
                              temperature=config.temperature, progress=False)
        assert set(hits) == {("pullback", 1), ("gradient", 1)}
    written = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "media").rglob("*.jpg"))
    assert written == sorted(f"media/{folder}/{name}_alpha_20_steps_1.jpg"
                             for folder in FIGURE_DIRS.values() for name in PAPER_MODELS)
    assert (config.media / "pullback_diff" / "resnet50_alpha_20_steps_1.jpg").is_file()
    assert figure_path(config.media, "pullback", "diff", "densenet121", 20.0, 1).stat().st_size > 0
    print(f"paper path: {time.perf_counter() - start:.1f} s")
