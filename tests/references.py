"""Slow, independent reference implementations of the surrogates, written differently on purpose.

- ReLU: straight-through through an antiderivative of the gate, ``relu(z) + (S(z) - S(z).detach())``
  with ``S'(z) = gate(z / T)`` (for the sigmoid, ``S(z) = T softplus(z / T)``).
- Max-pool: a Python loop over output positions that builds each window by index arithmetic.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def antiderivative(z: torch.Tensor, temperature: float, gate: str) -> torch.Tensor:
    u = z / temperature
    if gate == "sigmoid":
        s = F.softplus(u)
    elif gate == "normal_cdf":
        s = u * 0.5 * (1 + torch.erf(u / math.sqrt(2))) + torch.exp(-u * u / 2) / math.sqrt(2 * math.pi)
    elif gate == "softsign":
        s = 0.5 * (u + u.abs() - torch.log1p(u.abs()))
    else:
        raise ValueError(gate)
    return temperature * s


def reference_relu(z: torch.Tensor, temperature: float = 0.3, gate: str = "sigmoid") -> torch.Tensor:
    s = antiderivative(z, temperature, gate)
    return torch.relu(z).detach() + (s - s.detach())


def loop_softmax_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, temperature=0.3):
    """Softmax pool by explicit loops; the output grid is taken from F.max_pool2d itself."""
    k, p, d = _pair(kernel_size), _pair(padding), _pair(dilation)
    s = _pair(stride if stride else kernel_size)
    out_h, out_w = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode).shape[-2:]
    h, w = x.shape[-2:]
    rows = []
    for i in range(out_h):
        cols = []
        for j in range(out_w):
            window = [x[..., r, c] for a in range(k[0]) for b in range(k[1])
                      for r, c in [(i * s[0] - p[0] + a * d[0], j * s[1] - p[1] + b * d[1])]
                      if 0 <= r < h and 0 <= c < w]
            v = torch.stack(window, -1)
            cols.append((v * torch.softmax(v / temperature, -1)).sum(-1))
        rows.append(torch.stack(cols, -1))
    return torch.stack(rows, -2)


def reference_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, temperature=0.3):
    soft = loop_softmax_pool(x, kernel_size, stride, padding, dilation, ceil_mode, temperature)
    hard = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    return hard.detach() + (soft - soft.detach())


class RefReLU(nn.Module):
    def __init__(self, temperature, gate="sigmoid"):
        super().__init__()
        self.temperature, self.gate = temperature, gate

    def forward(self, z):
        return reference_relu(z, self.temperature, self.gate)


class RefPool(nn.Module):
    def __init__(self, pool: nn.MaxPool2d, temperature):
        super().__init__()
        self.pool, self.temperature = pool, temperature

    def forward(self, x):
        p = self.pool
        return reference_pool(x, p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode, self.temperature)


def reference_copy(model: nn.Module, temperature: float, gate: str = "sigmoid") -> nn.Module:
    """A copy of a zoo model whose ReLU and max-pool modules and functional ops use the references."""
    import copy

    ref = copy.deepcopy(model)
    for module in list(ref.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, RefReLU(temperature, gate))
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, name, RefPool(child, temperature))
    if hasattr(ref, "ops"):
        ref.ops = ReferenceOps(temperature, gate)
    return ref


class TorchOps:
    """The functional calls zoo models make, as torch spells them."""
    relu = staticmethod(F.relu)
    relu_ = staticmethod(torch.relu_)
    torch_relu = staticmethod(torch.relu)
    tensor_relu = staticmethod(torch.Tensor.relu)
    max_pool2d = staticmethod(F.max_pool2d)


class ReferenceOps:
    def __init__(self, temperature, gate):
        self.temperature, self.gate = temperature, gate

    def relu(self, z, inplace=False):
        return reference_relu(z, self.temperature, self.gate)

    relu_ = torch_relu = tensor_relu = relu

    def max_pool2d(self, x, *args, **kwargs):
        return reference_pool(x, *args, temperature=self.temperature, **kwargs)
