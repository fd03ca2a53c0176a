"""One way to intercept a model's calls: a ``TorchFunctionMode`` that routes chosen functions to handlers.

Used by the excitation pullback (:mod:`utils.core.excitation`), the gate recorder
(:mod:`utils.analysis.gating`) and the theory checks (:mod:`utils.analysis.theory`). It sees every *call*: a
module, a module used several times, ``inplace=True``, or a functional call such as DenseNet's final
``F.relu(features, inplace=True)`` (which module hooks or swapping miss). The families below name every spelling
of a call that torch routes through ``__torch_function__``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

Handler = Callable[[Callable, tuple, dict], object]

RELU_FUNCTIONS = {F.relu: False, torch.relu: False, torch.Tensor.relu: False,
                  F.relu_: True, torch.relu_: True, torch.Tensor.relu_: True}
"""Every spelling of a ReLU call -> whether it is in place by default."""
MAXPOOL2D_FUNCTIONS = (F.max_pool2d, torch.max_pool2d)
ADAPTIVE_MAXPOOL2D_FUNCTIONS = (F.adaptive_max_pool2d,)
SILU_FUNCTIONS = (F.silu,)
GELU_FUNCTIONS = (F.gelu,)
LAYER_NORM_FUNCTIONS = (F.layer_norm,)
SDPA_FUNCTIONS = (F.scaled_dot_product_attention,)
SOFTMAX_FUNCTIONS = (F.softmax, torch.softmax, torch.Tensor.softmax)
MATMUL_FUNCTIONS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm)
DROPOUT_FUNCTIONS = (F.dropout,)
LEAKY_RELU_FUNCTIONS = {F.leaky_relu: False, F.leaky_relu_: True}
HARDTANH_FUNCTIONS = {F.hardtanh: False, F.hardtanh_: True, F.relu6: False}
HARDSWISH_FUNCTIONS = (F.hardswish,)
CLAMP_FUNCTIONS = {torch.clamp: False, torch.Tensor.clamp: False, torch.clip: False, torch.Tensor.clip: False,
                   torch.clamp_min: False, torch.Tensor.clamp_min: False, torch.Tensor.clamp_: True,
                   torch.Tensor.clip_: True, torch.Tensor.clamp_min_: True, torch.clamp_: True,
                   torch.clamp_min_: True, torch.clamp_max: False, torch.Tensor.clamp_max: False,
                   torch.Tensor.clamp_max_: True, torch.clamp_max_: True}
"""Clamps -> in place; ``clamp(z, min=0)`` is a ReLU in disguise, ``clamp(z, lo, hi)`` a hardtanh."""
CLAMP_MIN_FUNCTIONS = (torch.clamp_min, torch.Tensor.clamp_min, torch.Tensor.clamp_min_, torch.clamp_min_)
CLAMP_MAX_FUNCTIONS = (torch.clamp_max, torch.Tensor.clamp_max, torch.Tensor.clamp_max_, torch.clamp_max_)
MAXIMUM_FUNCTIONS = (torch.maximum, torch.Tensor.maximum, torch.max, torch.Tensor.max, torch.fmax, torch.Tensor.fmax)
MINIMUM_FUNCTIONS = (torch.minimum, torch.Tensor.minimum, torch.min, torch.Tensor.min, torch.fmin, torch.Tensor.fmin)
AMAX_FUNCTIONS = (torch.amax, torch.Tensor.amax)
AMIN_FUNCTIONS = (torch.amin, torch.Tensor.amin)
TOPK_FUNCTIONS = (torch.topk, torch.Tensor.topk)
ORDER_STATISTIC_FUNCTIONS = tuple(getattr(owner, name) for name in (
    "sort", "msort", "kthvalue", "median", "nanmedian", "mode", "quantile", "nanquantile", "cummax", "cummin",
    "aminmax") for owner in (torch, torch.Tensor) if hasattr(owner, name))
"""Reductions that pick elements by order: a max over some dimensions (amax, max / min with a dim, topk(1)) is a
max-pool; the others have no rule."""
WHERE_FUNCTIONS = (torch.where, torch.Tensor.where)
COMPARE_FUNCTIONS = {
    **dict.fromkeys((torch.gt, torch.Tensor.gt, torch.Tensor.__gt__, torch.greater, torch.Tensor.greater), ">"),
    **dict.fromkeys((torch.ge, torch.Tensor.ge, torch.Tensor.__ge__, torch.greater_equal,
                     torch.Tensor.greater_equal), ">="),
    **dict.fromkeys((torch.lt, torch.Tensor.lt, torch.Tensor.__lt__, torch.less, torch.Tensor.less), "<"),
    **dict.fromkeys((torch.le, torch.Tensor.le, torch.Tensor.__le__, torch.less_equal, torch.Tensor.less_equal),
                    "<="),
}
"""Comparisons -> their operator (``0 < z`` arrives as ``z.__gt__(0)``)."""
MUL_FUNCTIONS = {torch.mul: False, torch.Tensor.mul: False, torch.Tensor.__mul__: False, torch.Tensor.__rmul__: False,
                 torch.multiply: False, torch.Tensor.mul_: True, torch.Tensor.__imul__: True}
"""Products -> in place (``z * (z > 0)`` is a ReLU in disguise)."""
ZEROS_FUNCTIONS = (torch.zeros_like, torch.zeros, torch.Tensor.new_zeros)
CAST_FUNCTIONS = (torch.Tensor.float, torch.Tensor.double, torch.Tensor.half, torch.Tensor.bfloat16, torch.Tensor.to,
                  torch.Tensor.type_as, torch.Tensor.type)
MASKED_FILL_FUNCTIONS = {torch.masked_fill: False, torch.Tensor.masked_fill: False, torch.Tensor.masked_fill_: True}
"""``z.masked_fill(z < 0, 0)`` is a ReLU in disguise."""
ABS_FUNCTIONS = (torch.abs, torch.Tensor.abs, torch.absolute, torch.Tensor.absolute, torch.Tensor.__abs__)
"""``z + z.abs()`` is twice a ReLU in disguise."""
THRESHOLD_FUNCTIONS = {F.threshold: False, F.threshold_: True}
MHA_FUNCTIONS = (F.multi_head_attention_forward,)
"""``nn.MultiheadAttention``'s function: the mode sees this call, not the ``scaled_dot_product_attention`` inside it
(a mode steps aside while it handles a call), so attention has a rule for it too."""


def bound_argument(args: tuple, kwargs: dict, position: int, name: str, default=None):
    """The argument at ``position`` (counting the first tensor as 0) or keyword ``name``, else ``default``."""
    if len(args) > position:
        return args[position]
    return kwargs.get(name, default)


def call_name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


class Interceptor(TorchFunctionMode):
    """Routes calls of the functions in ``handlers`` to ``handler(func, args, kwargs)``; every other call runs as is
    (a subclass may override :meth:`other`). While a handler runs, the interceptor steps aside: the calls the
    handler makes are not seen.

    Push it (``with interceptor:``) around the code whose calls it should see; it is per thread (torch keeps the
    mode stack per thread) and sees nothing once popped.
    """

    def __init__(self, handlers: dict[Callable, Handler] | None = None):
        super().__init__()
        self.handlers = dict(handlers or {})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = self.handlers.get(func)
        if handler is not None:
            return handler(func, args, kwargs)
        return self.other(func, args, kwargs)

    def other(self, func, args, kwargs):
        return func(*args, **kwargs)
