"""Committed weights: the paper's architectures trained on Imagenette, and every file checked on load."""
import hashlib
import re
import types
from urllib.parse import urlparse

import pytest
import torch
import torchvision

from utils import PretrainedUnavailableError, load_model
from utils.data.imagenette import IMAGENETTE_CLASSES
from utils.models import zoo


def test_every_committed_weights_file_has_its_recorded_hash():
    """A new weights file cannot be committed without its SHA-256 and size in zoo.COMMITTED."""
    on_disk = {p.name for p in zoo.WEIGHTS.glob("*.pt")}
    assert on_disk == set(zoo.COMMITTED)
    for name, (sha256, size) in zoo.COMMITTED.items():
        data = (zoo.WEIGHTS / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha256, size), name


@pytest.mark.parametrize("name, build", [("resnet50_imagenette", torchvision.models.resnet50),
                                         ("densenet121_imagenette", torchvision.models.densenet121)])
def test_paper_architectures_load_offline_and_compute_as_torchvision(monkeypatch, name, build):
    """The zoo's model is torchvision's architecture with the committed float16 state dict as float32, inputs in
    [-1, 1] fed as they are: its logits equal those of the network built and loaded by hand."""
    def offline(*args, **kwargs):
        raise AssertionError("a trained model must not download anything")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    model = load_model(name, device="cpu")
    assert model.class_names == list(IMAGENETTE_CLASSES) and isinstance(model.normalize, torch.nn.Identity)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    state = torch.load(zoo.WEIGHTS / f"{name}.pt", weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    by_hand = build(num_classes=10)
    by_hand.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    by_hand.eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), by_hand(x))


def _damage(kind: str, data: bytes) -> bytes:
    if kind == "64 bytes flipped":
        middle = len(data) // 2
        return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:]
    return {"cut short": data[:len(data) // 3], "empty": b"",
            "Git LFS pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 9\n"}[kind]


@pytest.mark.parametrize("kind, says", [("64 bytes flipped", "has SHA-256 [0-9a-f]{64}, not the recorded"),
                                        ("cut short", "has 3,122,799 bytes, not the recorded 9,368,397 \\(cut short\\)"),
                                        ("empty", "is empty"), ("Git LFS pointer", "is a Git LFS pointer")])
def test_a_damaged_committed_file_is_refused_naming_it(monkeypatch, tmp_path, kind, says):
    """Altered bytes used to load without complaint; a cut-short, empty or LFS-pointer file gave torch's reader
    error or a bare EOFError naming no file."""
    name = "plain_seed0_imagenette.pt"
    (tmp_path / name).write_bytes(_damage(kind, (zoo.WEIGHTS / name).read_bytes()))
    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path)
    with pytest.raises(Exception, match=re.escape(str(tmp_path / name)) + " " + says) as error:
        load_model("bundled_plain", device="cpu")
    assert type(error.value).__name__ == "WeightsFileError" and "git checkout" in str(error.value)


def test_a_damaged_file_of_ones_own_names_it_and_the_training_command(tmp_path):
    path = tmp_path / "mine.pt"
    path.write_bytes((zoo.WEIGHTS / "plain_seed0_imagenette.pt").read_bytes()[:5000])
    with pytest.raises(zoo.WeightsFileError, match=re.escape(str(path)) + " could not be read .*--arch plain"):
        zoo.bundled_model(path, "bundled_plain")


def test_a_damaged_cached_imagenet_checkpoint_is_named_not_called_a_failed_download(monkeypatch, tmp_path):
    """A cut-short file in torch.hub's cache used to give "could not download the ImageNet weights"."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("the file is cached"))
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    cached = tmp_path / "checkpoints" / urlparse(weights.url).path.split("/")[-1]
    cached.parent.mkdir()
    cached.write_bytes(b"PK\x03\x04" + bytes(1000))
    with pytest.raises(zoo.WeightsFileError, match=re.escape(str(cached)) + " has SHA-256 .*delete it") as error:
        load_model("resnet50", device="cpu")
    assert not isinstance(error.value, PretrainedUnavailableError)


def test_a_cached_checkpoint_is_checked_against_the_hash_in_its_name(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    data = b"some weights"
    prefix = hashlib.sha256(data).hexdigest()[:8]
    (tmp_path / "checkpoints").mkdir()
    cached = tmp_path / "checkpoints" / f"net-{prefix}.pth"
    cached.write_bytes(data)
    stand_in = types.SimpleNamespace(url=f"https://example.org/models/net-{prefix}.pth")
    zoo.check_cached(stand_in)  # the intact file passes
    cached.write_bytes(b"Some weights")
    with pytest.raises(zoo.WeightsFileError, match=f"not the recorded {prefix}"):
        zoo.check_cached(stand_in)


def test_a_missing_cached_checkpoint_still_means_download(monkeypatch, tmp_path):
    import urllib.error

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedUnavailableError, match="could not download"):
        load_model("densenet121", device="cpu")


@pytest.mark.parametrize("default, expected", [("bundled", ["bundled"]),
                                               ("resnet50_imagenette", ["resnet50_imagenette", "densenet121_imagenette"])])
def test_offline_the_default_comes_with_the_other_paper_architecture(monkeypatch, tmp_path, default, expected):
    """Without ImageNet weights the notebook gets OFFLINE_DEFAULT, and beside a ResNet50 the DenseNet121 too."""
    import urllib.error

    from utils.config import Config, choose_models

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(zoo, "OFFLINE_DEFAULT", default)
    monkeypatch.setenv("PULLBACK_MODELS", "auto")
    monkeypatch.setenv("PULLBACK_DEVICE", "cpu")
    models, reason = choose_models(Config.from_env())
    assert list(models) == expected and [m.name for m in models.values()] == expected
    assert reason.endswith(", ".join(map(repr, expected))) and "unavailable" in reason
