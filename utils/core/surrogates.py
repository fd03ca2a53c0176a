"""The surrogate backward passes, as ``torch.autograd.Function``s: each call creates its own autograd node holding
its own saved tensors, so a ReLU module used several times, or in place, gets the right gate at every call. None of
their backward passes is itself differentiable (:func:`refuse_create_graph`).

- :class:`SoftGateReLU`: forward ``relu(z)`` bit for bit; backward ``grad * gate(z / T)``.
- :class:`SoftMaxPool2d` (in :mod:`.pooling`): forward ``F.max_pool2d`` bit for bit; backward the softmax pool's.
"""
from __future__ import annotations

import contextlib
import contextvars
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import torch_private as private
from .gates import Gate, is_sigmoid
from .policy import policy_for


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


def _relu(ctx, z: torch.Tensor, inplace: bool) -> torch.Tensor:
    """The unchanged ReLU forward of the surrogates; an in-place call marks its input dirty, as autograd asks."""
    if inplace:
        ctx.mark_dirty(z)
        return torch.relu_(z)
    return torch.relu(z)


class SoftGateReLU(torch.autograd.Function):
    """``relu(z)`` whose backward multiplies by ``gate(z / T)`` instead of ``1[z > 0]``.

    The gate is evaluated in the forward pass and saved instead of z: the same memory as saving z, and an in-place
    ReLU then needs no copy of its pre-activation. Tiny gates are flushed to 0 where the device's policy says so
    (:mod:`utils.core.policy`).
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, temperature: float, gate: Gate, inplace: bool):
        flush = policy_for(z.device).flush_subnormals
        ctx.save_for_backward(gate_of_scaled_(z * (1.0 / temperature), gate, flush))
        return _relu(ctx, z, inplace)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        refuse_create_graph()
        (g,) = ctx.saved_tensors
        return grad_out * g, None, None, None


class SoftGateReLUAfterBatchNorm(torch.autograd.Function):
    """:class:`SoftGateReLU` for ``z = batch_norm(c) + a_1 + ... + a_m`` (inference-mode batch norm, then
    zero or more additions, as in a residual block), saving no gate tensor.

    The batch norm's own backward already keeps its input ``c``, its statistics and affine parameters persist
    anyway, and a residual addend is usually the block input, which the next convolution keeps. Saving
    references to them and recomputing ``z`` in the backward pass (the same batch norm on the same tensors) gives
    the same gate, up to rounding in the last bit, without the activation-sized tensor :class:`SoftGateReLU` keeps
    per call; the 1 / T goes into the fused gate-times-gradient (:func:`gate_times_`), so the backward is two or
    three tensor operations, however large the batch.
    The batch norm's tensors are saved as the plain batch norm saves them (version-checked by autograd: changed in
    place, they raise as they would for the plain gradient). The addends are not saved by a plain sum, so a model
    may change one in place after the sum: :meth:`keep_gate` (the mode calls it just before such a change)
    computes the gate while it still can, as :class:`SoftGateReLU` would have; a change made after the forward
    call, which no mode sees, is reported in the backward pass.
    """

    @staticmethod
    def forward(ctx, z, c, running_mean, running_var, weight, bias, eps: float, temperature: float, gate: Gate,
                inplace: bool, *addends):
        ctx.save_for_backward(c, running_mean, running_var, weight, bias)
        ctx.addends = tuple((a, a._version) for a in addends)  # inputs, not outputs: no reference cycle
        ctx.eps, ctx.temperature, ctx.gate, ctx.kept = eps, temperature, gate, None
        ctx.flush = policy_for(z.device).flush_subnormals
        return _relu(ctx, z, inplace)

    @staticmethod
    def recompute(ctx) -> torch.Tensor:
        """``z``, recomputed from the saved batch norm's tensors and the addends (which must be unchanged)."""
        c, running_mean, running_var, weight, bias = ctx.saved_tensors
        if any(a._version != version for a, version in ctx.addends):
            raise RuntimeError("a tensor added to a batch norm's output before a ReLU was changed in place after the "
                               "model's forward call, so the ReLU's soft gate cannot be recomputed: change a copy "
                               "(or compute the backward pass before changing it)")
        z = private.batch_norm_no_training(c, weight, bias, running_mean, running_var, ctx.eps)
        for a, _ in ctx.addends:
            z.add_(a)
        return z

    @staticmethod
    def keep_gate(ctx) -> None:
        """Compute and keep the gate now, before an addend changes in place (then the backward pass uses it)."""
        if ctx.kept is None:
            with torch.no_grad():
                ctx.kept = gate_of_scaled_(SoftGateReLUAfterBatchNorm.recompute(ctx).mul_(1.0 / ctx.temperature),
                                           ctx.gate, ctx.flush)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        refuse_create_graph()
        none = (None,) * (9 + len(ctx.addends))
        if ctx.kept is not None:
            return grad_out * ctx.kept, *none
        z = SoftGateReLUAfterBatchNorm.recompute(ctx)
        return gate_times_(z, ctx.gate, grad_out, 1.0 / ctx.temperature, ctx.flush), *none


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


class AttentionValues(torch.autograd.Function):
    """``weights @ v`` exactly, for attention weights ``softmax(logits)`` that a rule replaced by a softmax at
    temperature T: the gradient w.r.t. ``v`` uses the soft weights ``softmax(logits / T)`` (as the gradient of
    ``softmax(logits / T) @ v`` does), the one w.r.t. the weights is the ordinary ``grad @ v^T`` (it then goes through
    the softmax rule's own backward)."""

    @staticmethod
    def forward(ctx, weights, v, logits, dim: int, temperature: float, matmul):
        ctx.save_for_backward(v, logits)
        ctx.dim, ctx.temperature = dim, temperature
        return matmul(weights, v)

    @staticmethod
    def backward(ctx, grad_out):
        refuse_create_graph()
        v, logits = ctx.saved_tensors
        soft = torch.softmax(logits / ctx.temperature, ctx.dim)
        grad_w = grad_out @ v.transpose(-2, -1) if ctx.needs_input_grad[0] else None
        grad_v = None
        if ctx.needs_input_grad[1]:
            grad_v = soft.transpose(-2, -1) @ grad_out
            if grad_v.shape != v.shape:  # v broadcast over leading dimensions
                grad_v = grad_v.sum_to_size(v.shape)
        return grad_w, grad_v, None, None, None, None


class HeldLayerNorm(torch.autograd.Function):
    """``F.layer_norm`` exactly; backward with the mean and variance held constant: ``grad * weight / sqrt(var + eps)``
    for the input (one pass, the statistics recomputed from the saved input), the affine parameters' gradients as
    usual. The same as :class:`StraightThrough` with the held layer norm as stand-in, without its recomputation."""

    @staticmethod
    def forward(ctx, x, weight, bias, shape, eps: float):
        ctx.save_for_backward(x, weight)
        ctx.shape, ctx.eps, ctx.has_bias = tuple(shape), eps, bias is not None
        ctx.wanted = wanted_grads((x, weight, bias), ctx.needs_input_grad[:3])
        return F.layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def backward(ctx, grad_out):
        refuse_create_graph()
        x, weight = ctx.saved_tensors
        dims = tuple(range(-len(ctx.shape), 0))
        var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
        rstd = (var + ctx.eps).rsqrt_()
        scaled = grad_out * weight if weight is not None else grad_out
        grad_x = scaled * rstd if ctx.wanted[0] else None
        lead = tuple(range(x.dim() - len(ctx.shape)))
        grad_w = (grad_out * (x - mean) * rstd).sum(lead) if weight is not None and ctx.wanted[1] else None
        grad_b = grad_out.sum(lead) if ctx.has_bias and ctx.wanted[2] else None
        return grad_x, grad_w, grad_b, None, None
