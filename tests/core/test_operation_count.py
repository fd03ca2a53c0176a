"""Operation counts: on a GPU every aten operation is a kernel launch, so the pullback's cost there is its count.

Under the policy a CUDA device gets (:func:`utils.core.policy.use_policy`, selectable on a CPU), one excitation
pullback dispatches the same number of operations whatever the batch, channels or image size, and not many more
than a plain input gradient.
"""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from benchmarks.operations import count_operations
from utils import excitation_pullback, vanilla_gradient
from utils.core.policy import use_policy

from conftest import randomize_batchnorm

LIMITS = {"resnet50": 1.4, "densenet121": 1.3, "vgg11_bn": 2.0}
"""Most operations of one pullback per operation of one vanilla gradient, under the GPU policy."""


def pullback_count(model, x, policy="cuda", **settings) -> int:
    with use_policy(policy):
        _, counts = count_operations(excitation_pullback, model, x, 1, **settings)
    return sum(counts.values())


def gradient_count(model, x) -> int:
    return sum(count_operations(vanilla_gradient, model, x, 1)[1].values())


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_operation_count_of_paper_models_is_fixed_and_close_to_a_gradient(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    randomize_batchnorm(model)
    one, many = torch.randn(1, 3, 32, 32), torch.randn(32, 3, 32, 32)
    pullback, gradient = pullback_count(model, one), gradient_count(model, one)
    assert pullback_count(model, many) == pullback, "the count must not grow with the batch"
    assert gradient_count(model, many) == gradient
    print(f"{name}: pullback {pullback} operations, gradient {gradient}, ratio {pullback / gradient:.2f}")
    assert pullback <= LIMITS[name] * gradient
    # the counted pullback is a pullback, not the gradient
    assert not torch.allclose(excitation_pullback(model, one, 1), vanilla_gradient(model, one, 1))


class Tokens(nn.Module):
    """Applies a token layer (N, L, C) to an image (N, C, H, W): attention or a layer norm over channels."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        y = self.layer(t, t, t, need_weights=False)[0] if isinstance(self.layer, nn.MultiheadAttention) \
            else self.layer(t)
        return y.transpose(1, 2).reshape(x.shape)


class Sdpa(nn.Module):
    def forward(self, x):
        t = x.flatten(2).transpose(1, 2).unflatten(-1, (2, -1)).transpose(1, 2)  # (N, heads, L, C / heads)
        return F.scaled_dot_product_attention(t, t, t).transpose(1, 2).flatten(2).transpose(1, 2).reshape(x.shape)


class AfterBatchNorm(nn.Module):
    """A ReLU after an inference-mode batch norm plus a residual addend: the gate recomputed, not saved."""

    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(self.bn(x) + x, inplace=True)


LAYERS = {
    "relu": lambda c: nn.ReLU(),
    "relu_after_batch_norm": AfterBatchNorm,
    "relu_normal_cdf_gate": lambda c: nn.ReLU(),
    "max_pool_padded": lambda c: nn.MaxPool2d(3, 2, 1),
    "max_pool_tiles": lambda c: nn.MaxPool2d(2),
    "max_pool_ceil": lambda c: nn.MaxPool2d(3, 2, ceil_mode=True),
    "adaptive_max_pool": lambda c: nn.AdaptiveMaxPool2d(2),
    "silu": lambda c: nn.SiLU(),
    "gelu": lambda c: nn.GELU(),
    "leaky_relu": lambda c: nn.LeakyReLU(0.1),
    "relu6": lambda c: nn.ReLU6(),
    "hardswish": lambda c: nn.Hardswish(),
    "layer_norm": lambda c: Tokens(nn.LayerNorm(c)),
    "multi_head_attention": lambda c: Tokens(nn.MultiheadAttention(c, 2, batch_first=True)),
    "scaled_dot_product_attention": lambda c: Sdpa(),
}


def one_rule(name: str, channels: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), LAYERS[name](channels), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(channels, 5)).eval()
    randomize_batchnorm(model)
    return model


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_operation_count_of_each_rule_is_independent_of_batch_channels_and_size(name):
    settings = dict(gate="normal_cdf") if name == "relu_normal_cdf_gate" else {}
    small, large = one_rule(name, 4), one_rule(name, 8)
    x_small, x_large = torch.randn(2, 3, 8, 8), torch.randn(6, 3, 16, 16)
    # what the rules add to the gradient's operations (autograd itself may handle views of other shapes otherwise)
    added_small = pullback_count(small, x_small, **settings) - gradient_count(small, x_small)
    assert pullback_count(large, x_large, **settings) - gradient_count(large, x_large) == added_small
    # the rule is in force: the field differs from the gradient
    assert not torch.allclose(excitation_pullback(large, x_large, 1, **settings), vanilla_gradient(large, x_large, 1))


def test_gpu_policy_gives_the_cpu_policy_field():
    """The policies differ only in how the work is split and in tiny weights (< 1e-19) flushed on the CPU."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    randomize_batchnorm(model)
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    model.double()
    fields = {}
    for policy in ("cpu", "cuda"):
        with use_policy(policy):
            fields[policy] = excitation_pullback(model, x, 1)
    torch.testing.assert_close(fields["cuda"], fields["cpu"], rtol=1e-9, atol=1e-12 * fields["cpu"].abs().max().item())


def test_use_policy_refuses_unknown_names():
    with pytest.raises(ValueError, match="policy must be one of"):
        with use_policy("tpu"):
            pass


def test_autocast_adds_no_conversions_and_keeps_the_field():
    """Under bf16 autocast the rules compute in the dtype their inputs arrive in: no casts beyond the gradient's."""
    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.resnet18(num_classes=10).eval())
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gradient = count_operations(vanilla_gradient, model, x, 1)[1]
        with use_policy("cuda"):
            field, pullback = count_operations(excitation_pullback, model, x, 1)
    assert pullback["aten._to_copy"] <= gradient["aten._to_copy"]
    assert sum(pullback.values()) - sum(gradient.values()) <= pullback_count(model, x) - gradient_count(model, x)
    reference = excitation_pullback(model, x, 1)
    assert field.dtype == x.dtype
    assert F.cosine_similarity(field.flatten(), reference.flatten(), dim=0) > 0.98


READS = {"aten._local_scalar_dense", "aten.is_nonzero", "aten.item"}
"""Operations that read a tensor's value on the host: on a GPU, each waits for all work queued before it."""


@pytest.mark.parametrize("target", [1, [1, 3], torch.tensor([2, 0])])
def test_no_value_is_read_on_the_host_once_the_forward_pass_starts(target):
    model = one_rule("relu_after_batch_norm", 4)
    model[1] = nn.Sequential(model[1], nn.MaxPool2d(3, 2, 1), nn.GELU())
    order = []

    class Record(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            order.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    with use_policy("cuda"), Record():
        excitation_pullback(model, torch.randn(2, 3, 8, 8), target)
    first = order.index("aten.convolution")
    assert not READS & set(order[first:]), [op for op in order[first:] if op in READS]
