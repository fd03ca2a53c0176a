"""The overhead benchmark: it compares like with like, and runs where there is no GPU."""
import importlib.util
import math
from pathlib import Path

import torch
import torchvision

from utils import excitation_pullback

from conftest import randomize_batchnorm

_spec = importlib.util.spec_from_file_location("overhead", Path(__file__).parent.parent / "benchmarks" / "overhead.py")
overhead = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(overhead)


def test_module_swap_baseline_computes_the_pullback():
    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.vgg11_bn(num_classes=10).eval())
    x = torch.randn(2, 3, 32, 32)
    swapped = overhead.runners("vgg11_bn", model)["module_swap"](x)
    torch.testing.assert_close(swapped, excitation_pullback(model, x, 1), rtol=1e-4, atol=1e-6)


def test_cuda_benchmark_falls_back_to_the_cpu_and_reports_every_method(capsys):
    results = overhead.main(["--device", "cuda", "--models", "vgg11_bn", "--size", "32", "--batch", "2",
                             "--repeats", "1", "--skip", "memory", "--methods", *overhead.METHODS])
    out = capsys.readouterr().out
    if not torch.cuda.is_available():
        assert "measuring on the CPU instead" in out
    (result,) = results.values()
    assert set(result["seconds"]) == set(overhead.METHODS)
    assert all(s > 0 for s in result["seconds"].values()) and all(math.isnan(m) for m in result["peak_mib"].values())
    ops = result["operations"]
    assert ops["vanilla_gradient"] >= ops["plain"] and ops["excitation_pullback"] > ops["plain"]
