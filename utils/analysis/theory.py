"""Small computations that check the paper's theory: the gating factorisation and path counts."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.gates import hard_gate
from ..core.interception import MAXPOOL2D_FUNCTIONS, RELU_FUNCTIONS, Interceptor


@torch.no_grad()
def gated_product(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``M(x) = W_{L+1} G_L W_L ... G_1 W_1`` for a bias-free ``Sequential`` of Linear and ReLU layers.

    ``G_l = diag(1[z_l > 0])`` are the gates at ``x`` (a single input of shape (d,)). Returns the
    (classes, d) matrix with ``mlp(x) = M(x) x`` (Eq. 7): the network is linear once its gates are fixed.
    """
    matrix = torch.eye(x.shape[-1], dtype=x.dtype)
    z = x
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            if layer.bias is not None:
                raise ValueError("gated_product needs bias-free Linear layers")
            matrix, z = layer.weight @ matrix, layer.weight @ z
        elif isinstance(layer, nn.ReLU):
            gate = hard_gate(z)
            matrix, z = gate[:, None] * matrix, gate * z
        else:
            raise TypeError(f"gated_product takes Linear and ReLU layers, got {type(layer).__name__}")
    return matrix


def _path_counting() -> Interceptor:
    """ReLU -> identity, max- and average-pools -> sum-pools, BatchNorm -> identity."""

    def adaptive_sum(func, args, kwargs):
        x, size = args[0], kwargs.get("output_size", args[1] if len(args) > 1 else None)
        out = func(x, size)
        return out * (x.shape[-1] * x.shape[-2] / (out.shape[-1] * out.shape[-2]))

    handlers = {fn: (lambda func, args, kwargs: args[0]) for fn in (*RELU_FUNCTIONS, F.batch_norm)}
    handlers.update({fn: (lambda func, args, kwargs: _sum_pool(func, *args, **kwargs))
                     for fn in (*MAXPOOL2D_FUNCTIONS, F.avg_pool2d)})
    handlers[F.adaptive_avg_pool2d] = adaptive_sum
    return Interceptor(handlers)


def _sum_pool(func, x, kernel_size, stride=None, padding=0, *rest, **kwargs):
    dilation = rest[0] if rest else kwargs.get("dilation", 1)
    ceil_mode = kwargs.get("ceil_mode", rest[1] if len(rest) > 1 else False)
    if func is F.avg_pool2d:  # avg_pool2d's fifth positional argument is ceil_mode, not dilation
        ceil_mode, dilation = (rest[0] if rest else kwargs.get("ceil_mode", False)), 1
    if dilation not in (1, (1, 1)):
        raise NotImplementedError("path counting through dilated pools is not implemented")
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad=True, divisor_override=1)


@torch.no_grad()
def count_paths(model: nn.Module, input_shape=(3, 224, 224)) -> float:
    """Number of input-to-logit paths of a ReLU network (summed over logits), as a float64.

    A path picks one unit per layer, linked by a nonzero weight; its contribution is the product of
    its weights and gates (Eq. 9). Counting them needs only the architecture: propagate ones with
    all weights set to 1, no biases, every ReLU and BatchNorm as the identity and every pool as a
    sum. ``inf`` means more than ~1e308.
    """
    counter = copy.deepcopy(model).double().eval()
    for m in counter.modules():
        for name, p in m.named_parameters(recurse=False):
            p.fill_(1.0 if name == "weight" and not isinstance(m, nn.modules.batchnorm._BatchNorm) else 0.0)
    with _path_counting():
        out = counter(torch.ones(1, *input_shape, dtype=torch.float64))
    return out.sum().item()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mlp(width: int, inputs: int, classes: int, depth: int) -> nn.Sequential:
    """A bias-free ReLU MLP with ``depth`` hidden layers of ``width`` units."""
    sizes = [inputs] + [width] * depth
    layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b, bias=False), nn.ReLU())]
    return nn.Sequential(*layers, nn.Linear(width, classes, bias=False))


def mlp_growth(width: int = 64, inputs: int = 3 * 32 * 32, classes: int = 10, depths=range(1, 9)):
    """(depth, parameters, paths) of bias-free MLPs of a fixed width, each counted on the built network
    (:func:`count_parameters`, :func:`count_paths`): parameters add with depth, paths multiply."""
    rows = []
    for depth in depths:
        net = mlp(width, inputs, classes, depth)
        rows.append((depth, count_parameters(net), count_paths(net, (inputs,))))
    return rows


def log10(value: float) -> float:
    return math.log10(value) if value > 0 and math.isfinite(value) else float("inf")


def gradient_agreement(model: nn.Module, x: torch.Tensor, target, temperatures, **settings) -> torch.Tensor:
    """Cosine between the excitation pullback at each temperature and the vanilla gradient, per sample.

    Args:
        model: classifier; x: inputs (N, ...); target: class index or one per sample.
        temperatures: the ReLU (and, unless ``pool_temperature`` is given, max-pool) temperatures T.
        **settings: further pullback settings (keywords of :func:`~utils.core.pullback.excitation_pullback`),
            e.g. ``pool_temperature=None`` to keep max-pools hard.

    Returns:
        (len(temperatures), N) float64 cosines; T -> 0 gives 1 wherever no tied maxima split a pool's gradient.
    """
    from ..core.pullback import excitation_pullback, vanilla_gradient

    vanilla = vanilla_gradient(model, x, target).flatten(1).double()
    return torch.stack([F.cosine_similarity(excitation_pullback(model, x, target, temperature=t, **settings)
                                            .flatten(1).double(), vanilla) for t in temperatures])
