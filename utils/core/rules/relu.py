"""The paper's rule: a ReLU's hard gate ``1[z > 0]`` becomes the soft gate ``gate(z / T)`` in the backward pass.

Forward ``relu(z)`` bit for bit; backward ``grad * gate(z / T)`` (:class:`SoftGateReLU`). A ReLU right after an
inference-mode batch norm takes the same rule, recomputing ``z`` in the backward pass instead of saving the
gate (:class:`~utils.core.optimised.batch_norm_relu.SoftGateReLUAfterBatchNorm`, tested equal).
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import interception as calls
from ..gates import Gate, check_temperature, get_gate
from ..optimised.batch_norm_relu import SoftGateReLUAfterBatchNorm, relu_forward
from ..optimised.flush import gate_of_scaled_
from ..policy import policy_for
from ..surrogates import SoftGate, refuse_create_graph
from .base import Rule, needs_grad, scaled_gate


class SoftGateReLU(torch.autograd.Function):
    """``relu(z)`` whose backward multiplies by ``gate(z / T)`` instead of ``1[z > 0]``: the paper's rule.

    The gate is evaluated in the forward pass and saved instead of z: the same memory as saving z, and an in-place
    ReLU then needs no copy of its pre-activation. Tiny gates are flushed to 0 where the device's policy says so
    (:mod:`utils.core.optimised.flush`).

    Call it as ``SoftGateReLU.apply(z, temperature, gate, inplace)``.

    Args:
        z: pre-activations, any shape.
        temperature: T > 0.
        gate: a gate on ``z / T`` (:data:`~utils.core.gates.GATES`).
        inplace: overwrite ``z`` with ``relu(z)``, as ``F.relu(z, inplace=True)``.

    Returns:
        ``relu(z)``, bit for bit.

    Example:
        >>> import torch
        >>> from utils import SoftGateReLU, soft_gate
        >>> from utils.core.gates import sigmoid_gate
        >>> z = torch.tensor([-1.0, 0.5], requires_grad=True)
        >>> y = SoftGateReLU.apply(z, 0.3, sigmoid_gate, False)
        >>> y.sum().backward()
        >>> torch.equal(y, torch.relu(z)), torch.allclose(z.grad, soft_gate(z.detach(), 0.3))
        (True, True)
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, temperature: float, gate: Gate, inplace: bool):
        flush = policy_for(z.device).flush_subnormals
        ctx.save_for_backward(gate_of_scaled_(z * (1.0 / temperature), gate, flush))
        return relu_forward(ctx, z, inplace)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        refuse_create_graph()
        (g,) = ctx.saved_tensors
        return grad_out * g, None, None, None


class ReLURule(Rule):
    """ReLU: ``gate(z / T)`` in place of ``1[z > 0]``. A ReLU right after an inference-mode batch norm (plus residual
    addends) recomputes its gate in the backward pass instead of saving it (the mode keeps the recipes)."""

    kind = "relu"
    functions = tuple(calls.RELU_FUNCTIONS)

    def __init__(self, temperature: float = 0.3, gate: str | Gate = "sigmoid"):
        self.temperature = check_temperature(temperature)
        self.gate = get_gate(gate)

    def apply(self, ctx, func, args, kwargs):
        z = args[0]
        if not needs_grad(z):
            return func(*args, **kwargs)
        inplace = bool(calls.bound_argument(args, kwargs, 1, "inplace", calls.RELU_FUNCTIONS[func]))
        recipe = ctx.recipe_of(z)  # how to recompute z from a batch norm (the canonizer), or None
        if recipe is None:
            return SoftGateReLU.apply(z, self.temperature, self.gate, inplace)
        bn = recipe.batch_norm  # the same rule, with z recomputed in the backward pass instead of a gate saved
        out = SoftGateReLUAfterBatchNorm.apply(
            z, bn["input"], bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], float(bn["eps"]),
            self.temperature, self.gate, inplace, *recipe.addends)
        if recipe.addends:
            ctx.watch(recipe.addends, out)
        return out

    def disguised(self, z: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], inplace: bool,
                  scale: float = 1.0):
        """A ReLU written another way (``clamp(min=0)``, ...): its own forward ``run(z)``, the ReLU rule's backward;
        ``scale`` times a ReLU (``z + z.abs()`` is twice one) takes ``scale`` times the gate."""
        gate = scaled_gate(self.gate, self.temperature)
        return SoftGate.apply(z, run, gate if scale == 1.0 else (lambda t: gate(t).mul_(scale)), inplace)
