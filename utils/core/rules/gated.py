"""Gated activations ``z * g(z)`` and their kin: the backward is a soft gate of ``z`` alone, held constant.

SiLU ``sigmoid(z / T)``, GELU ``Phi(z / T)``, Hardswish ``hardsigmoid(z / T)``, LeakyReLU
``a + (1 - a) sigmoid(z / T)``, Hardtanh (and ReLU6) ``sigmoid((z - lo) / T) sigmoid((hi - z) / T)``; each through
:class:`~utils.core.surrogates.SoftGate` (forward the function's own, backward ``grad * gate``).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from .. import interception as calls
from ..gates import Gate, check_temperature, normal_cdf_gate, sigmoid_gate
from ..optimised.flush import flush_tiny_
from ..surrogates import SoftGate
from .base import Rule, needs_grad, scaled_gate


class GatedRule(Rule):
    """An elementwise activation ``z * g(z)`` whose backward is a gate of ``z`` alone (the gate held constant)."""

    gate: Gate
    default_temperature: float = 1.0

    def __init__(self, temperature: float | None = None):
        temperature = self.default_temperature if temperature is None else temperature
        self.temperature = check_temperature(temperature, f"{self.kind}_temperature")

    def gate_of(self, func, args, kwargs) -> Callable[[torch.Tensor], torch.Tensor]:
        return scaled_gate(type(self).gate, self.temperature)

    def apply(self, ctx, func, args, kwargs):
        z = args[0]
        if not needs_grad(z):
            return func(*args, **kwargs)
        where = _INPLACE.get(func, False)
        inplace = where if isinstance(where, bool) else bool(calls.bound_argument(args, kwargs, *where, False))
        run = functools.partial(_call_with_first, func, args[1:], kwargs)
        return SoftGate.apply(z, run, self.gate_of(func, args, kwargs), inplace)


_INPLACE = {F.silu: (1, "inplace"), F.hardswish: (1, "inplace"), F.relu6: (1, "inplace"),
            F.leaky_relu: (2, "inplace"), F.hardtanh: (3, "inplace"), F.leaky_relu_: True, F.hardtanh_: True}
"""Where an activation says it runs in place: (position, keyword), or always (True); GELU never does."""


def _call_with_first(func, rest, kwargs, z):
    return func(z, *rest, **kwargs)


class SiLURule(GatedRule):
    """SiLU ``z * sigmoid(z)``: backward ``sigmoid(z / T)`` (T = 1.6), as for the gated linear map with the gate
    held constant."""

    kind = "silu"
    functions = calls.SILU_FUNCTIONS
    gate = staticmethod(sigmoid_gate)
    default_temperature = 1.6


class GELURule(GatedRule):
    """GELU ``z * Phi(z)`` (also its tanh approximation): backward ``Phi(z / T)`` (T = 1.0)."""

    kind = "gelu"
    functions = calls.GELU_FUNCTIONS
    gate = staticmethod(normal_cdf_gate)
    default_temperature = 1.0


class HardswishRule(GatedRule):
    """Hardswish ``z * hardsigmoid(z)``: backward ``hardsigmoid(z / T)`` (T = 1.0), the gate held constant."""

    kind = "hardswish"
    functions = calls.HARDSWISH_FUNCTIONS
    gate = staticmethod(lambda u: F.hardsigmoid(u))
    default_temperature = 1.0


class LeakyReLURule(GatedRule):
    """LeakyReLU with slope ``a``: backward ``a + (1 - a) sigmoid(z / T)`` in place of ``a + (1 - a) 1[z > 0]``."""

    kind = "leaky_relu"
    functions = tuple(calls.LEAKY_RELU_FUNCTIONS)

    def __init__(self, temperature: float = 0.3):
        super().__init__(temperature)

    def gate_of(self, func, args, kwargs):
        a = float(calls.bound_argument(args, kwargs, 1, "negative_slope", 0.01))
        inv_t = 1.0 / self.temperature
        return lambda z: flush_tiny_(torch.sigmoid(z * inv_t).mul_(1.0 - a).add_(a))


class HardtanhRule(GatedRule):
    """Hardtanh (and ReLU6 = hardtanh(0, 6)): backward ``sigmoid((z - lo) / T) * sigmoid((hi - z) / T)`` in place
    of ``1[lo < z < hi]``."""

    kind = "hardtanh"
    functions = tuple(calls.HARDTANH_FUNCTIONS)

    def __init__(self, temperature: float = 0.3):
        super().__init__(temperature)

    def gate_of(self, func, args, kwargs):
        if func is F.relu6:
            return self.gate_between(0.0, 6.0)
        return self.gate_between(float(calls.bound_argument(args, kwargs, 1, "min_val", -1.0)),
                         float(calls.bound_argument(args, kwargs, 2, "max_val", 1.0)))

    def gate_between(self, lo: float, hi: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """``z -> sigmoid((z - lo) / T) * sigmoid((hi - z) / T)``; an infinite bound's factor is 1."""
        inv_t = 1.0 / self.temperature
        return lambda z: flush_tiny_(torch.sigmoid((z - lo) * inv_t).mul_(torch.sigmoid((hi - z) * inv_t)))

    def disguised(self, z: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], inplace: bool, lo: float,
                  hi: float):
        """``clamp(z, lo, hi)`` (or another spelling, ``run(z)``, of it): its own forward, this rule's backward."""
        return SoftGate.apply(z, run, self.gate_between(lo, hi), inplace)
