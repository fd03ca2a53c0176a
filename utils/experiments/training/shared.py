"""What both training recipes (:mod:`.run`, :mod:`.batched`) use: evaluation, the learning-rate schedule and
the saved weights' format."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from ..records import torch_save


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, size: int, device, batch_size=128) -> float:
    """Top-1 accuracy (fraction) of ``model`` on uint8 images resized to ``size``."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        if x.shape[-1] != size:
            x = TF.resize(x, [size, size], antialias=True)
        x = x.float().div(127.5).sub(1.0).to(device, memory_format=torch.channels_last)
        correct += (model(x).argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / len(images)


def lr_at(progress: float, peak: float, warmup: float) -> float:
    """Linear warm-up to ``peak`` over the first ``warmup`` fraction, then cosine decay to zero."""
    if progress < warmup:
        return peak * progress / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))


def save_half(model, path: Path) -> None:
    """Float16 state dict (halves the committed file); BN counters stay integer."""
    torch_save({k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}, path)
