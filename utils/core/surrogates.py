"""The surrogate backward passes, as ``torch.autograd.Function``s: each call creates its own autograd node holding
its own saved tensors, so a ReLU module used several times, or in place, gets the right gate at every call. None of
their backward passes is itself differentiable (:func:`refuse_create_graph`).

- :class:`SoftGateReLU`: forward ``relu(z)`` bit for bit; backward ``grad * gate(z / T)``.
- :class:`SoftMaxPool2d`: forward ``F.max_pool2d`` bit for bit; backward the gradient of the
  softmax pool ``sum_i x_i softmax(x / T)_i`` over each window, i.e. straight-through
  ``hard.detach() + (soft - soft.detach())`` without building ``soft`` in the forward pass.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .gates import Gate, is_sigmoid


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


def gate_of_scaled_(u: torch.Tensor, gate: Gate) -> torch.Tensor:
    """``gate(u)`` for a fresh tensor ``u`` we own, tiny gates set to 0 (:func:`flush_tiny_`); computed in place
    when the gate is the sigmoid: on CPU a new activation-sized tensor costs more than the elementwise work.

    For the sigmoid, ``u`` is also clamped at 40, which changes no gate but keeps ``exp(-u)`` off subnormals, which
    made the sigmoid several times slower for pre-activations of many temperatures."""
    if is_sigmoid(gate):
        return _zero_tiny_sigmoids_(u).clamp_max_(_SIGMOID_IS_ONE).sigmoid_()
    return flush_tiny_(gate(u).clone())


def gate_times_(u: torch.Tensor, gate: Gate, grad: torch.Tensor) -> torch.Tensor:
    """``gate(u) * grad``, written into ``u`` (a fresh tensor we own, shaped like ``grad``); the gate as in
    :func:`gate_of_scaled_`.

    For the sigmoid this is one pass of aten's ``softplus_backward`` (the sigmoid is softplus' derivative), which
    returns ``grad`` itself where ``u > 40``: three elementwise passes fewer than gate, then product."""
    if is_sigmoid(gate):
        return torch.ops.aten.softplus_backward.grad_input(grad, _zero_tiny_sigmoids_(u), 1.0, _SIGMOID_IS_ONE,
                                                           grad_input=u)
    return gate_of_scaled_(u, gate).mul_(grad)


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

    The gate is evaluated in the forward pass and saved instead of z: the same memory as saving z,
    and an in-place ReLU then needs no copy of its pre-activation.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, temperature: float, gate: Gate, inplace: bool):
        ctx.save_for_backward(gate_of_scaled_(z * (1.0 / temperature), gate))
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
    references to them and recomputing ``z / T`` in the backward pass (the same kernels on the same tensors, the
    1 / T folded into the batch norm's affine map) gives the same gate, up to rounding in the last bit, without the
    activation-sized tensor :class:`SoftGateReLU` keeps per call.
    Saved tensors are version-checked by autograd: an in-place change to any of them raises, never misleads.
    """

    @staticmethod
    def forward(ctx, z, c, running_mean, running_var, weight, bias, eps: float, temperature: float, gate: Gate,
                inplace: bool, *addends):
        ctx.save_for_backward(c, running_mean, running_var, weight, bias, *addends)
        ctx.eps, ctx.temperature, ctx.gate = eps, temperature, gate
        return _relu(ctx, z, inplace)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        refuse_create_graph()
        c, running_mean, running_var, weight, bias, *addends = ctx.saved_tensors
        # u = z / T straight from the batch norm with its affine map scaled by 1 / T: one pass fewer than
        # scaling z afterwards (u may differ from z * (1 / T) in the last bit).
        inv_t = 1.0 / ctx.temperature
        weight = weight * inv_t if weight is not None else torch.full_like(running_var, inv_t)
        u = F.batch_norm(c, running_mean, running_var, weight, None if bias is None else bias * inv_t,
                         False, 0.0, ctx.eps)
        for a in addends:
            u.add_(a, alpha=inv_t)
        return gate_times_(u, ctx.gate, grad_out), *(None,) * (9 + len(addends))


def pool_geometry(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool):
    """Output length and (left, right) padding that make the windows tile exactly, as max_pool2d counts them.

    A negative right padding crops trailing inputs that no window reaches.
    """
    span = dilation * (kernel - 1) + 1
    numerator = size + 2 * padding - span + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input or the left padding
    needed = (out - 1) * stride + span
    return out, padding, needed - size - padding


def pad_for_windows(x: torch.Tensor, kernel_size, stride, padding, dilation, ceil_mode):
    """Pad ``x`` (N, C, H, W) so that max-pool windows tile it exactly; returns ``(padded, geometry)``.

    Padded slots hold a huge negative finite value: their softmax weight underflows to exactly 0
    and, unlike -inf, ``value * 0`` stays 0 (padding never wins a window, as in max_pool2d).
    """
    k, s, p, d = _pair(kernel_size), _pair(stride if stride else kernel_size), _pair(padding), _pair(dilation)
    h, w = x.shape[-2:]
    out_h, top, bottom = pool_geometry(h, k[0], s[0], p[0], d[0], ceil_mode)
    out_w, left, right = pool_geometry(w, k[1], s[1], p[1], d[1], ceil_mode)
    geometry = dict(pads=(left, right, top, bottom), kernel=k, stride=s, dilation=d, out=(out_h, out_w))
    return F.pad(x, geometry["pads"], value=-0.25 * torch.finfo(x.dtype).max), geometry


def window_slots(geometry):
    """For each window slot (a, b), the index that picks that slot of every window from the padded grid."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = geometry["kernel"], geometry["stride"], geometry["dilation"], geometry["out"]
    return [(..., slice(a * dh, a * dh + (oh - 1) * sh + 1, sh), slice(b * dw, b * dw + (ow - 1) * sw + 1, sw))
            for a in range(kh) for b in range(kw)]


def crop_padding(grid: torch.Tensor, geometry) -> torch.Tensor:
    """Inverse of :func:`pad_for_windows`: the unpadded part of ``grid``, zeros where it cropped."""
    left, right, top, bottom = geometry["pads"]
    return F.pad(grid, (-left, -right, -top, -bottom))


def softmax_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   temperature: float = 0.3) -> torch.Tensor:
    """The softmax pool ``sum_i x_i softmax(x / T)_i`` over max-pool windows; differentiable.

    Same windows as ``F.max_pool2d`` with the same arguments (padded slots take no weight); input
    (N, C, H, W), output (N, C, H_out, W_out). Tends to the max pool as T -> 0 and to the mean of
    each window as T -> inf.
    """
    padded, geometry = pad_for_windows(x, kernel_size, stride, padding, dilation, ceil_mode)
    windows = torch.stack([padded[index] for index in window_slots(geometry)])
    return (windows * torch.softmax(windows / temperature, dim=0)).sum(0)


class SoftMaxPool2d(torch.autograd.Function):
    """``F.max_pool2d`` whose backward is the softmax pool's gradient at temperature T."""

    @staticmethod
    def forward(ctx, x, temperature, kernel_size, stride, padding, dilation, ceil_mode, detached: bool = False):
        out = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(x, out)
        ctx.temperature, ctx.detached = temperature, detached
        ctx.pool = (kernel_size, stride, padding, dilation, ceil_mode)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, hard = ctx.saved_tensors
        grad = softmax_pool2d_backward(x, hard, grad_out, ctx.pool, ctx.temperature, detached=ctx.detached)
        return grad, None, None, None, None, None, None, None


def softmax_pool2d_backward(x, hard, grad_out, pool, temperature: float, chunk: int = 2 ** 20,
                            detached: bool = False) -> torch.Tensor:
    """Gradient w.r.t. ``x`` (N, C, H, W) or (C, H, W) of the softmax pool, given the hard max pool ``hard`` of ``x``
    and the gradient ``grad_out`` w.r.t. the pool's output (both (..., H_out, W_out)); ``pool`` = (kernel_size,
    stride, padding, dilation, ceil_mode) as for ``F.max_pool2d``.

    d/dx_k sum_j x_j s_j = s_k (1 + (x_k - p) / T), with p = sum_j x_j s_j the soft pool and s_k = e_k / Z its
    weights, e_k = exp((x_k - max) / T) stabilised by the window max the forward pass found; x_k - p is formed as
    (x_k - max) - (p - max): at small T, x_k / T - p / T would cancel catastrophically.

    With ``detached``, the softmax weights are held constant (the follow-up paper's variant): the gradient is
    ``s_k`` times the incoming one, without the ``(1 + (x_k - p) / T)`` factor.

    Runs over a few (sample, channel) planes at a time, about ``chunk`` window slots each, so that temporaries are
    small: reused memory rather than fresh pages (page faults on fresh memory made the unchunked backward up to
    twice as slow on CPU), and in cache.
    """
    (h, w), (oh, ow) = x.shape[-2:], hard.shape[-2:]
    kh, kw = _pair(pool[0])
    planes, hard, grad_out = x.reshape(-1, 1, h, w), hard.reshape(-1, 1, oh, ow), grad_out.reshape(-1, 1, oh, ow)
    grad = torch.empty_like(planes)
    step = max(1, chunk // max(1, kh * kw * oh * ow))
    for i in range(0, planes.shape[0], step):
        _softmax_pool2d_backward_planes(planes[i:i + step], hard[i:i + step], grad_out[i:i + step], pool,
                                        temperature, out=grad[i:i + step], detached=detached)
    return grad.view(x.shape)


def _softmax_pool2d_backward_planes(x, hard, grad_out, pool, temperature: float, out: torch.Tensor,
                                    detached: bool = False) -> None:
    """:func:`softmax_pool2d_backward` for a (P, 1, H, W) stack of planes, all at once, written into ``out``.

    The window slots are gathered into one slot-major tensor (k*k, P, 1, H_out, W_out), so that everything between
    the gather and the scatter back runs over contiguous memory: strided views of the input, with a window of 2 as
    the innermost stride, made each elementwise pass several times slower on CPU.
    """
    inv_t = 1.0 / temperature
    kernel, stride, padding, dilation = _pair(pool[0]), _pair(pool[1] or pool[0]), _pair(pool[2]), _pair(pool[3])
    (kh, kw), (oh, ow) = kernel, hard.shape[-2:]
    d = x.new_empty((kh * kw, *hard.shape))  # x_k - max, slot by slot
    tiles = (stride == kernel and padding == (0, 0) and dilation == (1, 1)
             and oh * kh <= x.shape[-2] and ow * kw <= x.shape[-1])
    if tiles:  # windows tile the input (VGG's pools): one permuted view gathers every slot at once
        torch.sub(_tiles(x, kernel, (oh, ow)).permute(3, 5, 0, 1, 2, 4), hard, out=d.view(kh, kw, *hard.shape))
    else:
        padded, geometry = pad_for_windows(x, *pool)
        slots = window_slots(geometry)
        for k, index in enumerate(slots):
            torch.sub(padded[index], hard, out=d[k])

    e = exp_flushed_(torch.mul(d, inv_t))
    total = e.sum(0)
    if not detached:
        shift = torch.zeros_like(hard)
        for d_k, e_k in zip(d, e):  # slot by slot: no slot-major product tensor
            shift.addcmul_(d_k, e_k)
        d.sub_(shift.div_(total))  # x_k - p
        e.addcmul_(d, e, value=inv_t)  # e_k (1 + (x_k - p) / T)
    scale = grad_out / total

    if tiles:  # scatter back through the same view
        if oh * kh < x.shape[-2] or ow * kw < x.shape[-1]:
            out.zero_()  # rows or columns no window reaches get no gradient
        torch.mul(e.view(kh, kw, *hard.shape).permute(2, 3, 4, 0, 5, 1), scale.unsqueeze(-1).unsqueeze(-3),
                  out=_tiles(out, kernel, (oh, ow)))
    else:
        grid = torch.zeros_like(padded)
        for k, index in enumerate(slots):
            grid[index].addcmul_(e[k], scale)
        out.copy_(crop_padding(grid, geometry))


def _tiles(t: torch.Tensor, kernel, out_size) -> torch.Tensor:
    """View of ``t`` (P, 1, H, W) as (P, 1, H_out, kh, W_out, kw): window (i, j), slot (a, b) at [..., i, a, j, b]."""
    (kh, kw), (oh, ow) = kernel, out_size
    return t[..., :oh * kh, :ow * kw].unflatten(-1, (ow, kw)).unflatten(-3, (oh, kh))


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
        ctx.save_for_backward(*tensors)
        return exact(*tensors)

    @staticmethod
    def backward(ctx, *grads):
        refuse_create_graph()
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
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
        return F.layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def backward(ctx, grad_out):
        refuse_create_graph()
        x, weight = ctx.saved_tensors
        dims = tuple(range(-len(ctx.shape), 0))
        var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
        rstd = (var + ctx.eps).rsqrt_()
        scaled = grad_out * weight if weight is not None else grad_out
        grad_x = scaled * rstd if ctx.needs_input_grad[0] else None
        lead = tuple(range(x.dim() - len(ctx.shape)))
        grad_w = (grad_out * (x - mean) * rstd).sum(lead) if weight is not None and ctx.needs_input_grad[1] else None
        grad_b = grad_out.sum(lead) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None
