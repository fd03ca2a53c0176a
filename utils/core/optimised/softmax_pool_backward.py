"""The softmax pool's gradient for :class:`~utils.core.rules.max_pool.SoftMaxPool2d`, computed per device.

On a GPU the backward gathers every window slot with one ``unfold`` and scatters the gradient back with one
``fold``, a fixed number of kernels per call; on a CPU it slices slot by slot, a few cache-sized planes at a time,
which is faster there (:mod:`~utils.core.policy`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..torch_private import pair
from .flush import _exponent_floor, exp_flushed_, flush_tiny_


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
    k, s, p, d = pair(kernel_size), pair(stride if stride else kernel_size), pair(padding), pair(dilation)
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


def softmax_pool2d_backward(x, hard, grad_out, pool, temperature: float, chunk: int | None = None,
                            detached: bool = False, flush: bool = True, gather: str = "unfold") -> torch.Tensor:
    """Gradient w.r.t. ``x`` (N, C, H, W) or (C, H, W) of the softmax pool, given the hard max pool ``hard`` of ``x``
    and the gradient ``grad_out`` w.r.t. the pool's output (both (..., H_out, W_out)); ``pool`` = (kernel_size,
    stride, padding, dilation, ceil_mode) as for ``F.max_pool2d``.

    d/dx_k sum_j x_j s_j = s_k (1 + (x_k - p) / T), with p = sum_j x_j s_j the soft pool and s_k = e_k / Z its
    weights, e_k = exp(u_k), u_k = (x_k - max) / T stabilised by the window max the forward pass found; x_k - p is
    formed from x_k - max and p - max: at small T, x_k / T - p / T would cancel catastrophically.

    With ``detached``, the softmax weights are held constant (the follow-up paper's variant): the gradient is
    ``s_k`` times the incoming one, without the ``(1 + (x_k - p) / T)`` factor.

    ``chunk``: at most about this many window slots (elements of one temporary) at a time, whole (sample, channel)
    planes each (None: all at once). ``flush``: tiny softmax weights set to 0 (:func:`~utils.core.optimised.flush.flush_tiny_`).
    ``gather``: ``"unfold"`` (one ``unfold`` and one ``fold`` per chunk: a fixed number of operations, for GPUs) or
    ``"slices"`` (a strided slice per window slot into slot-major temporaries: faster on CPUs).
    """
    (h, w), (oh, ow) = x.shape[-2:], hard.shape[-2:]
    kh, kw = pair(pool[0])
    planes, hard, grad_out = x.reshape(-1, 1, h, w), hard.reshape(-1, 1, oh, ow), grad_out.reshape(-1, 1, oh, ow)
    backward = {"unfold": _backward_unfold, "slices": _backward_slices}[gather]
    n = planes.shape[0]
    step = n if chunk is None else max(1, chunk // max(1, kh * kw * oh * ow))
    if step >= n:
        return backward(planes, hard, grad_out, pool, temperature, detached, flush).view(x.shape)
    grad = torch.empty_like(planes)
    for i in range(0, n, step):
        backward(planes[i:i + step], hard[i:i + step], grad_out[i:i + step], pool, temperature, detached, flush,
                 out=grad[i:i + step])
    return grad.view(x.shape)


def _geometry(pool):
    kernel, stride, padding, dilation, ceil_mode = pool
    return pair(kernel), pair(stride or kernel), pair(padding), pair(dilation), ceil_mode


def _backward_unfold(x, hard, grad_out, pool, temperature: float, detached: bool, flush: bool, out=None):
    """:func:`softmax_pool2d_backward` for a (P, 1, H, W) stack of planes, ``hard`` and ``grad_out`` (P, 1, H_out,
    W_out): one ``unfold`` makes the (P, k*k, L) tensor of all L windows' slots, everything between it and the
    ``fold`` back is elementwise or a sum over slots. About 15 tensor operations, whatever the sizes."""
    inv_t = 1.0 / temperature
    kernel, stride, padding, dilation, ceil_mode = _geometry(pool)
    hard, grad_out = hard.flatten(2), grad_out.flatten(2)
    padded, geometry = pad_for_windows(x, kernel, stride, padding, dilation, ceil_mode)
    u = F.unfold(padded, kernel, dilation=dilation, stride=stride).sub_(hard).mul_(inv_t)  # (x_k - max) / T
    if flush:  # raising exponents whose exp is flushed anyway changes no weight (see exp_flushed_)
        e = flush_tiny_(u.clamp_min_(_exponent_floor(u.dtype)).exp())
    else:  # padding at small T gives u = -inf, and u e must be 0 there, not NaN
        e = (u.clamp_min_(torch.finfo(u.dtype).min) if any(geometry["pads"]) else u).exp()
    total = e.sum(1, keepdim=True)
    a = grad_out / total  # the incoming gradient over Z, per window
    if detached:
        columns = e.mul_(a)
    else:
        ue = u.mul_(e)
        r = ue.sum(1, keepdim=True).div_(total)  # (p - max) / T
        # s_k (1 + u_k - r) g = a u_k e_k + e_k a (1 - r)
        columns = ue.mul_(a).addcmul_(e, torch.addcmul(a, a, r, value=-1))
    # sum the slots back onto the planes; slots in padding are dropped
    grid = F.fold(columns, padded.shape[-2:], kernel, dilation=dilation, stride=stride)
    grid = crop_padding(grid, geometry) if any(geometry["pads"]) else grid
    return grid if out is None else out.copy_(grid)


def _backward_slices(x, hard, grad_out, pool, temperature: float, detached: bool, flush: bool, out=None):
    """:func:`softmax_pool2d_backward` for a (P, 1, H, W) stack of planes, all at once, written into ``out``.

    The window slots are gathered into one slot-major tensor (k*k, P, 1, H_out, W_out), so that everything between
    the gather and the scatter back runs over contiguous memory: strided views of the input, with a window of 2 as
    the innermost stride, made each elementwise pass several times slower on CPU. A few operations per window slot.
    """
    out = torch.empty_like(x) if out is None else out
    inv_t = 1.0 / temperature
    kernel, stride, padding, dilation, ceil_mode = _geometry(pool)
    (kh, kw), (oh, ow) = kernel, hard.shape[-2:]
    d = x.new_empty((kh * kw, *hard.shape))  # x_k - max, slot by slot
    tiles = (stride == kernel and padding == (0, 0) and dilation == (1, 1)
             and oh * kh <= x.shape[-2] and ow * kw <= x.shape[-1])
    if tiles:  # windows tile the input (VGG's pools): one permuted view gathers every slot at once
        torch.sub(_tiles(x, kernel, (oh, ow)).permute(3, 5, 0, 1, 2, 4), hard, out=d.view(kh, kw, *hard.shape))
    else:
        padded, geometry = pad_for_windows(x, kernel, stride, padding, dilation, ceil_mode)
        slots = window_slots(geometry)
        for k, index in enumerate(slots):
            torch.sub(padded[index], hard, out=d[k])

    e = torch.mul(d, inv_t)
    e = exp_flushed_(e) if flush else e.exp_()  # padded slots: d finite, so d e = 0
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
    return out


def _tiles(t: torch.Tensor, kernel, out_size) -> torch.Tensor:
    """View of ``t`` (P, 1, H, W) as (P, 1, H_out, kh, W_out, kw): window (i, j), slot (a, b) at [..., i, a, j, b]."""
    (kh, kw), (oh, ow) = kernel, out_size
    return t[..., :oh * kh, :ow * kw].unflatten(-1, (ow, kw)).unflatten(-3, (oh, kh))
