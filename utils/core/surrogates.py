"""The surrogate backward passes, as ``torch.autograd.Function``s: each call creates its own autograd node holding
its own saved tensors, so a ReLU module used several times, or in place, gets the right gate at every call. None of
their backward passes is itself differentiable (:func:`refuse_create_graph`).

- :class:`SoftGate`: forward an elementwise ``fn(z)`` bit for bit; backward ``grad * gate(z)`` (the gated rules);
- :class:`StraightThrough`: forward the exact call, backward a stand-in's (the generic way);
- :func:`inputs_only`, :func:`wanted_grads`, :func:`refuse_create_graph`: what every surrogate honours.

The rules' own Functions live beside their rules (:mod:`utils.core.rules`).
"""
from __future__ import annotations

import contextlib
import contextvars

import torch
from torch import nn


_inputs_only: contextvars.ContextVar[bool] = contextvars.ContextVar("inputs_only", default=False)


@contextlib.contextmanager
def inputs_only():
    """Within the block (this thread only), the surrogates made by forward calls compute no gradient for an
    ``nn.Parameter``: a pullback wants the input's alone. Built-in autograd nodes need no such note:
    ``torch.autograd.grad(out, inputs)`` already skips what does not lead to ``inputs``. Nothing shared with other
    threads changes (parameters keep their ``requires_grad``), so a training step beside it is unaffected."""
    token = _inputs_only.set(True)
    try:
        yield
    finally:
        _inputs_only.reset(token)


def wanted_grads(tensors, needs) -> tuple[bool, ...]:
    """``needs`` (a Function's ``needs_input_grad`` for ``tensors``), parameters dropped inside :func:`inputs_only`."""
    if not _inputs_only.get():
        return tuple(needs)
    return tuple(bool(n) and not isinstance(t, nn.Parameter) for t, n in zip(tensors, needs))


def refuse_create_graph() -> None:
    """Raise in a backward run with ``create_graph=True``: the gates are constants of the graph, so a second
    derivative would be silently wrong."""
    if torch.is_grad_enabled():
        raise RuntimeError("the excitation pullback's backward pass is not differentiable: create_graph=True "
                           "(double backward) through a soft_backward block is not supported")


class SoftGate(torch.autograd.Function):
    """``fn(z)`` exactly, for an elementwise ``fn``, whose backward multiplies by ``gate_of(z)`` (computed in the
    forward pass, before an in-place ``fn`` overwrites ``z``, and saved): the gated-linear-map rule of ReLU, SiLU,
    GELU, LeakyReLU, Hardtanh, ... :class:`SoftGateReLU` is this rule for ``fn = relu``, written out for speed."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, fn, gate_of, inplace: bool):
        ctx.save_for_backward(gate_of(z))
        out = fn(z)
        if inplace:
            ctx.mark_dirty(z)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        refuse_create_graph()
        (g,) = ctx.saved_tensors
        return grad_out * g, None, None, None


class StraightThrough(torch.autograd.Function):
    """``exact(*tensors)`` in the forward pass, the vector-Jacobian product of ``stand_in(*tensors)`` in the backward
    pass: the one generic way to change a function's backward (slow but sure; the stand-in is recomputed in the
    backward pass from the saved inputs). Both callables take the tensors only (close over everything else);
    ``None`` entries stay None."""

    @staticmethod
    def forward(ctx, exact, stand_in, *tensors):
        ctx.stand_in = stand_in
        ctx.wanted = wanted_grads(tensors, ctx.needs_input_grad[2:])
        ctx.save_for_backward(*tensors)
        return exact(*tensors)

    @staticmethod
    def backward(ctx, *grads):
        refuse_create_graph()
        saved = ctx.saved_tensors
        needs = ctx.wanted
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(n) if t is not None else None for t, n in zip(saved, needs)]
            wanted = [t for t, n in zip(leaves, needs) if n and t is not None]
            out = ctx.stand_in(*leaves)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            pairs = [(o, g) for o, g in zip(outs, grads)
                     if g is not None and isinstance(o, torch.Tensor) and o.requires_grad]
            found = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True) \
                if wanted and pairs else [None] * len(wanted)
        found = iter(found)
        return None, None, *(next(found) if n and t is not None else None for t, n in zip(saved, needs))
