"""Train the bundled Imagenette model (or another architecture of :mod:`utils.models.nets`) from scratch on
CPU, or CUDA when present.

    python -m utils.experiments.training --data ../shared/data/imagenette2-224

The default run (``--arch poolresnet --seed 0``) reproduces ``utils/models/weights/bundled_imagenette.pt``
and its per-epoch log ``bundled_imagenette_log.csv`` as ``data/weights/bundled_imagenette.pt`` (``--out``;
outside git, so a run never overwrites the committed, hash-checked files); other runs write
``<arch>_seed<seed>_imagenette.pt`` and ``..._log.csv``. ``--arch resnet50`` and ``--arch densenet121`` train by
the batched device recipe of :mod:`.batched`. Progressive resizing (low
resolution first, 224px at the end) keeps the run within two hours on two CPU cores while the final epochs
are trained at the resolution the figures use. Checkpoints (:mod:`.checkpoints`) go to
``data/checkpoints/seed<seed>/`` (``<arch>_seed<seed>/`` for other architectures; outside git) every epoch and every quarter over the first two epochs: the
path-stability study reads them. ``--resume`` continues an interrupted run from its last whole-epoch
checkpoint, bit for bit.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from ...data.imagenette import decode_split
from ...models.nets import ARCHITECTURES
from ...models.zoo import trained_stem
from ...paths import DATA
from ..records import write_csv
from . import batched
from .checkpoints import default_folder, last_whole_epoch, save_checkpoint
from .shared import evaluate, lr_at, save_half

# Training resolution of each epoch; the last ones at the 224px the figures use.
RESOLUTIONS = (112,) * 6 + (128,) * 6 + (160,) * 2 + (224,) * 2
EARLY_FRACTIONS = (0.25, 0.5, 0.75)  # extra checkpoints within each of the first two epochs


def random_resized_crop(images: torch.Tensor, size: int, generator: torch.Generator,
                        scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Inception-style crop + resize + horizontal flip of a uint8 batch -> float [-1, 1] (N, 3, size, size)."""
    n, _, h, w = images.shape
    area = h * w
    out = torch.empty(n, 3, size, size)
    u = torch.rand(n, 5, generator=generator)
    for i in range(n):
        target = area * (scale[0] + (scale[1] - scale[0]) * u[i, 0])
        aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[i, 1])
        cw = min(w, int(round(math.sqrt(target * aspect))))
        ch = min(h, int(round(math.sqrt(target / aspect))))
        top = int((h - ch) * u[i, 2])
        left = int((w - cw) * u[i, 3])
        crop = TF.resized_crop(images[i], top, left, ch, cw, [size, size], antialias=True)
        if u[i, 4] < 0.5:
            crop = crop.flip(-1)
        out[i] = crop.float()
    return out.div_(127.5).sub_(1.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Imagenette root with train/ and val/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="poolresnet",
                        help="resnet50 and densenet121 train by their own recipe: see --arch resnet50 --help")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--resolutions", type=int, nargs="+", default=list(RESOLUTIONS),
                        help="training resolution of each epoch (their count is the epoch count)")
    parser.add_argument("--checkpoints", default=None, help="checkpoint folder (default data/checkpoints/seed<seed>)")
    parser.add_argument("--out", default=str(DATA / "weights"), help="where the final weights and log go")
    parser.add_argument("--limit", type=int, default=None, help="use only this many train/val images (smoke runs)")
    parser.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    parser.add_argument("--threads", type=int, default=None)
    return parser


def _data(args):
    train_x, train_y = decode_split(args.data, "train")
    val_x, val_y = decode_split(args.data, "val")
    if args.limit:
        train_x, train_y, val_x, val_y = train_x[:args.limit], train_y[:args.limit], val_x[:args.limit], val_y[:args.limit]
    return train_x, train_y, val_x, val_y


def _model_and_optimizer(args, device):
    torch.manual_seed(args.seed)
    model = ARCHITECTURES[args.arch]().to(device, memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=args.lr, momentum=0.9, nesterov=True)
    return model, optimizer


def _resume(ckpt_dir: Path, model, optimizer, device) -> tuple[list[dict], int]:
    """Load the last whole-epoch checkpoint into model and optimizer: (log rows so far, epochs done)."""
    last = last_whole_epoch(ckpt_dir)
    if last is None:
        return [], 0
    state = torch.load(last, map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    print(f"resumed from {last} (epoch {int(state['epoch'])})")
    return state["log"], int(state["epoch"])  # saved as a float (epoch_01.00.pt)


def _train_epoch(args, epoch: int, model, optimizer, train_x, train_y, device, save) -> tuple[float, float]:
    """One epoch of SGD at ``args.resolutions[epoch]``, with the early checkpoints; (mean loss, accuracy)."""
    epochs, size = len(args.resolutions), args.resolutions[epoch]
    steps_per_epoch = len(train_x) // args.batch_size
    generator = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    order = torch.randperm(len(train_x), generator=generator)
    model.train()
    seen, loss_sum, correct = 0, 0.0, 0
    marks = {int(f * steps_per_epoch): epoch + f for f in EARLY_FRACTIONS} if epoch < 2 else {}
    bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs} @{size}px")
    for step in bar:
        if step in marks:
            save(marks[step])
        lr = lr_at((epoch * steps_per_epoch + step) / (epochs * steps_per_epoch), args.lr, warmup=2 / epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = order[step * args.batch_size:(step + 1) * args.batch_size]
        x = random_resized_crop(train_x[idx], size, generator).to(device, memory_format=torch.channels_last)
        y = train_y[idx].to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.3f}")
    return loss_sum / seen, correct / seen


def main(argv=None):
    arch = argparse.ArgumentParser(add_help=False)
    arch.add_argument("--arch")
    if arch.parse_known_args(argv)[0].arch in ("resnet50", "densenet121"):  # the paper's: the batched device recipe
        return batched.main(argv)
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ckpt_dir = Path(args.checkpoints or default_folder(args.arch, args.seed))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_x, train_y, val_x, val_y = _data(args)
    model, optimizer = _model_and_optimizer(args, device)
    rows, start_epoch = _resume(ckpt_dir, model, optimizer, device) if args.resume else ([], 0)

    def save(epoch_value: float, **extra):
        save_checkpoint(ckpt_dir, model, epoch_value, args.seed, **extra)

    if start_epoch == 0:
        save(0.0)
    name = trained_stem(args.arch, args.seed)
    t_start = time.time() - (rows[-1]["elapsed_s"] if rows else 0.0)
    for epoch in range(start_epoch, len(args.resolutions)):
        size = args.resolutions[epoch]
        loss, accuracy = _train_epoch(args, epoch, model, optimizer, train_x, train_y, device, save)
        val_acc = evaluate(model, val_x, val_y, size, device)
        row = {"epoch": epoch + 1, "resolution": size, "train_loss": round(loss, 4), "train_acc": round(accuracy, 4),
               "val_acc": round(val_acc, 4), "val_resolution": size, "elapsed_s": round(time.time() - t_start, 1)}
        rows.append(row)
        print(row, flush=True)
        save(float(epoch + 1), optimizer=optimizer.state_dict(), log=rows)
        write_csv(out / f"{name}_log.csv", rows)
    save_half(model, out / f"{name}.pt")
    print(f"final val accuracy at {args.resolutions[-1]}px: {rows[-1]['val_acc']:.4f}; weights in {out}")
