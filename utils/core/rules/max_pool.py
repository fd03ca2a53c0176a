"""The paper's max-pool rule: forward ``F.max_pool2d`` bit for bit, backward the gradient of the softmax pool.

The softmax pool of a window is ``sum_i x_i softmax(x / T)_i`` (:func:`softmax_pool2d`); :class:`SoftMaxPool2d`
back-propagates its gradient straight-through (``hard.detach() + (soft - soft.detach())``) without building
``soft`` in the forward pass. Its backward (:mod:`utils.core.optimised.softmax_pool_backward`) is computed per
device policy: one ``unfold`` / ``fold`` on a GPU, cache-sized slices on a CPU, tested equal to each other and to
the autograd gradient of :func:`softmax_pool2d`. Max (and min) reductions (``amax``, ``max(dim)``, ``topk(1)``)
take the same rule over the reduced elements (:class:`SoftMaxReduce`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import interception as calls
from ..gates import check_temperature
from ..optimised.flush import exp_flushed_
from ..optimised.softmax_pool_backward import pad_for_windows, softmax_pool2d_backward, window_slots
from ..policy import policy_for
from ..surrogates import refuse_create_graph
from ..torch_private import pair
from .base import Rule, needs_grad


def softmax_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   temperature: float = 0.3) -> torch.Tensor:
    """The softmax pool ``sum_i x_i softmax(x / T)_i`` over max-pool windows; differentiable.

    Same windows as ``F.max_pool2d`` with the same arguments (padded slots take no weight). Tends to the max pool
    as T -> 0 and to the mean of each window as T -> inf.

    Args:
        x: (N, C, H, W).
        kernel_size, stride, padding, dilation, ceil_mode: as for ``F.max_pool2d``.
        temperature: T > 0 (default 0.3).

    Returns:
        (N, C, H_out, W_out), the grid ``F.max_pool2d`` gives.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from utils import softmax_pool2d
        >>> x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
        >>> softmax_pool2d(x, 2, temperature=1e-3), F.max_pool2d(x, 2)
        (tensor([[[[3.]]]]), tensor([[[[3.]]]]))
        >>> softmax_pool2d(x, 2, temperature=1e6)  # the window's mean
        tensor([[[[1.5000]]]])
    """
    padded, geometry = pad_for_windows(x, kernel_size, stride, padding, dilation, ceil_mode)
    windows = torch.stack([padded[index] for index in window_slots(geometry)])
    return (windows * torch.softmax(windows / temperature, dim=0)).sum(0)


class SoftMaxPool2d(torch.autograd.Function):
    """``F.max_pool2d`` whose backward is the softmax pool's gradient at temperature T: the paper's max-pool rule.

    Call it as ``SoftMaxPool2d.apply(x, temperature, kernel_size, stride, padding, dilation, ceil_mode, detached)``.

    Args:
        x: (N, C, H, W) or (C, H, W).
        temperature: T > 0.
        kernel_size, stride, padding, dilation, ceil_mode: as for ``F.max_pool2d`` (stride given).
        detached: hold the softmax weights constant (the ``"detached"`` variant).

    Returns:
        ``F.max_pool2d(x, ...)``, bit for bit.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from utils import SoftMaxPool2d, softmax_pool2d
        >>> x = torch.randn(1, 2, 4, 4, requires_grad=True)
        >>> y = SoftMaxPool2d.apply(x, 0.3, 2, 2, 0, 1, False)
        >>> torch.equal(y, F.max_pool2d(x, 2))
        True
        >>> (g,) = torch.autograd.grad(y.sum(), x)
        >>> torch.allclose(g, torch.autograd.grad(softmax_pool2d(x, 2, temperature=0.3).sum(), x)[0], atol=1e-6)
        True
    """

    @staticmethod
    def forward(ctx, x, temperature, kernel_size, stride, padding, dilation, ceil_mode, detached: bool = False):
        out = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(x, out)
        policy = policy_for(x.device)
        ctx.temperature, ctx.detached, ctx.flush = temperature, detached, policy.flush_subnormals
        ctx.chunk, ctx.gather = policy.pool_chunk_slots(x.device, x.element_size()), policy.pool_gather
        ctx.pool = (kernel_size, stride, padding, dilation, ceil_mode)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        refuse_create_graph()
        x, hard = ctx.saved_tensors
        grad = softmax_pool2d_backward(x, hard, grad_out, ctx.pool, ctx.temperature, chunk=ctx.chunk,
                                       detached=ctx.detached, flush=ctx.flush, gather=ctx.gather)
        return grad, None, None, None, None, None, None, None


POOL_VARIANTS = ("soft", "detached")
_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_POOL_DEFAULTS = dict(stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)


class MaxPoolRule(Rule):
    """2-D max-pools (and adaptive ones whose windows tile the input): the softmax pool's gradient at T, straight
    through (``"soft"``); the same with the softmax weights held constant (``"detached"``, the follow-up paper's
    variant: the gradient is split by the weights). ``pool_temperature=None`` keeps the hard max's own gradient.

    At tied maxima (e.g. several zeros after a ReLU) the soft variants split the gradient evenly among the tied
    slots for every T, while the hard pool gives it all to one of them: there T -> 0 does not recover the
    gradient; ``pool_temperature=None`` keeps the hard pool's choice."""

    kind = "max_pool"
    functions = (*calls.MAXPOOL2D_FUNCTIONS, *calls.ADAPTIVE_MAXPOOL2D_FUNCTIONS)

    def __init__(self, temperature: float = 0.3, variant: str = "soft"):
        if variant not in POOL_VARIANTS:
            raise ValueError(f"pool must be one of {POOL_VARIANTS}, got {variant!r}")
        self.temperature = check_temperature(temperature, "pool_temperature")
        self.variant = variant

    def apply(self, ctx, func, args, kwargs):
        x = args[0]
        if not needs_grad(x):
            return func(*args, **kwargs)
        if func in calls.ADAPTIVE_MAXPOOL2D_FUNCTIONS:
            return self._adaptive(ctx, func, args, kwargs)
        bound = {**_POOL_DEFAULTS, **dict(zip(_POOL_ARGS, args[1:])), **kwargs}
        if bound["return_indices"]:
            return ctx.unsupported("max_pool2d(return_indices=True)", func, args, kwargs)
        stride = bound["stride"] if bound["stride"] not in (None, []) else bound["kernel_size"]
        return SoftMaxPool2d.apply(x, self.temperature, bound["kernel_size"], stride, bound["padding"],
                                   bound["dilation"], bool(bound["ceil_mode"]), self.variant == "detached")

    def _adaptive(self, ctx, func, args, kwargs):
        x = args[0]
        size = pair(calls.bound_argument(args, kwargs, 1, "output_size"))
        if calls.bound_argument(args, kwargs, 2, "return_indices", False):
            return ctx.unsupported("adaptive_max_pool2d(return_indices=True)", func, args, kwargs)
        h, w = x.shape[-2:]
        size = tuple(d if o is None else o for o, d in zip(size, (h, w)))
        if h % size[0] or w % size[1]:
            return ctx.unsupported(f"adaptive_max_pool2d from {h}x{w} to {size[0]}x{size[1]} (overlapping windows)",
                                    func, args, kwargs)
        kernel = (h // size[0], w // size[1])
        out = SoftMaxPool2d.apply(x, self.temperature, kernel, kernel, 0, 1, False, self.variant == "detached")
        return out


class SoftMaxReduce(torch.autograd.Function):
    """A hard max (or min) reduction over ``dims`` (``amax``, ``max(dim)``, ``topk(1)``, ...), its forward ``run(x)``
    bit for bit; backward the softmax pool's over the same elements, as :class:`SoftMaxPool2d` for a window that
    covers ``dims`` (``amax(dim=(2, 3))`` back-propagates like ``AdaptiveMaxPool2d(1)``). A min reduction is the
    mirror image, ``min(x) = -max(-x)``: weights ``softmax(-x / T)``. ``run`` returns the values, or a tuple whose
    first item is the values (the rest, indices, are not differentiable)."""

    @staticmethod
    def forward(ctx, x, run, dims: tuple, keepdim: bool, temperature: float, detached: bool, sign: float):
        out = run(x)
        values = out if isinstance(out, torch.Tensor) else out[0]
        ctx.save_for_backward(x, values)
        ctx.dims, ctx.keepdim, ctx.temperature, ctx.detached, ctx.sign = dims, keepdim, temperature, detached, sign
        if isinstance(out, torch.Tensor):
            return out
        ctx.mark_non_differentiable(*out[1:])
        return tuple(out)

    @staticmethod
    def backward(ctx, grad_values, *unused):
        refuse_create_graph()
        x, values = ctx.saved_tensors
        if not ctx.keepdim:
            for d in sorted(ctx.dims):
                values, grad_values = values.unsqueeze(d), grad_values.unsqueeze(d)
        u = (x - values).mul_(ctx.sign / ctx.temperature)  # (x - max) / T <= 0, mirrored for a min
        e = exp_flushed_(u.clone())
        total = e.sum(ctx.dims, keepdim=True)
        if ctx.detached:
            return e.mul_(grad_values / total), None, None, None, None, None, None
        r = (u * e).sum(ctx.dims, keepdim=True).div_(total)  # (p - max) / T
        grad = e.mul_(u.sub_(r).add_(1.0)).mul_(grad_values / total)  # s_k (1 + (x_k - p) / T) g
        return grad, None, None, None, None, None, None
