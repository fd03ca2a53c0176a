"""Attention: the gradient of ``softmax(Q K^T / (sqrt(d) T)) V``, through the weights and through ``V``."""
from __future__ import annotations

import functools
import inspect
import math

import torch
import torch.nn.functional as F

from .. import interception as calls
from ..gates import check_temperature
from ..surrogates import StraightThrough, refuse_create_graph
from .base import Rule, needs_grad


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


class AttentionRule(Rule):
    """Attention: the gradient of ``softmax(Q K^T / (sqrt(d) T)) V`` (T = 1.5), both through the weights and through
    ``V``, whether the model calls ``scaled_dot_product_attention``, ``nn.MultiheadAttention`` or an explicit softmax
    over attention logits followed by ``weights @ V`` (Swin). A softmax whose output is not multiplied by values
    (or not over the last dimension) still gets the backward of ``softmax(logits / T)``."""

    kind = "attention"
    functions = (*calls.SDPA_FUNCTIONS, *calls.MHA_FUNCTIONS, *calls.SOFTMAX_FUNCTIONS)

    def __init__(self, temperature: float = 1.5):
        self.temperature = check_temperature(temperature, "attention_temperature")

    def apply(self, ctx, func, args, kwargs):
        if func in calls.SDPA_FUNCTIONS:
            return self._sdpa(ctx, func, args, kwargs)
        if func in calls.MHA_FUNCTIONS:
            return self._mha(ctx, func, args, kwargs)
        return self._softmax(ctx, func, args, kwargs)

    def _sdpa(self, ctx, func, args, kwargs):
        q, k, v = args[:3]
        if not needs_grad(q, k, v):
            return func(*args, **kwargs)
        rest = dict(zip(("attn_mask", "dropout_p", "is_causal"), args[3:]), **kwargs)
        if rest.get("dropout_p", 0.0):
            return ctx.unsupported("scaled_dot_product_attention with dropout_p > 0", func, args, kwargs)
        scale = rest.pop("scale", None)
        soft_scale = (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale) / self.temperature
        exact = lambda q, k, v: func(q, k, v, *args[3:], **kwargs)  # noqa: E731  (the call as made)
        stand_in = lambda q, k, v: func(q, k, v, **rest, scale=soft_scale)  # noqa: E731
        return StraightThrough.apply(exact, stand_in, q, k, v)

    def _mha(self, ctx, func, args, kwargs):
        bound = _MHA_SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        if a["training"] and a["dropout_p"]:
            return ctx.unsupported("multi_head_attention_forward with dropout in training mode", func, args, kwargs)
        names = [n for n, value in a.items() if isinstance(value, torch.Tensor)]
        if not needs_grad(*(a[n] for n in names)):
            return func(**a)
        e, inv_t = a["embed_dim_to_check"], 1.0 / self.temperature
        # Q = query W_q^T + b_q: scaling W_q and b_q by 1 / T scales the logits Q K^T by 1 / T, nothing else.
        query_weight = "q_proj_weight" if a["use_separate_proj_weight"] else "in_proj_weight"

        def run(scale_queries, *tensors):
            given = dict(a, **dict(zip(names, tensors)))
            if scale_queries:
                w, b = given[query_weight], given["in_proj_bias"]
                given[query_weight] = torch.cat([w[:e] * inv_t, w[e:]]) if w.shape[0] > e else w * inv_t
                if b is not None:
                    given["in_proj_bias"] = torch.cat([b[:e] * inv_t, b[e:]])
            out, weights = func(**given)
            return out if weights is None else (out, weights)

        result = StraightThrough.apply(functools.partial(run, False), functools.partial(run, True),
                                       *(a[n] for n in names))
        return (result, None) if isinstance(result, torch.Tensor) else tuple(result)

    def _softmax(self, ctx, func, args, kwargs):
        logits = args[0]
        if not needs_grad(logits):
            return func(*args, **kwargs)
        dim = calls.bound_argument(args, kwargs, 1, "dim")
        dtype = kwargs.get("dtype", args[3 if func is F.softmax else 2] if len(args) > (3 if func is F.softmax else 2)
                           else None)
        if dim is None or dtype is not None:
            return ctx.unsupported(f"{calls.call_name(func)} without an explicit dim or with a dtype", func, args,
                                   kwargs)
        inv_t = 1.0 / self.temperature
        exact = lambda z: func(z, dim)  # noqa: E731
        stand_in = lambda z: torch.softmax(z * inv_t, dim)  # noqa: E731
        weights = StraightThrough.apply(exact, stand_in, logits)
        if dim in (-1, logits.dim() - 1):
            ctx.remember_attention(weights, logits, self.temperature)
        return weights


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
