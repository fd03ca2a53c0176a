"""Training checkpoints on disk: ``<folder>/epoch_XX.XX.pt`` holding ``{"model": state_dict, "epoch": float,
"seed": int}``, plus ``"optimizer"`` and ``"log"`` (the per-epoch rows so far) at whole epochs."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ...models.nets import ARCHITECTURES
from ...models.zoo import load_float32
from ...paths import CHECKPOINTS
from ..records import torch_save

_NAME = re.compile(r"epoch_(\d+(?:\.\d+)?)\.pt")


def default_folder(arch: str, seed: int) -> Path:
    """Where a run keeps its checkpoints unless told otherwise: ``data/checkpoints/seed<seed>`` for the
    bundled architecture (the path-stability study reads these), ``<arch>_seed<seed>`` for any other, so two
    architectures trained with one seed never share (and mix) a folder."""
    return CHECKPOINTS / (f"seed{seed}" if arch == "poolresnet" else f"{arch}_seed{seed}")


def epoch_tag(epoch: float) -> str:
    """``01.25`` for epoch 1.25: tags sort in epoch order up to epoch 99.99."""
    return f"{epoch:05.2f}"


def checkpoint_name(epoch: float) -> str:
    """``epoch_01.25.pt`` for epoch 1.25."""
    return f"epoch_{epoch_tag(epoch)}.pt"


def checkpoint_epoch(path) -> float | None:
    """The epoch a checkpoint file name stands for, or None for any other file."""
    match = _NAME.fullmatch(Path(path).name)
    return float(match.group(1)) if match else None


def list_checkpoints(folder) -> list[tuple[float, Path]]:
    """``(epoch, path)`` of every ``epoch_XX.XX.pt`` in ``folder``, sorted by epoch."""
    found = [(epoch, p) for p in Path(folder).iterdir() if (epoch := checkpoint_epoch(p)) is not None]
    return sorted(found)


def last_whole_epoch(folder) -> Path | None:
    """The checkpoint of the last finished epoch (a whole epoch > 0: these hold the optimizer), or None."""
    done = [p for epoch, p in list_checkpoints(folder) if epoch.is_integer() and epoch > 0]
    return done[-1] if done else None


def save_checkpoint(folder, model: nn.Module, epoch: float, seed: int, **extra) -> Path:
    """Write ``folder/epoch_XX.XX.pt`` atomically: readers (the study, a resumed run) never see half a file."""
    record = {"model": model.state_dict(), "epoch": epoch, "seed": seed, **extra}
    return torch_save(record, Path(folder) / checkpoint_name(epoch))


def load_checkpoint(path, num_classes: int = 10, arch: str = "poolresnet") -> nn.Module:
    """A network of ``arch`` (float32, CPU, eval mode) from a training checkpoint ``{"model": state_dict, ...}``
    or from a bare state dict (e.g. the float16 bundled weights)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    model = ARCHITECTURES[arch](num_classes=num_classes)
    load_float32(model, state)
    return model.eval()
