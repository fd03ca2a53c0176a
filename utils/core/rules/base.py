"""What every rule shares: the :class:`Rule` interface and the :class:`RuleContext` a rule sees of its call."""
from __future__ import annotations

from typing import Callable, ClassVar, NamedTuple

import torch

from ..gates import Gate
from ..optimised.flush import gate_of_scaled_
from ..policy import policy_for


def needs_grad(*tensors) -> bool:
    """Whether a backward pass can reach any of ``tensors`` (else a rule has nothing to change)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


class RuleContext(NamedTuple):
    """All a rule may ask of the forward call it runs in (:class:`~utils.core.mode.ExcitationMode` makes one)."""

    recipe_of: Callable[[torch.Tensor], object]
    """``z`` -> how to recompute ``z`` from an inference-mode batch norm (:class:`~utils.core.canonizers.batch_norm.Recipe`), or None."""
    remember_attention: Callable[[torch.Tensor, torch.Tensor, float], None]
    """``(weights, logits, T)``: ``weights`` are ``softmax(logits)``, so that ``weights @ V`` takes the rule too."""
    unsupported: Callable[[str, Callable, tuple, dict], object]
    """``(name, func, args, kwargs)``: a call the rule cannot soften; runs it as it is (strict: names it)."""
    watch: Callable[[tuple, torch.Tensor], None]
    """``(addends, out)``: ``out`` came from a recipe with these addends; before one of them changes in place, the
    mode has ``out``'s node keep its gate (:meth:`~utils.core.optimised.batch_norm_relu.SoftGateReLUAfterBatchNorm.keep_gate`)."""


class Rule:
    """The backward pass of some functions, changed; forward bit for bit the function's own. ``apply(ctx, func, args,
    kwargs)`` runs one call, ``ctx`` a :class:`RuleContext`."""

    kind: ClassVar[str]
    functions: ClassVar[tuple[Callable, ...]] = ()

    def apply(self, ctx, func, args: tuple, kwargs: dict):
        raise NotImplementedError

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def scaled_gate(gate: Gate, temperature: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z -> gate(z / T)`` as a fresh tensor, tiny gates flushed to 0 where the device's policy says so (see
    :func:`surrogates.flush_tiny_`)."""
    inv_t = 1.0 / temperature
    return lambda z: gate_of_scaled_(z * inv_t, gate, policy_for(z.device).flush_subnormals)
