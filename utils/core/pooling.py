"""The soft max-pool: ``F.max_pool2d`` forward bit for bit, the softmax pool's gradient backward.

The softmax pool of a window is ``sum_i x_i softmax(x / T)_i``; :class:`SoftMaxPool2d` back-propagates its
gradient straight-through (``hard.detach() + (soft - soft.detach())``) without building ``soft`` in the forward
pass. The backward gathers every window slot with one ``unfold`` and scatters the gradient back with one ``fold``,
so it launches a fixed number of kernels per call; how many (sample, channel) planes it takes at a time is the
device's :mod:`~utils.core.policy`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .policy import policy_for
from .surrogates import exp_flushed_, refuse_create_graph


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
        policy = policy_for(x.device)
        ctx.temperature, ctx.detached, ctx.flush = temperature, detached, policy.flush_subnormals
        ctx.chunk = policy.pool_chunk_slots(x.device, x.element_size())
        ctx.pool = (kernel_size, stride, padding, dilation, ceil_mode)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        refuse_create_graph()
        x, hard = ctx.saved_tensors
        grad = softmax_pool2d_backward(x, hard, grad_out, ctx.pool, ctx.temperature, chunk=ctx.chunk,
                                       detached=ctx.detached, flush=ctx.flush)
        return grad, None, None, None, None, None, None, None


def softmax_pool2d_backward(x, hard, grad_out, pool, temperature: float, chunk: int | None = None,
                            detached: bool = False, flush: bool = True) -> torch.Tensor:
    """Gradient w.r.t. ``x`` (N, C, H, W) or (C, H, W) of the softmax pool, given the hard max pool ``hard`` of ``x``
    and the gradient ``grad_out`` w.r.t. the pool's output (both (..., H_out, W_out)); ``pool`` = (kernel_size,
    stride, padding, dilation, ceil_mode) as for ``F.max_pool2d``.

    d/dx_k sum_j x_j s_j = s_k (1 + (x_k - p) / T), with p = sum_j x_j s_j the soft pool and s_k = e_k / Z its
    weights, e_k = exp(u_k), u_k = (x_k - max) / T stabilised by the window max the forward pass found; x_k - p is
    formed as T (u_k - (p - max) / T): at small T, x_k / T - p / T would cancel catastrophically.

    With ``detached``, the softmax weights are held constant (the follow-up paper's variant): the gradient is
    ``s_k`` times the incoming one, without the ``(1 + (x_k - p) / T)`` factor.

    ``chunk``: at most about this many window slots (elements of one temporary) at a time, whole (sample, channel)
    planes each (None: all at once). ``flush``: tiny softmax weights set to 0 (:func:`surrogates.flush_tiny_`).
    """
    (h, w), (oh, ow) = x.shape[-2:], hard.shape[-2:]
    kh, kw = _pair(pool[0])
    planes, hard, grad_out = x.reshape(-1, 1, h, w), hard.reshape(-1, 1, oh * ow), grad_out.reshape(-1, 1, oh * ow)
    n = planes.shape[0]
    step = n if chunk is None else max(1, chunk // max(1, kh * kw * oh * ow))
    if step >= n:
        return _backward_planes(planes, hard, grad_out, pool, temperature, detached, flush).view(x.shape)
    grad = torch.empty_like(planes)
    for i in range(0, n, step):
        grad[i:i + step] = _backward_planes(planes[i:i + step], hard[i:i + step], grad_out[i:i + step], pool,
                                            temperature, detached, flush)
    return grad.view(x.shape)


def _backward_planes(x, hard, grad_out, pool, temperature: float, detached: bool, flush: bool) -> torch.Tensor:
    """:func:`softmax_pool2d_backward` for a (P, 1, H, W) stack of planes, ``hard`` and ``grad_out`` (P, 1, L) with
    L = H_out W_out windows: one ``unfold`` makes the slot-major (P, k*k, L) tensor of every window, everything
    between it and the ``fold`` back is elementwise or a sum over slots. Ten tensor operations, 15 with padding,
    chunk-independent."""
    inv_t = 1.0 / temperature
    kernel, stride, padding, dilation, ceil_mode = pool
    kernel, stride, padding, dilation = _pair(kernel), _pair(stride or kernel), _pair(padding), _pair(dilation)
    padded, geometry = pad_for_windows(x, kernel, stride, padding, dilation, ceil_mode)
    u = F.unfold(padded, kernel, dilation=dilation, stride=stride).sub_(hard).mul_(inv_t)  # (x_k - max) / T
    if flush:
        e = exp_flushed_(u)
    else:  # padding at small T gives u = -inf, and u e must be 0 there, not NaN
        e = (u.clamp_min_(torch.finfo(u.dtype).min) if any(geometry["pads"]) else u).exp()
    total = e.sum(1, keepdim=True)
    a = grad_out / total  # the incoming gradient over Z, per window
    if detached:
        return _fold(e.mul_(a), padded, x, geometry)
    ue = u.mul_(e)
    r = ue.sum(1, keepdim=True).div_(total)  # (p - max) / T
    # s_k (1 + u_k - r) g = a u_k e_k + e_k a (1 - r)
    return _fold(ue.mul_(a).addcmul_(e, torch.addcmul(a, a, r, value=-1)), padded, x, geometry)


def _fold(columns: torch.Tensor, padded: torch.Tensor, x: torch.Tensor, geometry) -> torch.Tensor:
    """Sum the (P, k*k, L) window slots back onto the (P, 1, H, W) planes of ``x``; slots in padding are dropped."""
    grid = F.fold(columns, padded.shape[-2:], geometry["kernel"], dilation=geometry["dilation"],
                  stride=geometry["stride"])
    return crop_padding(grid, geometry) if any(geometry["pads"]) else grid
