"""Train the paper's torchvision architectures (ResNet50, DenseNet121) on Imagenette, the whole batch on the device.

    python -m utils.experiments.training --data ../shared/data/imagenette2-224 --arch resnet50     # 80 epochs
    python -m utils.experiments.training --data ../shared/data/imagenette2-224 --arch densenet121  # 33 epochs

The recipe of ``utils/models/weights/resnet50_imagenette.pt`` and ``densenet121_imagenette.pt`` (trained on one
GPU in about 95 s each): the training images resized to ``--size`` (160 px) and re-encoded once as WebP
(quality 80), held on the device as uint8; each step draws ``--batch-size`` (256) images uniformly with
replacement (``len(train) // batch`` steps make an epoch) and crops them all at once on the device
(:func:`random_resized_crops`: area 35-100%, aspect 3/4-4/3, bilinear, horizontal flip with probability 1/2).
Crop size by epoch: 80% of ``--size`` for the first 60% of epochs, 90% to 85%, then the full size. SGD
with Nesterov momentum 0.9, peak learning rate 0.25, linear warm-up over the first 6% of steps then cosine
decay to 0, weight decay 5e-4 on weights only, label smoothing 0.1, bf16 autocast (CUDA), channels_last.
``--time-budget`` ends the run when either the epochs or the seconds are spent, the schedule following
whichever is further along. Evaluation at the end: val at 224 px, inputs in [-1, 1] as they are.
On a CPU it runs too (slowly; ``--limit`` for smoke runs). Writes ``<stem>.pt`` (float16 state dict, the
zoo's format) and ``<stem>_log.csv`` into ``--out``.
"""
from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...data.imagenette import decode_split
from ...models.nets import ARCHITECTURES
from ...models.zoo import trained_stem
from ...paths import DATA
from ..records import write_csv
from .shared import evaluate, lr_at, save_half

BATCHED = {"resnet50": 80, "densenet121": 33}  # architecture -> epochs of the committed weights
CROP_SCHEDULE = ((0.6, 0.8), (0.85, 0.9), (1.0, 1.0))  # (until this fraction of epochs, crop size / --size)


def random_resized_crops(images: torch.Tensor, size: int, generator: torch.Generator,
                         scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Random-resized crops with random horizontal flips of a uint8 batch (N, 3, H, W), all in one
    ``grid_sample`` on its device -> float images in [-1, 1] (N, 3, size, size).

    Each crop covers a fraction of the area drawn from ``scale`` with aspect (width / height) drawn
    log-uniformly from ``ratio`` (sides clipped to the image), at a uniform position; bilinear sampling,
    reflection at the border. ``generator`` lives on the images' device.
    """
    n, device = len(images), images.device
    u = torch.rand(n, 5, generator=generator, device=device)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)  # fractions of the sides
    # affine_grid maps output coordinates in [-1, 1] to input ones: scale by the crop's side, shift to its centre.
    cx, cy = (1 - width) * (2 * u[:, 2] - 1), (1 - height) * (2 * u[:, 3] - 1)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width * flip, cx, height, cy
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    crops = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return crops.div_(127.5).sub_(1.0)


def webp_roundtrip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each uint8 image (N, 3, H, W) encoded as WebP at ``quality`` and decoded again (the stored training set)."""
    out = torch.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="WEBP", quality=quality)
        out[i] = torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).permute(2, 0, 1)
    return out


def crop_size(progress: float, size: int) -> int:
    """Training crop size at ``progress`` (fraction of the run, epochs): :data:`CROP_SCHEDULE`, even pixels."""
    fraction = next(f for until, f in CROP_SCHEDULE if progress < until or until == 1.0)
    return 2 * round(size * fraction / 2)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="Imagenette root with train/ and val/")
    p.add_argument("--arch", choices=sorted(BATCHED), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: that of the committed weights (80 / 33)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds of training at most")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.25, help="peak SGD learning rate")
    p.add_argument("--warmup", type=float, default=0.06, help="fraction of the run spent warming up")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--size", type=int, default=160, help="side of the stored training images (px)")
    p.add_argument("--webp-quality", type=int, default=80, help="0 keeps the decoded images as they are")
    p.add_argument("--val-size", type=int, default=224)
    p.add_argument("--out", default=str(DATA / "weights"), help="where the weights and log go")
    p.add_argument("--limit", type=int, default=None, help="use only this many train/val images (smoke runs)")
    p.add_argument("--threads", type=int, default=None)
    return p


def _setup(args, device):
    torch.manual_seed(args.seed)
    model = ARCHITECTURES[args.arch](num_classes=10).to(device, memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]  # no decay on BatchNorm parameters and biases
    rest = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=args.lr, momentum=0.9, nesterov=True)
    return model, optimizer


def train(args, model, optimizer, images: torch.Tensor, labels: torch.Tensor, device) -> list[dict]:
    """The SGD run on uint8 ``images`` (N, 3, size, size) held on ``device``; one log row per epoch (``val_*``
    left empty for :func:`main` to fill in the last)."""
    epochs = args.epochs or BATCHED[args.arch]
    steps_per_epoch = max(1, len(images) // args.batch_size)
    total = epochs * steps_per_epoch
    generator = torch.Generator(device).manual_seed(args.seed)
    rows, began, step = [], time.perf_counter(), 0

    def progress() -> float:  # fraction of the run done: steps, or seconds when a time budget is further along
        seconds = (time.perf_counter() - began) / args.time_budget if args.time_budget else 0.0
        return max(step / total, seconds)

    model.train()
    while progress() < 1:
        epoch, size, losses = step // steps_per_epoch, crop_size(progress(), args.size), []
        while len(losses) < steps_per_epoch and progress() < 1:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(progress(), args.lr, args.warmup)
            pick = torch.randint(len(images), (args.batch_size,), generator=generator, device=device)
            x = random_resized_crops(images[pick], size, generator).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x), labels[pick], label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        if not losses:  # the time budget ran out between the two checks
            break
        rows.append({"epoch": epoch + 1, "crop": size, "train_loss": round(sum(losses) / len(losses), 4),
                     "elapsed_s": round(time.perf_counter() - began, 1), "val_acc": "", "val_resolution": ""})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> Path:
    """Train, evaluate and save; returns the path of the weights written."""
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images, labels = decode_split(args.data, "train", size=args.size)
    val_x, val_y = decode_split(args.data, "val", size=args.val_size)
    if args.limit:
        images, labels, val_x, val_y = images[:args.limit], labels[:args.limit], val_x[:args.limit], val_y[:args.limit]
    if args.webp_quality:
        images = webp_roundtrip(images, args.webp_quality)
    model, optimizer = _setup(args, device)
    rows = train(args, model, optimizer, images.to(device), labels.to(device), device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        accuracy = evaluate(model, val_x, val_y, args.val_size, device)
    rows[-1].update(val_acc=round(accuracy, 4), val_resolution=args.val_size)
    out, stem = Path(args.out), trained_stem(args.arch, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{stem}_log.csv", rows)
    save_half(model, out / f"{stem}.pt")
    print(f"val accuracy at {args.val_size}px: {accuracy:.4f} ({len(val_y)} images); weights in {out / stem}.pt")
    return out / f"{stem}.pt"
