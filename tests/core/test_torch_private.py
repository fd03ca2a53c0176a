"""Torch's private names live in one module; on a torch without one, the core takes a plain path or says so."""
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils import excitation_pullback, soft_backward
from utils.core import torch_private
from benchmarks.operations import count_operations

CORE = Path(torch_private.__file__).parent
PRIVATE = re.compile(r"torch\._C|torch\._dynamo|_CheckpointFrame|_python_dispatch|_assert_async|"
                     r"_get_current_function_mode_stack|_native_batch_norm|modules\.utils import _pair|"
                     r"_top_saved_tensors|_current_graph_task_id|_pytree|modules\.[a-z]+\._[A-Z]")


def test_private_names_appear_in_one_module_only():
    found = {str(p.relative_to(CORE)) for p in CORE.rglob("*.py") if PRIVATE.search(p.read_text())}
    assert found == {"torch_private.py"}


def test_an_old_torch_is_named():
    with pytest.raises(ImportError, match=r"needs torch >= 2\.8, found 2\.7\.1"):
        torch_private.check_version("2.7.1")
    torch_private.check_version("2.15.0+cu126")
    torch_private.check_version(torch.__version__)


def test_the_oldest_torch_is_the_one_requirements_and_the_recorded_runs_name():
    from utils.paths import REPO

    pins = (REPO / "requirements.txt").read_text()
    assert f"torch>={OLDEST_TEXT}" in pins.replace(" ", "")
    recorded = (REPO / "tests" / "core" / "torch-versions.csv").read_text()
    assert f"\n{OLDEST_TEXT}." in recorded or recorded.startswith(f"{OLDEST_TEXT}.")


OLDEST_TEXT = ".".join(map(str, torch_private.OLDEST))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Linear(3, 2)
        self.bn.running_mean.uniform_(-0.5, 0.5)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)) + x, inplace=True)
        return self.fc(F.max_pool2d(y, 2).amax((2, 3)))


@pytest.mark.parametrize("name", sorted(torch_private._NAMES))
def test_each_missing_name_takes_a_plain_path_or_says_so(monkeypatch, name):
    model, x = Residual().double().eval(), torch.randn(2, 3, 6, 6, dtype=torch.float64)
    expected = excitation_pullback(model, x, 1)
    monkeypatch.setitem(torch_private._found, name, None)
    if name == "TorchDispatchMode":
        with pytest.raises(RuntimeError, match="TorchDispatchMode"):
            count_operations(excitation_pullback, model, x, 1)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (a missing part may be said once)
        torch.testing.assert_close(excitation_pullback(model, x, 1), expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(excitation_pullback(model, x, torch.tensor([1, 0])),
                                   excitation_pullback(model, x, [1, 0]))
        with soft_backward(model):
            leaf = x.clone().requires_grad_()
            model(leaf)[:, 1].sum().backward()
        torch.testing.assert_close(leaf.grad, expected, rtol=1e-12, atol=1e-14)
