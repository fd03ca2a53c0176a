"""Classifiers that take images in [-1, 1]: the paper's torchvision models and the bundled one."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torchvision
from torch import nn

from ..data.imagenette import IMAGENETTE_CLASSES, IMAGENETTE_TO_IMAGENET, PAPER_CLASSES
from .nets import ARCHITECTURES
from ..paths import WEIGHTS

PAPER_MODELS = ("resnet50", "vgg11_bn", "densenet121")
BUNDLED = "bundled"
# Networks trained here on Imagenette (10 logits, float16 weights in utils/models/weights/, no download):
# name -> (architecture in utils.models.nets.ARCHITECTURES, training seed).
TRAINED = {BUNDLED: ("poolresnet", 0), "bundled_seed1": ("poolresnet", 1), "bundled_plain": ("plain", 0)}
# The model the notebook, figures and explorer use when the paper's ImageNet weights cannot be downloaded
# (the choice follows the alignment study's rule: utils.experiments.alignment.decide).
OFFLINE_DEFAULT = BUNDLED


def trained_stem(arch: str, seed: int) -> str:
    """File stem of a training run's weights and log: ``bundled_imagenette`` for the default run."""
    return "bundled_imagenette" if (arch, seed) == ("poolresnet", 0) else f"{arch}_seed{seed}_imagenette"


def trained_weights(name: str) -> Path:
    """Path of the float16 weights of a model in :data:`TRAINED`."""
    return WEIGHTS / f"{trained_stem(*TRAINED[name])}.pt"


BUNDLED_WEIGHTS = trained_weights(BUNDLED)
BUNDLED_LOG = BUNDLED_WEIGHTS.with_name("bundled_imagenette_log.csv")


def training_log_path(name: str) -> Path:
    """Path of the per-epoch training log committed beside a trained model's weights."""
    return trained_weights(name).with_name(f"{trained_stem(*TRAINED[name])}_log.csv")


OSTRICH = 9  # ImageNet index of the paper's extra target
# For the 10-class bundled model: the animal class no row image belongs to stands in for "ostrich".
BUNDLED_EXTRA = 1  # English springer


class PretrainedUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded (e.g. no internet access)."""


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Normalize(nn.Module):
    """Map images in [-1, 1] to ``(x01 - mean) / std`` with ``x01 = (x + 1) / 2``, channel-wise.

    Input and output (N, C, H, W); ``mean`` and ``std`` are in [0, 1] pixel units (ImageNet's by default).
    """

    def __init__(self, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2 - self.mean) / self.std


class Classifier(nn.Module):
    """``net(normalize(x))`` for x in [-1, 1] of shape (N, 3, H, W) -> logits (N, len(class_names)).

    Attributes:
        name: model name (``"resnet50"``, ..., ``"bundled"``).
        class_names: list of class names, index = logit index.
    """

    def __init__(self, net: nn.Module, normalize: nn.Module, class_names: Sequence[str], name: str):
        super().__init__()
        self.normalize, self.net = normalize, net
        self.class_names, self.name = list(class_names), name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _imagenet_model(name: str, pretrained: bool) -> Classifier:
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    try:
        net = torchvision.models.get_model(name, weights=weights if pretrained else None)
    except Exception as error:  # urllib/HTTP/OS errors differ by platform; all mean "no download"
        raise PretrainedUnavailableError(
            f"could not download the ImageNet weights {weights} for {name} ({type(error).__name__}: {error}). "
            f"Without internet access use the bundled Imagenette model: load_model('{BUNDLED}')") from error
    preprocess = weights.transforms()
    return Classifier(net, Normalize(preprocess.mean, preprocess.std), weights.meta["categories"], name)


def load_float32(net: nn.Module, state: dict) -> nn.Module:
    """Load a state dict (e.g. the float16 committed weights) into ``net`` as float32; integer buffers stay."""
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return net


def bundled_model(weights: str | Path | None = BUNDLED_WEIGHTS, name: str = BUNDLED) -> Classifier:
    """A network trained here (10 classes, torchvision's Imagenette order), float32: ``name`` in
    :data:`TRAINED` gives the architecture; ``weights`` None leaves it randomly initialised."""
    net = ARCHITECTURES[TRAINED[name][0]](num_classes=len(IMAGENETTE_CLASSES))
    if weights is not None:
        if not Path(weights).is_file():
            arch, seed = TRAINED[name]
            raise FileNotFoundError(
                f"no weights for {name!r} at {weights}: train them with `python -m utils.experiments.training "
                f"--data <imagenette root> --arch {arch} --seed {seed} --out {Path(weights).parent}`")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        load_float32(net, state)
    return Classifier(net, nn.Identity(), IMAGENETTE_CLASSES, name)


def load_model(name: str, device: str | torch.device | None = None, pretrained: bool = True) -> Classifier:
    """A classifier for images in [-1, 1] (N, 3, H, W), in eval mode, on ``device`` (default: CUDA if present).

    Args:
        name: ``"resnet50"``, ``"vgg11_bn"``, ``"densenet121"`` (torchvision, ``IMAGENET1K_V1`` weights
            through the weights API, 1000 ImageNet logits) or a network trained here on Imagenette
            (:data:`TRAINED`: ``"bundled"``, ``"bundled_seed1"``, ``"bundled_plain"``; 10 logits, no download).
        device: where to put it.
        pretrained: False builds the architecture with random weights (no download; for tests).

    Raises:
        PretrainedUnavailableError: the ImageNet weights cannot be downloaded.
        FileNotFoundError: a trained network's weights are missing (the message gives the training command).
    """
    if name in TRAINED:
        model = bundled_model(trained_weights(name) if pretrained else None, name)
    elif name in PAPER_MODELS:
        model = _imagenet_model(name, pretrained)
    else:
        raise ValueError(f"unknown model {name!r}: choose one of {PAPER_MODELS + tuple(TRAINED)}")
    return model.to(device or default_device()).eval()


def paper_targets(model: Classifier) -> tuple[list[int], list[str]]:
    """The six target columns of the paper's grids as (logit indices, labels).

    The five row classes (tench, cassette player, church, garbage truck, golf ball) and "ostrich";
    for the 10-class Imagenette models, which have no ostrich, the English springer stands in.
    """
    if model.name in TRAINED:
        indices = [*PAPER_CLASSES, BUNDLED_EXTRA]
        labels = [IMAGENETTE_CLASSES[i] for i in PAPER_CLASSES] + [f"{IMAGENETTE_CLASSES[BUNDLED_EXTRA]} (for ostrich)"]
        return indices, labels
    indices = [IMAGENETTE_TO_IMAGENET[i] for i in PAPER_CLASSES] + [OSTRICH]
    return indices, [model.class_names[i] for i in indices]


def bundled_training_log(path: str | Path | None = None, name: str = BUNDLED) -> list[dict]:
    """A trained model's per-epoch training log (epoch, resolution, losses, accuracies, elapsed seconds):
    the one at ``path``, else the one committed for ``name`` (:data:`TRAINED`)."""
    import csv

    with open(path or training_log_path(name), newline="") as f:
        return [{k: float(v) if "." in v else int(v) for k, v in row.items()} for row in csv.DictReader(f)]
