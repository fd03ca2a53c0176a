"""Cost of excitation pullbacks against plain input gradients, printed as ratios.

    python benchmarks/overhead.py [--models resnet50 vgg11_bn densenet121 convnext_tiny vit_b_16 bundled]
                                  [--batch 8] [--repeats 5] [--skip memory]

For each architecture, batch 8 at 224x224, it times three ways of getting an input-space vector
field, interleaved in one process:
- ``plain``: a hand-written autograd input gradient with frozen parameters (the yardstick);
- ``vanilla_gradient`` (ours);
- ``excitation_pullback`` (ours, default settings: ReLU and max-pool T = 0.3; on ``convnext_tiny`` and
  ``vit_b_16`` the GELU, LayerNorm and attention rules).
The torchvision architectures run with random weights on random inputs (ImageNet weights cannot be
downloaded everywhere). Values matter to the CPU only through slow floating-point paths (subnormal
numbers, overflowing exponentials), which the surrogates steer clear of; ``bundled`` checks this on a
trained network and real images: the bundled Imagenette model on val images of ``IMAGENETTE_ROOT``
(the first of each class met by the paper's seeded loader; random inputs if it is unset).
Peak memory is the rise of the resident set size during the call over the resident size just
before it, sampled every half millisecond by a thread, each method in a fresh subprocess whose
allocator returns large blocks to the system at once (``MALLOC_MMAP_THRESHOLD_``), so that
resident size follows live tensors. (The kernel's own peak-RSS counter is useless here: importing
torch's libraries sets a higher mark than any call.) Targets: time <= 1.15x (ResNet50) and <= 1.25x
(VGG11_BN, DenseNet121) of ``plain``; the latest measurements are in ``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from utils import excitation_pullback, vanilla_gradient  # noqa: E402
from utils.data.imagenette import data_root_from_env, first_per_class, load_image  # noqa: E402
from utils.models.zoo import bundled_model  # noqa: E402

METHODS = ("plain", "vanilla_gradient", "excitation_pullback")


def plain(model, x, target):
    for p in model.parameters():
        p.requires_grad_(False)
    x = x.detach().clone().requires_grad_()
    model(x)[:, target].sum().backward()
    return x.grad


RUN = {"plain": plain, "vanilla_gradient": vanilla_gradient, "excitation_pullback": excitation_pullback}


def build(name: str, batch: int, size: int):
    """``(model, inputs)``: a torchvision architecture with random weights on random inputs, or, for
    ``"bundled"``, the trained bundled model on Imagenette val images (if ``IMAGENETTE_ROOT`` is set)."""
    torch.manual_seed(0)
    if name != "bundled":
        return torchvision.models.get_model(name, weights=None).eval(), torch.randn(batch, 3, size, size)
    root = data_root_from_env()
    if root is None:
        return bundled_model().eval(), torch.rand(batch, 3, size, size) * 2 - 1
    paths = first_per_class(root, classes=tuple(range(10)), per_class=-(-batch // 10))[:batch]
    return bundled_model().eval(), torch.stack([load_image(p, size) for p in paths])


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def peak_rise_mib(fn) -> float:
    """Run ``fn()``; return the peak resident size during it minus the resident size before (MiB)."""
    base, peak, done = rss_mib(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], rss_mib()) - base


def measure_memory(name: str, method: str, batch: int, size: int) -> float:
    """Run in a fresh interpreter: peak RSS rise (MiB) of one call, after one warm-up call."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import overhead as o, torch;"
            f"m, x = o.build({name!r}, {batch}, {size});"
            f"o.RUN[{method!r}](m, x, 1);"  # warm-up: one-off buffers and caches
            f"print(o.peak_rise_mib(lambda: o.RUN[{method!r}](m, x, 1)))")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def measure_time(name: str, batch: int, size: int, repeats: int) -> dict[str, float]:
    model, x = build(name, batch, size)
    times = {m: [] for m in METHODS}
    for method in METHODS:  # warm-up
        RUN[method](model, x, 1)
    for _ in range(repeats):
        for method in METHODS:
            start = time.perf_counter()
            RUN[method](model, x, 1)
            times[method].append(time.perf_counter() - start)
    return {m: statistics.median(t) for m, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+",
                        default=["resnet50", "vgg11_bn", "densenet121", "convnext_tiny", "vit_b_16", "bundled"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--skip", choices=["time", "memory"], help="measure only the other one")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.size}px")
    results = {}
    for name in args.models:
        nan = {m: float("nan") for m in METHODS}
        seconds = nan if args.skip == "time" else measure_time(name, args.batch, args.size, args.repeats)
        mib = nan if args.skip == "memory" else {m: measure_memory(name, m, args.batch, args.size) for m in METHODS}
        results[name] = {"seconds": seconds, "peak_mib": mib}
        print(f"\n{name}")
        print(f"  {'method':<22}{'time (s)':>10}{'x plain':>9}{'peak MiB':>10}{'x plain':>9}")
        for m in METHODS:
            print(f"  {m:<22}{seconds[m]:>10.3f}{seconds[m] / seconds['plain']:>9.3f}"
                  f"{mib[m]:>10.0f}{mib[m] / mib['plain']:>9.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
