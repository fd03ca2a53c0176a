"""The study's models and images: the Imagenette models offline, the paper's ImageNet models online.

Offline (no download): ``resnet50_imagenette``, ``densenet121_imagenette`` (10 logits) on Imagenette's val split.
Online: torchvision's ``resnet50`` and ``vgg11_bn`` (``IMAGENET1K_V1``) and timm's ``pvt_v2_b1`` (pretrained),
1000 logits, on an ImageNet val folder (``<folder>/<wnid>/*.JPEG``, the 1000 synsets; the class index is the
wnid's position in sorted order, torchvision's ``ImageFolder`` convention), decoded as the authors do: shorter
side to 256, centre crop 224.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.datasets.folder import find_classes, make_dataset

from ...data.imagenette import read_rgb, resize_center, to_unit_range
from ...models.zoo import PAPER_MODELS_IMAGENETTE, Classifier, Normalize, PretrainedUnavailableError, load_model
from ..runner import evaluation_images

TIMM_MODELS = ("pvt_v2_b1",)
ONLINE = ("resnet50", "vgg11_bn", *TIMM_MODELS)
OFFLINE = PAPER_MODELS_IMAGENETTE
MODELS = (*OFFLINE, *ONLINE)
IMAGENET_CLASSES = 1000


def load_timm(name: str, device, pretrained: bool = True) -> Classifier:
    """A timm model (pretrained weights through timm's hub download) as a :class:`Classifier` on [-1, 1] images."""
    import timm

    try:
        net = timm.create_model(name, pretrained=pretrained)
    except Exception as error:  # hub/HTTP/OS errors differ by platform; all mean "no download"
        raise PretrainedUnavailableError(f"could not download timm's {name} weights ({type(error).__name__}: "
                                         f"{error}); offline, use --model resnet50_imagenette") from error
    config = net.pretrained_cfg
    return Classifier(net, Normalize(config["mean"], config["std"]), [str(i) for i in range(net.num_classes)],
                      name).to(device).eval()


def study_model(name: str, device, pretrained: bool = True) -> nn.Module:
    """One of :data:`MODELS`, in eval mode on ``device``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {MODELS}")
    if name in TIMM_MODELS:
        return load_timm(name, device, pretrained)
    return load_model(name, device, pretrained=pretrained)


def imagenet_files(folder) -> list[tuple[str, int]]:
    """``(path, ImageNet class index)`` of every image of an ImageNet val folder, in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no ImageNet val folder at {folder}: expected <folder>/<wnid>/*.JPEG")
    wnids, index = find_classes(str(folder))
    if len(wnids) != IMAGENET_CLASSES:
        raise ValueError(f"{folder} holds {len(wnids)} class folders; an ImageNet val folder holds the "
                         f"{IMAGENET_CLASSES} synsets (their sorted position is the class index)")
    return make_dataset(str(folder), index, extensions=(".jpeg", ".jpg", ".png"), allow_empty=True)


def picks_for(model: str, root, count: int, seed: int) -> list[tuple[int, str, int]]:
    """``count`` seeded ``(index, path, label)`` picks: Imagenette val for an offline model, else ImageNet val
    (a seeded permutation, so fewer images with the same seed are a prefix of more)."""
    if model in OFFLINE:
        return evaluation_images(root, count, seed)
    files = imagenet_files(root)
    if not 0 < count <= len(files):
        raise ValueError(f"images must be in 1..{len(files)}, got {count}")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()[:count]
    return [(i, *files[i]) for i in order]


def load_picked(model: str, path: str, size: int) -> torch.Tensor:
    """One picked image (3, size, size) in [-1, 1]: Imagenette's shorter side to ``size`` and centre crop; ImageNet's
    the evaluation transform (shorter side to ``size * 8 / 7``, 256 for 224, then the centre crop)."""
    if model in OFFLINE:
        return to_unit_range(resize_center(read_rgb(path), size))
    image = resize_center(read_rgb(path), round(size * 8 / 7))
    top = (image.shape[-1] - size) // 2
    return to_unit_range(image[:, top:top + size, top:top + size])

