"""Excitation rules: how each nonlinearity's backward pass changes. The forward pass is always the model's own.

A rule is a small object that carries its own parameters and names the functions it replaces
(``functions``); :mod:`utils.core.settings` collects one rule per ``kind`` and
:class:`utils.core.mode.ExcitationMode` routes every call of those functions to ``rule.apply(ctx, ...)``, ``ctx``
a :class:`RuleContext`: all a rule sees of the forward call. Each rule's backward is that of a softened stand-in,
straight-through.

One convention for every kind (:func:`utils.core.settings.make_settings`): its keyword takes a temperature T, or
``None`` for "off", the function's own exact backward (``rules={kind: None}`` is the same); ``"relu"`` means the
ReLU's temperature.

============  ===================================================================  ==========================  =======
kind          backward                                                             keyword                     default
============  ===================================================================  ==========================  =======
relu          ``gate(z / T)`` instead of ``1[z > 0]``; also ``clamp(min=0)``,      ``temperature``             0.3
              ``maximum(z, 0)``, ``where(z > 0, z, 0)``, ``z * (z > 0)``, ...
max_pool      softmax-pool gradient (``pool="soft"``) or with its weights held     ``pool_temperature``        "relu"
              (``"detached"``); 2-D and adaptive 2-D pools, ``amax``,
              ``max(z, dim)``, ``topk(z, 1)`` (min ones mirrored). Off:
              also ``pool="hard"``, ``soft_maxpool=False``
silu          ``sigmoid(z / T)``: ``z * sigmoid(z / T)`` with the gate held        ``silu_temperature``        1.6
gelu          ``Phi(z / T)`` (standard normal CDF)                                 ``gelu_temperature``        1.0
layer_norm    the layer norm's gradient with its mean and variance held            ``layer_norm``              "held"
              (``"held"``). Off: also ``"exact"``
attention     the gradient of ``softmax(Q K^T / (sqrt(d) T)) V``                   ``attention_temperature``   1.5
leaky_relu    ``a + (1 - a) sigmoid(z / T)``                                       ``leaky_relu_temperature``  "relu"
hardtanh      ``sigmoid((z - lo) / T) sigmoid((hi - z) / T)``; also ReLU6 and      ``hardtanh_temperature``    "relu"
              ``clamp(z, lo, hi)``, one bound infinite when absent
hardswish     ``hardsigmoid(z / T)``: ``z * hardsigmoid(z)`` with the gate held    ``hardswish_temperature``   1.0
============  ===================================================================  ==========================  =======
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from . import interception as calls
from .gates import Gate, check_temperature, get_gate, normal_cdf_gate, sigmoid_gate
from .policy import policy_for
from .torch_private import pair
from .pooling import SoftMaxPool2d
from .surrogates import (HeldLayerNorm, SoftGate, SoftGateReLU, SoftGateReLUAfterBatchNorm, StraightThrough,
                         flush_tiny_, gate_of_scaled_)

POOL_VARIANTS = ("soft", "detached", "hard")


def needs_grad(*tensors) -> bool:
    """Whether a backward pass can reach any of ``tensors`` (else a rule has nothing to change)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


class RuleContext(NamedTuple):
    """All a rule may ask of the forward call it runs in (:class:`~utils.core.mode.ExcitationMode` makes one)."""

    recipe_of: Callable[[torch.Tensor], object]
    """``z`` -> how to recompute ``z`` from an inference-mode batch norm (:class:`~utils.core.mode.Recipe`), or None."""
    remember_attention: Callable[[torch.Tensor, torch.Tensor, float], None]
    """``(weights, logits, T)``: ``weights`` are ``softmax(logits)``, so that ``weights @ V`` takes the rule too."""
    unsupported: Callable[[str, Callable, tuple, dict], object]
    """``(name, func, args, kwargs)``: a call the rule cannot soften; runs it as it is (strict: names it)."""
    watch: Callable[[tuple, torch.Tensor], None]
    """``(addends, out)``: ``out`` came from a recipe with these addends; before one of them changes in place, the
    mode has ``out``'s node keep its gate (:meth:`~utils.core.surrogates.SoftGateReLUAfterBatchNorm.keep_gate`)."""


class Rule:
    """The backward pass of some functions, changed; forward bit for bit the function's own. ``apply(ctx, func, args,
    kwargs)`` runs one call, ``ctx`` a :class:`RuleContext`."""

    kind: ClassVar[str]
    functions: ClassVar[tuple[Callable, ...]] = ()

    def apply(self, ctx, func, args: tuple, kwargs: dict):
        raise NotImplementedError

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def scaled_gate(gate: Gate, temperature: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z -> gate(z / T)`` as a fresh tensor, tiny gates flushed to 0 where the device's policy says so (see
    :func:`surrogates.flush_tiny_`)."""
    inv_t = 1.0 / temperature
    return lambda z: gate_of_scaled_(z * inv_t, gate, policy_for(z.device).flush_subnormals)


class ReLURule(Rule):
    """ReLU: ``gate(z / T)`` in place of ``1[z > 0]``. A ReLU right after an inference-mode batch norm (plus residual
    addends) recomputes its gate in the backward pass instead of saving it (the mode keeps the recipes)."""

    kind = "relu"
    functions = tuple(calls.RELU_FUNCTIONS)

    def __init__(self, temperature: float = 0.3, gate: str | Gate = "sigmoid"):
        self.temperature = check_temperature(temperature)
        self.gate = get_gate(gate)

    def apply(self, ctx, func, args, kwargs):
        z = args[0]
        if not needs_grad(z):
            return func(*args, **kwargs)
        inplace = bool(calls.bound_argument(args, kwargs, 1, "inplace", calls.RELU_FUNCTIONS[func]))
        recipe = ctx.recipe_of(z)
        if recipe is not None:
            bn = recipe.batch_norm
            out = SoftGateReLUAfterBatchNorm.apply(
                z, bn["input"], bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], float(bn["eps"]),
                self.temperature, self.gate, inplace, *recipe.addends)
            if recipe.addends:
                ctx.watch(recipe.addends, out)
            return out
        return SoftGateReLU.apply(z, self.temperature, self.gate, inplace)

    def disguised(self, z: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], inplace: bool,
                  scale: float = 1.0):
        """A ReLU written another way (``clamp(min=0)``, ...): its own forward ``run(z)``, the ReLU rule's backward;
        ``scale`` times a ReLU (``z + z.abs()`` is twice one) takes ``scale`` times the gate."""
        gate = scaled_gate(self.gate, self.temperature)
        return SoftGate.apply(z, run, gate if scale == 1.0 else (lambda t: gate(t).mul_(scale)), inplace)


_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_POOL_DEFAULTS = dict(stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)


class MaxPoolRule(Rule):
    """2-D max-pools (and adaptive ones whose windows tile the input): the softmax pool's gradient at T, straight
    through (``"soft"``); the same with the softmax weights held constant (``"detached"``, the follow-up paper's
    variant: the gradient is split by the weights); or the hard max's own (``"hard"``).

    At tied maxima (e.g. several zeros after a ReLU) the soft variants split the gradient evenly among the tied
    slots for every T, while the hard pool gives it all to one of them: there T -> 0 does not recover the
    gradient; choose ``"hard"`` to keep the hard pool's choice."""

    kind = "max_pool"
    functions = (*calls.MAXPOOL2D_FUNCTIONS, *calls.ADAPTIVE_MAXPOOL2D_FUNCTIONS)

    def __init__(self, temperature: float = 0.3, variant: str = "soft"):
        if variant not in POOL_VARIANTS:
            raise ValueError(f"pool must be one of {POOL_VARIANTS}, got {variant!r}")
        self.temperature = check_temperature(temperature, "pool_temperature")
        self.variant = variant

    def apply(self, ctx, func, args, kwargs):
        x = args[0]
        if self.variant == "hard" or not needs_grad(x):
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


class GatedRule(Rule):
    """An elementwise activation ``z * g(z)`` whose backward is a gate of ``z`` alone (the gate held constant)."""

    gate: Gate
    default_temperature: float = 1.0

    def __init__(self, temperature: float | None = None):
        temperature = self.default_temperature if temperature is None else temperature
        self.temperature = check_temperature(temperature, f"{self.kind}_temperature")

    def gate_of(self, func, args, kwargs) -> Callable[[torch.Tensor], torch.Tensor]:
        return scaled_gate(type(self).gate, self.temperature)

    def apply(self, ctx, func, args, kwargs):
        z = args[0]
        if not needs_grad(z):
            return func(*args, **kwargs)
        where = _INPLACE.get(func, False)
        inplace = where if isinstance(where, bool) else bool(calls.bound_argument(args, kwargs, *where, False))
        run = functools.partial(_call_with_first, func, args[1:], kwargs)
        return SoftGate.apply(z, run, self.gate_of(func, args, kwargs), inplace)


_INPLACE = {F.silu: (1, "inplace"), F.hardswish: (1, "inplace"), F.relu6: (1, "inplace"),
            F.leaky_relu: (2, "inplace"), F.hardtanh: (3, "inplace"), F.leaky_relu_: True, F.hardtanh_: True}
"""Where an activation says it runs in place: (position, keyword), or always (True); GELU never does."""


def _call_with_first(func, rest, kwargs, z):
    return func(z, *rest, **kwargs)


class SiLURule(GatedRule):
    """SiLU ``z * sigmoid(z)``: backward ``sigmoid(z / T)`` (T = 1.6), as for the gated linear map with the gate
    held constant."""

    kind = "silu"
    functions = calls.SILU_FUNCTIONS
    gate = staticmethod(sigmoid_gate)
    default_temperature = 1.6


class GELURule(GatedRule):
    """GELU ``z * Phi(z)`` (also its tanh approximation): backward ``Phi(z / T)`` (T = 1.0)."""

    kind = "gelu"
    functions = calls.GELU_FUNCTIONS
    gate = staticmethod(normal_cdf_gate)
    default_temperature = 1.0


class HardswishRule(GatedRule):
    """Hardswish ``z * hardsigmoid(z)``: backward ``hardsigmoid(z / T)`` (T = 1.0), the gate held constant."""

    kind = "hardswish"
    functions = calls.HARDSWISH_FUNCTIONS
    gate = staticmethod(lambda u: F.hardsigmoid(u))
    default_temperature = 1.0


class LeakyReLURule(GatedRule):
    """LeakyReLU with slope ``a``: backward ``a + (1 - a) sigmoid(z / T)`` in place of ``a + (1 - a) 1[z > 0]``."""

    kind = "leaky_relu"
    functions = tuple(calls.LEAKY_RELU_FUNCTIONS)

    def __init__(self, temperature: float = 0.3):
        super().__init__(temperature)

    def gate_of(self, func, args, kwargs):
        a = float(calls.bound_argument(args, kwargs, 1, "negative_slope", 0.01))
        inv_t = 1.0 / self.temperature
        return lambda z: flush_tiny_(torch.sigmoid(z * inv_t).mul_(1.0 - a).add_(a))


class HardtanhRule(GatedRule):
    """Hardtanh (and ReLU6 = hardtanh(0, 6)): backward ``sigmoid((z - lo) / T) * sigmoid((hi - z) / T)`` in place
    of ``1[lo < z < hi]``."""

    kind = "hardtanh"
    functions = tuple(calls.HARDTANH_FUNCTIONS)

    def __init__(self, temperature: float = 0.3):
        super().__init__(temperature)

    def gate_of(self, func, args, kwargs):
        if func is F.relu6:
            return self.gate_between(0.0, 6.0)
        return self.gate_between(float(calls.bound_argument(args, kwargs, 1, "min_val", -1.0)),
                         float(calls.bound_argument(args, kwargs, 2, "max_val", 1.0)))

    def gate_between(self, lo: float, hi: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """``z -> sigmoid((z - lo) / T) * sigmoid((hi - z) / T)``; an infinite bound's factor is 1."""
        inv_t = 1.0 / self.temperature
        return lambda z: flush_tiny_(torch.sigmoid((z - lo) * inv_t).mul_(torch.sigmoid((hi - z) * inv_t)))

    def disguised(self, z: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], inplace: bool, lo: float,
                  hi: float):
        """``clamp(z, lo, hi)`` (or another spelling, ``run(z)``, of it): its own forward, this rule's backward."""
        return SoftGate.apply(z, run, self.gate_between(lo, hi), inplace)


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


RULES: dict[str, type[Rule]] = {cls.kind: cls for cls in (
    ReLURule, MaxPoolRule, SiLURule, GELURule, LayerNormRule, AttentionRule, LeakyReLURule, HardtanhRule,
    HardswishRule)}
"""Every kind of rule, by name."""
