"""Subnormal flushing: gates and softmax weights far below anything that shows in a sum set to exactly 0.

Without it the soft gates of very negative pre-activations are subnormal floats, or make subnormal gradients
when multiplied, and subnormal operands slow a convolution's backward on a CPU (a vanilla gradient never meets
them: its gates are exactly 0 or 1). The device's policy (:mod:`utils.core.policy`) says where it is on.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..gates import Gate, is_sigmoid


def flush_tiny_(w: torch.Tensor) -> torch.Tensor:
    """Set entries of a non-negative weight tensor (a gate, a softmax weight) below ``sqrt(finfo.tiny)`` to 0,
    in place: 1.1e-19 in float32, 1.5e-154 in float64, far below anything that shows in a sum with the
    other paths. Without it the soft gates of very negative pre-activations are subnormal floats, or make
    subnormal gradients when multiplied, and subnormal operands slowed ResNet50's convolution backward on
    CPU about two-fold (a vanilla gradient never meets them: its gates are exactly 0 or 1). Above the
    cutoff, a product with a gradient of size at least the cutoff stays a normal float."""
    return F.threshold_(w, _flush_cutoff(w.dtype), 0.0)


def _flush_cutoff(dtype: torch.dtype) -> float:
    return math.sqrt(torch.finfo(dtype).tiny)


def _log_flush_cutoff(dtype: torch.dtype) -> float:
    return math.log(_flush_cutoff(dtype))


def _exponent_floor(dtype: torch.dtype) -> float:
    """An exponent below ``log(sqrt(tiny))``: its exp, and any smaller, :func:`flush_tiny_` sets to 0."""
    return _log_flush_cutoff(dtype) - 1.0


def exp_flushed_(u: torch.Tensor) -> torch.Tensor:
    """``exp(u)`` in place for a fresh tensor ``u <= 0`` we own, tiny values flushed (:func:`flush_tiny_`).

    Exponents are first raised to :func:`_exponent_floor`, which changes no result (their exp is flushed either
    way) but keeps exp off subnormal outputs: on CPU those made it up to 20 times slower, as on a trained VGG's
    pools, where a window's max can exceed the rest by many temperatures. (Unlike the sigmoid's, torch.exp's CPU
    kernel is also slow at -inf, 10 times, hence a clamp and a flush here rather than :func:`_zero_tiny_sigmoids_`.)"""
    return flush_tiny_(u.clamp_min_(_exponent_floor(u.dtype)).exp_())


_SIGMOID_IS_ONE = 40.0
"""Above this the sigmoid rounds to 1 in float32 and float64."""


def _zero_tiny_sigmoids_(u: torch.Tensor) -> torch.Tensor:
    """Set ``u <= log(sqrt(tiny))`` to -inf in place, so that the sigmoid gate of ``u`` is exactly 0 where it would
    be below about ``sqrt(tiny)`` (the rule of :func:`flush_tiny_`, applied to the argument: no pass over the gates).
    The sigmoid and softplus kernels meet neither subnormals nor a slow path at -inf."""
    return F.threshold_(u, _log_flush_cutoff(u.dtype), -math.inf)


def gate_of_scaled_(u: torch.Tensor, gate: Gate, flush: bool = True) -> torch.Tensor:
    """``gate(u)`` for a fresh tensor ``u`` we own; with ``flush``, tiny gates set to 0 (:func:`flush_tiny_`).
    Computed in place when the gate is the sigmoid: on CPU a new activation-sized tensor costs more than the
    elementwise work.

    With ``flush`` the sigmoid's ``u`` is also clamped at 40, which changes no gate but keeps ``exp(-u)`` off
    subnormals, which made the CPU's sigmoid several times slower for pre-activations of many temperatures."""
    if is_sigmoid(gate):
        if flush:
            _zero_tiny_sigmoids_(u).clamp_max_(_SIGMOID_IS_ONE)
        return u.sigmoid_()
    g = gate(u).clone()
    return flush_tiny_(g) if flush else g


def gate_times_(u: torch.Tensor, gate: Gate, grad: torch.Tensor, beta: float = 1.0, flush: bool = True) -> torch.Tensor:
    """``gate(beta u) * grad``, written into ``u`` (a fresh tensor we own, shaped like ``grad``); the gate as in
    :func:`gate_of_scaled_`.

    For the sigmoid this is one pass of aten's ``softplus_backward`` (the sigmoid of ``beta u`` is the derivative of
    softplus with that beta), which returns ``grad`` itself where ``beta u > 40``: three elementwise passes fewer
    than scaling, gate, then product."""
    if is_sigmoid(gate):
        if flush:  # gates below ~sqrt(tiny), i.e. beta u <= log(sqrt(tiny)), exactly 0
            F.threshold_(u, _log_flush_cutoff(u.dtype) / beta, -math.inf)
        return torch.ops.aten.softplus_backward.grad_input(grad, u, beta, _SIGMOID_IS_ONE, grad_input=u)
    return gate_of_scaled_(u.mul_(beta) if beta != 1.0 else u, gate, flush).mul_(grad)
