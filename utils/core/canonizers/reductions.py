"""Hard max and min reductions: a max-pool by another name, so they take the max-pool rule.

``x.amax(dim=(2, 3))`` computes what ``AdaptiveMaxPool2d(1)`` does, and ``max(x, dim).values`` and ``topk(x, 1)`` a
max over one dimension; each back-propagates like the softmax pool over the reduced elements
(:class:`~utils.core.rules.max_pool.SoftMaxReduce`), at the max-pool rule's temperature and variant; with the rule off
(``pool_temperature=None``) they keep their hard backward. Min reductions (``amin``, ``min(x, dim)``,
``topk(x, 1, largest=False)``) are the mirror image, ``min(x) = -max(-x)``.

Named as having no rule (strict raises; otherwise the exact backward): ``topk`` with k > 1 and the other order
statistics (``sort``, ``kthvalue``, ``median``, ``mode``, ``quantile``, ``cummax``, ``aminmax``, ...) of a tensor
that needs a gradient.
"""
from __future__ import annotations

import torch

from .. import interception as calls
from ..rules.max_pool import SoftMaxReduce


def _dims(dim, ndim: int) -> tuple[int, ...]:
    """``dim`` (an int, a sequence, or None / () for all) as sorted non-negative dimensions."""
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted({d % max(ndim, 1) for d in dims}))


class MaxReductions:
    """Handlers of the reductions above, for :class:`~utils.core.mode.ExcitationMode` (which sets ``settings`` and
    ``unsupported``). ``torch.max`` and ``torch.min`` of one tensor come here from the disguises' handler of
    ``maximum`` / ``minimum`` (:meth:`reduce`)."""

    def reduction_handlers(self) -> dict:
        handlers = {fn: self._amax for fn in (*calls.AMAX_FUNCTIONS, *calls.AMIN_FUNCTIONS)}
        handlers.update({fn: self._topk for fn in calls.TOPK_FUNCTIONS})
        handlers.update({fn: self._no_rule for fn in calls.ORDER_STATISTIC_FUNCTIONS})
        return handlers

    def _soften(self, func, args, kwargs, dims, keepdim, sign):
        x = args[0]
        rule = self.settings.rule("max_pool")
        if rule is None:
            return func(*args, **kwargs)
        made = []

        def run(t):  # the call as made; its result's type kept, to give back the same named tuple
            out = func(t, *args[1:], **kwargs)
            made.append(type(out))
            return out

        out = SoftMaxReduce.apply(x, run, dims, keepdim, rule.temperature, rule.variant == "detached", sign)
        return out if isinstance(out, torch.Tensor) else made[0](out)

    def _amax(self, func, args, kwargs):
        x = args[0]
        if not _grad(x) or "out" in kwargs:
            return func(*args, **kwargs)
        dims = _dims(calls.bound_argument(args, kwargs, 1, "dim", ()), x.dim())
        keepdim = bool(calls.bound_argument(args, kwargs, 2, "keepdim", False))
        return self._soften(func, args, kwargs, dims, keepdim, 1.0 if func in calls.AMAX_FUNCTIONS else -1.0)

    def reduce(self, func, args, kwargs, sign: float):
        """``max(x)``, ``max(x, dim, keepdim)`` (or ``min``): the reduction forms of ``torch.max`` / ``torch.min``."""
        x = args[0]
        if not _grad(x) or "out" in kwargs:
            return func(*args, **kwargs)
        dim = calls.bound_argument(args, kwargs, 1, "dim")
        if dim is None:
            return self._soften(func, args, kwargs, tuple(range(x.dim())), False, sign)
        keepdim = bool(calls.bound_argument(args, kwargs, 2, "keepdim", False))
        return self._soften(func, args, kwargs, _dims(dim, x.dim()), keepdim, sign)

    def _topk(self, func, args, kwargs):
        x = args[0]
        if not _grad(x) or "out" in kwargs:
            return func(*args, **kwargs)
        k = calls.bound_argument(args, kwargs, 1, "k")
        dim = calls.bound_argument(args, kwargs, 2, "dim", -1)
        largest = calls.bound_argument(args, kwargs, 3, "largest", True)
        if k != 1:
            return self.unsupported(f"topk(k={k}) (only k=1, a max, has the max-pool rule)", func, args, kwargs)
        return self._soften(func, args, kwargs, _dims(dim, x.dim()), True, 1.0 if largest else -1.0)

    def _no_rule(self, func, args, kwargs):
        if any(_grad(a) for a in args[:1]):
            return self.unsupported(f"{calls.call_name(func)} (an order statistic)", func, args, kwargs)
        return func(*args, **kwargs)


def _grad(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad and torch.is_grad_enabled()
