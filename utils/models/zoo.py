"""Classifiers that take images in [-1, 1]: the paper's torchvision models and the bundled one."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from ..data.imagenette import IMAGENETTE_CLASSES, IMAGENETTE_TO_IMAGENET, PAPER_CLASSES
from .integrity import WeightsFileError, load_state, weights_problem
from .nets import ARCHITECTURES
from ..paths import WEIGHTS

PAPER_MODELS = ("resnet50", "vgg11_bn", "densenet121")
BUNDLED = "bundled"
# Networks trained here on Imagenette (10 logits, float16 weights in utils/models/weights/, no download):
# name -> (architecture in utils.models.nets.ARCHITECTURES, training seed).
TRAINED = {BUNDLED: ("poolresnet", 0), "bundled_seed1": ("poolresnet", 1), "bundled_plain": ("plain", 0),
           "resnet50_imagenette": ("resnet50", 0), "densenet121_imagenette": ("densenet121", 0)}
# Runs whose files have a name of their own (every other run: <arch>_seed<seed>_imagenette).
STEMS = {("poolresnet", 0): "bundled_imagenette", ("resnet50", 0): "resnet50_imagenette",
         ("densenet121", 0): "densenet121_imagenette"}
# The model the notebook, figures and explorer use when the paper's ImageNet weights cannot be downloaded,
# chosen by the alignment study's rule (utils.experiments.alignment.decide) on results/alignment/architectures:
# resnet50_imagenette beats bundled on every count (accuracy 88.8% vs 87.2%; 5-step pullback-gradient cosine
# at T = 0.3 0.408 [0.362, 0.452] vs 0.575 [0.516, 0.626]; agreement gain +0.017 vs +0.011; transfer gain
# +0.41 vs +0.26 nats; 20 images).
OFFLINE_DEFAULT = "resnet50_imagenette"
# The paper's architectures trained here on Imagenette, in the paper's order (its VGG11_BN is left out: its
# 4096-wide classifier alone is 240 MB).
PAPER_MODELS_IMAGENETTE = ("resnet50_imagenette", "densenet121_imagenette")


def offline_models() -> tuple[str, ...]:
    """The models the notebook and figures load when the paper's ImageNet weights cannot be downloaded:
    :data:`OFFLINE_DEFAULT` first, and when it is one of :data:`PAPER_MODELS_IMAGENETTE`, the other beside it
    (the paper's layout, every figure for each architecture)."""
    if OFFLINE_DEFAULT in PAPER_MODELS_IMAGENETTE:
        return tuple(dict.fromkeys((OFFLINE_DEFAULT, *PAPER_MODELS_IMAGENETTE)))
    return (OFFLINE_DEFAULT,)


def trained_stem(arch: str, seed: int) -> str:
    """File stem of a training run's weights and log: ``bundled_imagenette`` for the default run,
    ``resnet50_imagenette`` / ``densenet121_imagenette`` for seed 0 of those, else ``<arch>_seed<seed>_imagenette``."""
    return STEMS.get((arch, seed), f"{arch}_seed{seed}_imagenette")


def trained_weights(name: str) -> Path:
    """Path of the float16 weights of a model in :data:`TRAINED`."""
    return WEIGHTS / f"{trained_stem(*TRAINED[name])}.pt"


BUNDLED_WEIGHTS = trained_weights(BUNDLED)
# SHA-256 and size (bytes) of every committed weights file, checked whenever it is loaded.
COMMITTED = {
    "bundled_imagenette.pt": ("389f6ce0a99fcf002c7bb8ae01f13d2f6df4f2763e9da627bf14ff5cbe3595ea", 12246085),
    "poolresnet_seed1_imagenette.pt": ("1b954d2484b2a0f856a40b22654d611a1f070268fe9e1139351975fe0b76f18e", 12244431),
    "plain_seed0_imagenette.pt": ("98ce0c9d44d4f9d30de017c8c37acf722e68de3ce0fc792c2af0ac77908b8ee2", 9368397),
    "resnet50_imagenette.pt": ("4e96a60661d53c3de6f3261d9dcec951e8340cda49f4be617a77fc9db81303fc", 47262727),
    "densenet121_imagenette.pt": ("c00a3e49133b70fe549bda64857c94684166487d0169d48c86c99178ea85d28f", 14340676),
}
BUNDLED_LOG = BUNDLED_WEIGHTS.with_name("bundled_imagenette_log.csv")


# Top-1 on the full Imagenette val split (3,925 images, 224 px, float32) of the models whose committed files
# carry no per-epoch log (trained on a GPU; recipe in utils.experiments.training.batched), measured by
# `python -m utils.experiments.training.accuracy`.
VAL_ACCURACY = {"resnet50_imagenette": 0.8876, "densenet121_imagenette": 0.8464}


def val_accuracy(name: str) -> float:
    """Top-1 accuracy of a model in :data:`TRAINED` on the full Imagenette val split at 224 px (a fraction):
    :data:`VAL_ACCURACY`, else the last row of its committed training log."""
    if name in VAL_ACCURACY:
        return VAL_ACCURACY[name]
    last = bundled_training_log(name=name)[-1]
    if last["val_resolution"] != 224:
        raise ValueError(f"the training log of {name!r} ends with validation at {last['val_resolution']} px, not 224")
    return last["val_acc"]


def training_log_path(name: str) -> Path:
    """Path of the per-epoch training log committed beside a trained model's weights."""
    return trained_weights(name).with_name(f"{trained_stem(*TRAINED[name])}_log.csv")


OSTRICH = 9  # ImageNet index of the paper's extra target
# For the 10-class bundled model: the animal class no row image belongs to stands in for "ostrich".
BUNDLED_EXTRA = 1  # English springer


class PretrainedUnavailableError(RuntimeError):
    """The ImageNet weights of a paper model could not be downloaded (e.g. no internet access).

    Raised by :func:`load_model` for ``"resnet50"``, ``"vgg11_bn"`` and ``"densenet121"`` when torch.hub has no
    cached copy and the download fails; the networks trained on Imagenette (``"bundled"``, ...) never raise it.

    Attributes:
        args: ``(message,)``: what failed to download, the error behind it, and the offline model to use instead.
        __cause__: whatever the download raised (e.g. ``urllib.error.URLError``, an HTTP error or an ``OSError``).

    Example:
        >>> from utils import PretrainedUnavailableError, load_model
        >>> def load_or_bundled(name):
        ...     try:
        ...         return load_model(name, "cpu")
        ...     except PretrainedUnavailableError:  # offline, and no copy in torch.hub's cache
        ...         return load_model("bundled", "cpu")
        >>> load_or_bundled("bundled").name
        'bundled'
        >>> issubclass(PretrainedUnavailableError, RuntimeError)
        True
    """


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Normalize(nn.Module):
    """Map images in [-1, 1] to ``(x01 - mean) / std`` with ``x01 = (x + 1) / 2``, channel-wise.

    A model's first module when its network expects ImageNet-normalised inputs (the paper's torchvision models);
    calling it maps (N, C, H, W) to (N, C, H, W), same dtype and device.

    Args:
        mean: per-channel mean, in [0, 1] pixel units (default: ImageNet's, ``(0.485, 0.456, 0.406)``).
        std: per-channel standard deviation, in [0, 1] pixel units (default: ImageNet's,
            ``(0.229, 0.224, 0.225)``).

    Attributes:
        mean: buffer (1, C, 1, 1) holding ``mean`` (moves with ``.to(device)``, saved in the state dict).
        std: buffer (1, C, 1, 1) holding ``std``.

    Raises:
        RuntimeError: when called on inputs whose channel count is neither ``len(mean)`` nor 1 (torch's
            broadcasting error; a single channel broadcasts to ``len(mean)``).

    Example:
        >>> import torch
        >>> from utils import Normalize
        >>> Normalize().mean.shape
        torch.Size([1, 3, 1, 1])
        >>> halves = Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # maps [-1, 1] to itself
        >>> halves(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)).flatten().tolist()
        [-1.0, 0.0, 1.0]
    """

    def __init__(self, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2 - self.mean) / self.std


class Classifier(nn.Module):
    """``net(normalize(x))`` for x in [-1, 1] of shape (N, 3, H, W) -> logits (N, len(class_names)).

    What :func:`load_model` returns, and the model every function of :mod:`utils` takes: images in [-1, 1]
    whatever the network was trained on, plus the names the figures and the explorer show.

    Args:
        net: the network, (N, 3, H, W) -> logits (N, len(class_names)).
        normalize: maps images in [-1, 1] to what ``net`` expects: a :class:`Normalize`, or ``nn.Identity()``
            for a network that takes [-1, 1] as it is (those trained here).
        class_names: one name per logit, in logit order.
        name: the model's name (``"resnet50"``, ..., ``"bundled"``; the explorer's list shows it).

    Attributes:
        net: the network given.
        normalize: the normalisation given.
        name: model name (``"resnet50"``, ..., ``"bundled"``).
        class_names: list of class names, index = logit index.

    Raises:
        TypeError: ``class_names`` is not iterable. Calling the model raises what ``normalize`` or ``net`` raise.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from utils import Classifier, Normalize
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> model = Classifier(net, Normalize(), ["cat", "dog"], "tiny").eval()
        >>> model(torch.zeros(5, 3, 32, 32)).shape
        torch.Size([5, 2])
        >>> model.name, model.class_names[1]
        ('tiny', 'dog')
    """

    def __init__(self, net: nn.Module, normalize: nn.Module, class_names: Sequence[str], name: str):
        super().__init__()
        self.normalize, self.net = normalize, net
        self.class_names, self.name = list(class_names), name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def cached_checkpoint(weights) -> Path:
    """Where torch.hub keeps the downloaded file of torchvision ``weights`` (``<hub dir>/checkpoints/<name>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def check_cached(weights) -> None:
    """A WeightsFileError naming the cached file of ``weights`` when it is there but damaged: torch.hub
    checks the SHA-256 prefix in its name only on download, and would hand a damaged copy to torch's reader."""
    path = cached_checkpoint(weights)
    if not path.is_file():
        return
    prefix = torch.hub.HASH_REGEX.search(path.name)
    problem = weights_problem(path, sha256=prefix.group(1) if prefix else None)
    if problem is not None:
        raise WeightsFileError(f"the cached ImageNet weights file {path} {problem}; delete it and load the "
                               "model again to download it anew")


def _imagenet_model(name: str, pretrained: bool) -> Classifier:
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    if pretrained:
        check_cached(weights)
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


def trained_state(name: str, weights: str | Path | None = None) -> dict:
    """The state dict of a model in :data:`TRAINED`, from ``weights`` (default: its committed file).

    A committed file is checked against its recorded size and SHA-256 (:data:`COMMITTED`); any file for
    being empty, a Git LFS pointer or unreadable (:func:`utils.models.integrity.load_state`).

    Raises:
        FileNotFoundError: no file (the message gives the training command).
        WeightsFileError: the file fails a check (the message names it and says how to restore it).
    """
    path = Path(weights) if weights is not None else trained_weights(name)
    arch, seed = TRAINED[name]
    train = (f"`python -m utils.experiments.training --data <imagenette root> --arch {arch} --seed {seed} "
             f"--out {path.parent}`")
    if not path.is_file():
        raise FileNotFoundError(f"no weights for {name!r} at {path}: train them with {train}")
    recorded = COMMITTED.get(path.name) if path.resolve().parent == WEIGHTS.resolve() else None
    if recorded is None:
        return load_state(path, remedy=f"train them again with {train}")
    return load_state(path, *recorded, remedy=f"restore the committed file (`git checkout -- {path.name}` in "
                      f"{path.parent}); weights you trained yourself load with bundled_model(weights=<their path>)")


def bundled_model(weights: str | Path | None = BUNDLED_WEIGHTS, name: str = BUNDLED) -> Classifier:
    """A network trained here (10 classes, torchvision's Imagenette order, inputs in [-1, 1] fed as they are),
    float32: ``name`` in :data:`TRAINED` gives the architecture; ``weights`` (checked by :func:`trained_state`)
    None leaves it randomly initialised."""
    net = ARCHITECTURES[TRAINED[name][0]](num_classes=len(IMAGENETTE_CLASSES))
    if weights is not None:
        load_float32(net, trained_state(name, weights))
    return Classifier(net, nn.Identity(), IMAGENETTE_CLASSES, name)


def load_model(name: str, device: str | torch.device | None = None, pretrained: bool = True) -> Classifier:
    """A classifier for images in [-1, 1] (N, 3, H, W), in eval mode, on ``device`` (default: CUDA if present).

    Args:
        name: ``"resnet50"``, ``"vgg11_bn"``, ``"densenet121"`` (torchvision, ``IMAGENET1K_V1`` weights
            through the weights API, downloaded on first use into torch.hub's cache, 1000 ImageNet logits) or a
            network trained here on Imagenette (:data:`TRAINED`: ``"bundled"``, ``"bundled_seed1"``,
            ``"bundled_plain"``, ``"resnet50_imagenette"``, ``"densenet121_imagenette"``; committed weights,
            10 logits, no download; :data:`OFFLINE_DEFAULT` is the one the notebook uses offline).
        device: where to put it (default None: CUDA when available, else the CPU).
        pretrained: True (default) loads the weights; False builds the architecture with random weights
            (no download, no file read; for tests).

    Returns:
        A :class:`Classifier` in eval mode on ``device``, float32, mapping images (N, 3, H, W) in [-1, 1] to
        logits (N, 1000) or (N, 10); ``class_names`` and ``name`` set.

    Raises:
        ValueError: ``name`` is none of the models above.
        PretrainedUnavailableError: the ImageNet weights are not cached and cannot be downloaded.
        FileNotFoundError: a trained network's weights file is missing (the message gives the training command).
        utils.models.integrity.WeightsFileError: a weights file is damaged: a committed one differs from its
            recorded size or SHA-256, or torch.hub's cached copy fails its hash (the message says how to restore it).

    Example:
        >>> import torch
        >>> from utils import load_model
        >>> model = load_model("bundled", "cpu")  # committed weights: no download
        >>> model.name, len(model.class_names), model.training
        ('bundled', 10, False)
        >>> model(torch.zeros(2, 3, 64, 64)).shape  # any side divisible by 32
        torch.Size([2, 10])
        >>> load_model("resnet50", "cpu", pretrained=False).class_names[:2]  # random weights, no download
        ['tench', 'goldfish']
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

    Args:
        model: a :class:`Classifier` from :func:`load_model`. A ``model.name`` in :data:`TRAINED` (10 Imagenette
            logits) gets the Imagenette columns; any other name, the ImageNet ones (1000 logits).

    Returns:
        ``(indices, labels)``: six logit indices of ``model`` (ints, in column order) and their six labels
        (strings; for an ImageNet model ``model.class_names`` at those indices).

    Raises:
        AttributeError: ``model`` has no ``name`` (a bare network: wrap it in a :class:`Classifier`).
        IndexError: a model not in :data:`TRAINED` with fewer than 1000 class names.

    Example:
        >>> from utils import load_model, paper_targets
        >>> indices, labels = paper_targets(load_model("bundled", "cpu"))
        >>> indices
        [0, 2, 4, 6, 8, 1]
        >>> labels[-1]
        'English springer (for ostrich)'
        >>> paper_targets(load_model("resnet50", "cpu", pretrained=False))[0]  # ImageNet indices
        [0, 482, 497, 569, 574, 9]
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
