"""Layer norm: the gradient with its mean and variance held constant."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import interception as calls
from ..surrogates import refuse_create_graph, wanted_grads
from .base import Rule, needs_grad


class LayerNormRule(Rule):
    """Layer norm (also torchvision's ``LayerNorm2d``, which calls it): the gradient with its mean and variance held
    constant, ``grad * weight / sqrt(var + eps)`` for the input; the affine parameters' gradients are unchanged."""

    kind = "layer_norm"
    functions = calls.LAYER_NORM_FUNCTIONS

    def apply(self, ctx, func, args, kwargs):
        x = args[0]
        shape = tuple(calls.bound_argument(args, kwargs, 1, "normalized_shape"))
        weight = calls.bound_argument(args, kwargs, 2, "weight")
        bias = calls.bound_argument(args, kwargs, 3, "bias")
        eps = float(calls.bound_argument(args, kwargs, 4, "eps", 1e-5))
        if not needs_grad(x, weight, bias):
            return func(*args, **kwargs)
        return HeldLayerNorm.apply(x, weight, bias, shape, eps)


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
