"""Against Zennit's ``BetaSmooth`` composite (Dombrowski et al., 2019: the ReLU's gradient replaced by
``sigmoid(beta z)``): on ReLU-only torchvision networks with hard max-pools, the excitation pullback at
temperature T is Zennit's gradient at ``beta = 1 / T``. Checked with Zennit 0.5.1, the newest release on PyPI
(there is no 1.0 there); its ``ReLUBetaSmooth`` is the rule these tests rely on.

Zennit's rule is a hook on each ``nn.ReLU`` module that stores the module's input in the forward pass and
reads it back in the backward pass. Two things torchvision's networks do break that, so Zennit alone differs
from the pullback on them (pinned below), and the comparison runs on a copy rewritten so that its hooks see
each call's true pre-activation:

* in-place ReLUs (``nn.ReLU(inplace=True)``, as in VGG and ResNet): the stored input is overwritten by the
  output, so Zennit gates with ``sigmoid(beta relu(z))`` (1/2 wherever z < 0);
* a ReLU module called twice (ResNet's ``BasicBlock.relu``, after ``bn1`` and after the residual sum): the
  second call's stored input replaces the first's, which the first call's backward then reads.

Our interception gates every call by its own pre-activation, so the rewrite does not change the pullback
(tested). BetaSmooth treats ReLUs only, so the pullback's soft max-pool is turned off (``pool_temperature=None``:
the hard max's own gradient, which Zennit leaves alone too).
"""
import copy
import types

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from conftest import randomize_batchnorm
from utils import excitation_pullback

zennit_composites = pytest.importorskip("zennit.composites")

T = 0.3


def zennit_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """The input gradient of the target logits under Zennit's BetaSmooth composite."""
    x = x.clone().requires_grad_(True)
    with zennit_composites.BetaSmooth(beta_smooth=beta).context(model) as modified:
        logits = modified(x)
        (grad,) = torch.autograd.grad(logits[torch.arange(len(x)), target].sum(), x)
    return grad


def _block_forward(self, x):
    """torchvision's BasicBlock.forward with the second ReLU call on a module of its own."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return self.relu_after_sum(out + identity)


def one_module_per_relu_call(model: nn.Module) -> nn.Module:
    """A copy whose ReLUs are not in place and whose ResNet blocks call each ReLU module once."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
        if isinstance(module, BasicBlock):
            module.relu_after_sum = nn.ReLU()
            module.forward = types.MethodType(_block_forward, module)
    return model


def network(name: str) -> nn.Module:
    """Random weights (float64, eval mode), random BatchNorm statistics where there is BatchNorm."""
    torch.manual_seed(0)
    return randomize_batchnorm(torchvision.models.get_model(name, weights=None, num_classes=10)).double().eval()


@pytest.fixture(scope="module", params=["vgg11", "resnet18"])
def case(request):
    """A ReLU-only torchvision network at 32 px, two images in [-1, 1], one target each, and our pullback."""
    model = network(request.param)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 - 1
    target = torch.tensor([3, 7])
    ours = excitation_pullback(model, x, target, temperature=T, pool_temperature=None)
    return model, x, target, ours


def test_the_pullback_equals_zennit_betasmooth_at_beta_one_over_t(case):
    model, x, target, ours = case
    theirs = zennit_gradient(one_module_per_relu_call(model), x, target, 1 / T)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12 * ours.abs().max().item())
    # ... and not the plain gradient: the comparison sees the gates.
    hard = zennit_gradient(one_module_per_relu_call(model), x, target, 1e6)
    assert (ours - hard).abs().max() > 1e-3 * ours.abs().max()


def test_the_rewrite_changes_our_pullback_not_at_all(case):
    model, x, target, ours = case
    again = excitation_pullback(one_module_per_relu_call(model), x, target, temperature=T, pool_temperature=None)
    assert torch.equal(ours, again)


def test_zennit_differs_on_torchvisions_own_modules(case):
    """Where they differ: Zennit's hooks on in-place (and, in ResNet, reused) ReLU modules read the wrong
    input. Should a Zennit release fix this, this test fails: then say so in the README."""
    model, x, target, ours = case
    theirs = zennit_gradient(model, x, target, 1 / T)
    assert (ours - theirs).abs().max() > 0.1 * ours.abs().max()
