"""The two surrogate backward passes, as ``torch.autograd.Function``s.

Each call creates its own autograd node holding its own saved tensors, so a ReLU module used
several times, or used in place, gets the right gate at every call (a module hook that stores "the
input" would be overwritten by the next call).

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

from .gates import Gate, sigmoid_gate


def flush_tiny_(w: torch.Tensor) -> torch.Tensor:
    """Set entries of a non-negative weight tensor (a gate, a softmax weight) below ``sqrt(finfo.tiny)`` to 0,
    in place: 1.1e-19 in float32, 1.5e-154 in float64, far below anything that shows in a sum with the
    other paths. Without it the soft gates of very negative pre-activations are subnormal floats, or make
    subnormal gradients when multiplied, and subnormal operands slowed ResNet50's convolution backward on
    CPU about two-fold (a vanilla gradient never meets them: its gates are exactly 0 or 1). Above the
    cutoff, a product with a gradient of size at least the cutoff stays a normal float."""
    return F.threshold_(w, math.sqrt(torch.finfo(w.dtype).tiny), 0.0)


def gate_of_scaled_(u: torch.Tensor, gate: Gate) -> torch.Tensor:
    """``gate(u)`` for a fresh tensor ``u`` we own, tiny gates flushed (:func:`flush_tiny_`); computed in place
    when the gate is the sigmoid: on CPU a new activation-sized tensor costs more than the elementwise work."""
    return flush_tiny_(u.sigmoid_() if gate is sigmoid_gate else gate(u).clone())


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
        (g,) = ctx.saved_tensors
        return grad_out * g, None, None, None


class SoftGateReLUAfterBatchNorm(torch.autograd.Function):
    """:class:`SoftGateReLU` for ``z = batch_norm(c) + a_1 + ... + a_m`` (inference-mode batch norm, then
    zero or more additions, as in a residual block), saving no gate tensor.

    The batch norm's own backward already keeps its input ``c``, its statistics and affine parameters persist
    anyway, and a residual addend is usually the block input, which the next convolution keeps. Saving
    references to them and recomputing ``z`` in the backward pass (the same kernels on the same tensors, so the
    same values) gives the same gate without the activation-sized tensor :class:`SoftGateReLU` keeps per call.
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
        c, running_mean, running_var, weight, bias, *addends = ctx.saved_tensors
        z = F.batch_norm(c, running_mean, running_var, weight, bias, False, 0.0, ctx.eps)
        for a in addends:
            z += a
        g = gate_of_scaled_(z.mul_(1.0 / ctx.temperature), ctx.gate)
        return g.mul_(grad_out), *(None,) * (9 + len(addends))


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
    """Inverse of :func:`pad_for_windows` (zeros where it cropped); contiguous, as convolutions' backward wants."""
    left, right, top, bottom = geometry["pads"]
    return F.pad(grid, (-left, -right, -top, -bottom)).contiguous()


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
    def forward(ctx, x, temperature, kernel_size, stride, padding, dilation, ceil_mode):
        out = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(x, out)
        ctx.temperature = temperature
        ctx.pool = (kernel_size, stride, padding, dilation, ceil_mode)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, hard = ctx.saved_tensors
        unbatched = x.dim() == 3
        if unbatched:
            x, hard, grad_out = x.unsqueeze(0), hard.unsqueeze(0), grad_out.unsqueeze(0)
        padded, geometry = pad_for_windows(x, *ctx.pool)
        slots = [padded[index] for index in window_slots(geometry)]  # views, no copies
        inv_t = 1.0 / ctx.temperature

        def exp_weight(v):  # unnormalised softmax weight e_k, stabilised by the window max the forward found
            return flush_tiny_(torch.sub(v, hard).mul_(inv_t).exp_())

        total, weighted = torch.zeros_like(hard), torch.zeros_like(hard)
        for v in slots:
            e = exp_weight(v)
            total += e
            weighted.addcmul_(v, e)
        # d/dx_k sum_j x_j s_j = s_k (1 + (x_k - p) / T) with p = sum_j x_j s_j and s_k = e_k / Z;
        # x_k - p is formed first: at small T, x_k / T - p / T would cancel catastrophically.
        # The e_k are recomputed rather than kept: k*k output-sized tensors were the peak of the backward.
        scale = grad_out / total
        pooled = weighted.div_(total)
        grid = torch.zeros_like(padded)
        for index, v in zip(window_slots(geometry), slots):
            grid[index] += torch.sub(v, pooled).mul_(inv_t).add_(1.0).mul_(exp_weight(v)).mul_(scale)
        grad = crop_padding(grid, geometry)
        return (grad.squeeze(0) if unbatched else grad), None, None, None, None, None, None
