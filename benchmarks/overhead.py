"""Cost of excitation pullbacks against plain input gradients, printed as ratios, on a CPU or a GPU.

    python benchmarks/overhead.py [--device cpu|cuda] [--models resnet50 vgg11_bn ...] [--batch 8]
                                  [--dtypes fp32 bf16] [--repeats 5] [--skip memory] [--json out.json]

For each architecture and batch size (224 px), it times four ways of getting an input-space vector field,
interleaved in one process (warm-up rounds first, then the median over ``--repeats`` rounds):
- ``plain``: a hand-written autograd input gradient with frozen parameters (the yardstick);
- ``vanilla_gradient`` (ours);
- ``excitation_pullback`` (ours, default settings: ReLU and max-pool T = 0.3; on ``convnext_tiny`` and
  ``vit_b_16`` the GELU, LayerNorm and attention rules);
- ``module_swap``: the simple way, on ReLU networks only: a copy of the model whose ``nn.ReLU`` and ``nn.MaxPool2d``
  modules are swapped for straight-through soft versions (wrong for functional and reused ReLUs, which these
  torchvision models happen not to have; a baseline for speed only).
It also counts the aten operations each method dispatches (on a GPU, each one is a kernel launch).

``--device cuda`` synchronises the device around every timed call, also runs under bf16 autocast (``--dtypes``),
defaults to batches 64 and 1, and reports peak GPU memory above what was allocated before the call. Without
CUDA it says so and measures on the CPU. On the CPU, peak memory is the rise of the resident set size during the
call, sampled every half millisecond by a thread, each method in a fresh subprocess whose allocator returns
large blocks to the system at once (``MALLOC_MMAP_THRESHOLD_``).

The torchvision architectures run with random weights on random inputs (ImageNet weights cannot be downloaded
everywhere); ``bundled`` is the trained Imagenette model on val images of ``IMAGENETTE_ROOT`` (random inputs if it
is unset). Targets: ``benchmarks/README.md``, with the latest measurements.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
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
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from utils import excitation_pullback, softmax_pool2d, vanilla_gradient  # noqa: E402
from benchmarks.operations import count_operations  # noqa: E402
from utils.data.imagenette import data_root_from_env, first_per_class, load_image  # noqa: E402
from utils.models.zoo import bundled_model  # noqa: E402

METHODS = ("plain", "vanilla_gradient", "excitation_pullback", "module_swap")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
RELU_NETS = ("resnet50", "vgg11_bn", "densenet121", "bundled")


def plain(model, x, target):
    """The yardstick: frozen parameters (no weight gradients), flags put back after, so that the other methods meet
    the model as a user has it (parameters requiring grad)."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        x = x.detach().clone().requires_grad_()
        model(x)[:, target].sum().backward()
        return x.grad
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


class SwappedReLU(nn.Module):
    """``relu(x)`` forward; backward ``sigmoid(x / T)``, straight through."""

    def forward(self, x):
        soft = x * torch.sigmoid(x / 0.3).detach()
        return torch.relu(x).detach() + soft - soft.detach()


class SwappedMaxPool(nn.Module):
    """``max_pool2d`` forward; backward the softmax pool's at T = 0.3, straight through."""

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        p = self.pool
        soft = softmax_pool2d(x, p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode, temperature=0.3)
        return self.pool(x).detach() + soft - soft.detach()


def swapped(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its ReLU and MaxPool2d modules swapped (:class:`SwappedReLU`, :class:`SwappedMaxPool`)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, SwappedReLU())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, SwappedMaxPool(child))
    return model


def build(name: str, batch: int, size: int, device: torch.device):
    """``(model, inputs)`` on ``device``: a torchvision architecture with random weights on random inputs, or, for
    ``"bundled"``, the trained bundled model on Imagenette val images (if ``IMAGENETTE_ROOT`` is set)."""
    torch.manual_seed(0)
    if name != "bundled":
        model, x = torchvision.models.get_model(name, weights=None).eval(), torch.randn(batch, 3, size, size)
    else:
        root = data_root_from_env()
        model = bundled_model().eval()
        if root is None:
            x = torch.rand(batch, 3, size, size) * 2 - 1
        else:
            paths = first_per_class(root, classes=tuple(range(10)), per_class=-(-batch // 10))[:batch]
            x = torch.stack([load_image(p, size) for p in paths])
    return model.to(device), x.to(device)


def runners(name: str, model: nn.Module, methods=METHODS) -> dict:
    """Method name -> ``f(x)`` for each of ``methods``; ``module_swap`` only for the ReLU networks."""
    run = {"plain": lambda x: plain(model, x, 1), "vanilla_gradient": lambda x: vanilla_gradient(model, x, 1),
           "excitation_pullback": lambda x: excitation_pullback(model, x, 1)}
    if name in RELU_NETS and "module_swap" in methods:
        swap = swapped(model)
        run["module_swap"] = lambda x: plain(swap, x, 1)
    return {m: f for m, f in run.items() if m in methods}


def timed(fn, x, device: torch.device, dtype) -> float:
    """Seconds of one call, under autocast to ``dtype`` (None: none), the device synchronised before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        sync()
        start = time.perf_counter()
        fn(x)
        sync()
    return time.perf_counter() - start


def measure_time(run: dict, x, device, dtype, repeats: int, warmup: int = 2) -> dict[str, float]:
    times = {m: [] for m in run}
    for _ in range(warmup):
        for fn in run.values():
            timed(fn, x, device, dtype)
    for _ in range(repeats):
        for method, fn in run.items():
            times[method].append(timed(fn, x, device, dtype))
    return {m: statistics.median(t) for m, t in times.items()}


def gpu_peak_mib(fn, x, dtype) -> float:
    """Peak CUDA memory allocated during one call, above what was allocated before it (MiB)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext():
        fn(x)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


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


def cpu_peak_mib(name: str, method: str, batch: int, size: int) -> float:
    """Run in a fresh interpreter: peak RSS rise (MiB) of one call, after one warm-up call."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import overhead as o, torch;"
            f"m, x = o.build({name!r}, {batch}, {size}, torch.device('cpu'));"
            f"f = o.runners({name!r}, m, ({method!r},))[{method!r}];"
            f"f(x); print(o.peak_rise_mib(lambda: f(x)))")  # warm-up first: one-off buffers and caches
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def operations(fn, x) -> int:
    return sum(count_operations(fn, x)[1].values())


def measure(name: str, batch: int, dtype_name: str, args, device: torch.device) -> dict:
    """Seconds, peak MiB and operation counts of every method, for one model, batch and dtype."""
    model, x = build(name, batch, args.size, device)
    run, dtype = runners(name, model, args.methods), DTYPES[dtype_name]
    nan = {m: float("nan") for m in run}
    seconds = nan if args.skip == "time" else measure_time(run, x, device, dtype, args.repeats)
    if args.skip == "memory":
        mib = nan
    elif device.type == "cuda":
        mib = {m: gpu_peak_mib(fn, x, dtype) for m, fn in run.items()}
    else:
        mib = {m: cpu_peak_mib(name, m, batch, args.size) for m in run}
    with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        ops = {m: operations(fn, x) for m, fn in run.items()}
    return {"seconds": seconds, "peak_mib": mib, "operations": ops}


def report(name: str, batch: int, dtype: str, result: dict) -> None:
    s, mib, ops = result["seconds"], result["peak_mib"], result["operations"]
    print(f"\n{name}, batch {batch}, {dtype}")
    print(f"  {'method':<22}{'time (s)':>10}{'x plain':>9}{'peak MiB':>10}{'x plain':>9}{'ops':>7}{'x plain':>9}")
    for m in s:
        print(f"  {m:<22}{s[m]:>10.4f}{s[m] / s['plain']:>9.3f}{mib[m]:>10.0f}{mib[m] / mib['plain']:>9.3f}"
              f"{ops[m]:>7}{ops[m] / ops['plain']:>9.3f}")


def choose_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here: measuring on the CPU instead")
        return torch.device("cpu")
    return torch.device(name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--models", nargs="+",
                        default=["resnet50", "vgg11_bn", "densenet121", "convnext_tiny", "vit_b_16", "bundled"])
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: 8 on a CPU, 64 and 1 on a GPU)")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES),
                        help="fp32 and/or autocast dtypes (default: fp32 on a CPU, fp32 and bf16 on a GPU)")
    parser.add_argument("--methods", nargs="+", choices=METHODS,
                        help="default: all on a GPU; on a CPU all but module_swap, whose model copy, interleaved, "
                             "slowed the others' rounds unevenly (ResNet50's pullback ratio 1.17-1.20x beside it, "
                             "1.10x without)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--skip", choices=["time", "memory"], help="measure only the other one")
    args = parser.parse_args(argv)
    if args.batch is not None and min(args.batch) < 1:
        parser.error("--batch must be positive")
    device = choose_device(args.device)
    gpu = device.type == "cuda"
    args.methods = tuple(args.methods or (METHODS if gpu else [m for m in METHODS if m != "module_swap"]))
    if "plain" not in args.methods:
        parser.error("--methods must include plain, the yardstick")
    batches = args.batch or ([64, 1] if gpu else [8])
    dtypes = args.dtypes or (["fp32", "bf16"] if gpu else ["fp32"])
    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, {args.size}px, median of {args.repeats} interleaved rounds")
    results = {}
    for name in args.models:
        for batch in batches:
            for dtype in dtypes:
                result = measure(name, batch, dtype, args, device)
                results[f"{name}/batch{batch}/{dtype}"] = result
                report(name, batch, dtype, result)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": where, "torch": torch.__version__, "results": results},
                                              indent=2))
    return results


if __name__ == "__main__":
    main()
