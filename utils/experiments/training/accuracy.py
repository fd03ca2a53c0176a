"""Top-1 accuracy of zoo models on the full Imagenette val split (3,925 images), the number stated beside each.

    python -m utils.experiments.training.accuracy --data ../shared/data/imagenette2-224 \
        --models resnet50_imagenette densenet121_imagenette

Images resized (shorter side) and centre-cropped to ``--size`` (224), scaled to [-1, 1] and fed to the
model as they are (:func:`utils.models.zoo.load_model`), float32, in batches under ``torch.inference_mode``.
"""
from __future__ import annotations

import argparse
import time

import torch

from ...data.imagenette import decode_split, require_imagenette
from ...models.zoo import load_model


@torch.inference_mode()
def top1(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 50) -> float:
    """Fraction of uint8 ``images`` (N, 3, H, W) whose top logit is their label (N,), inputs in [-1, 1]."""
    correct = 0
    for start in range(0, len(images), batch):
        x = images[start:start + batch].float().div(127.5).sub(1.0).contiguous(memory_format=torch.channels_last)
        correct += (model(x).argmax(1) == labels[start:start + batch]).sum().item()
    return correct / len(images)


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="Imagenette root (default $IMAGENETTE_ROOT)")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    images, labels = decode_split(require_imagenette(args.data, "the accuracy check"), "val", size=args.size)
    found = {}
    for name in args.models:
        began = time.perf_counter()
        model = load_model(name, "cpu").to(memory_format=torch.channels_last)
        found[name] = top1(model, images, labels)
        print(f"{name}: {found[name]:.4f} top-1 ({round(found[name] * len(labels))} of {len(labels)} val images "
              f"at {args.size} px), {time.perf_counter() - began:.0f} s", flush=True)
    return found


if __name__ == "__main__":
    main()
