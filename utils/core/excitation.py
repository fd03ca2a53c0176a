"""``soft_backward``: run a model with excitation-pullback backward passes, forward untouched.

Rather than swapping modules (which misses functional calls such as DenseNet's final
``F.relu(features, inplace=True)``), the model's forward runs under a ``TorchFunctionMode`` that
sees every ReLU and max-pool *call*, whether it comes from a module, a reused module, an in-place
module or a function, and routes it through a surrogate ``autograd.Function`` (one node per call).
The mode is pushed only while this model's forward runs, so two models can be patched at once
with different settings. The registry :data:`SURROGATES` maps each intercepted function to its rule.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .gates import Gate, check_temperature, get_gate
from .surrogates import SoftGateReLU, SoftGateReLUAfterBatchNorm, SoftMaxPool2d


class UnsupportedNonlinearityError(TypeError):
    """The model uses a nonlinearity for which no excitation surrogate is defined."""


def _relu_rule(inplace_default: bool):
    def rule(mode: "ExcitationMode", args, kwargs):
        z = args[0]
        inplace = bool(args[1]) if len(args) > 1 else bool(kwargs.get("inplace", inplace_default))
        recipe = mode.recipe_of(z)
        if recipe is not None:
            bn = recipe.batch_norm
            return SoftGateReLUAfterBatchNorm.apply(
                z, bn["input"], bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], float(bn["eps"]),
                mode.temperature, mode.gate, inplace, *recipe.addends)
        return SoftGateReLU.apply(z, mode.temperature, mode.gate, inplace)
    return rule


_BATCH_NORM_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_BATCH_NORM_DEFAULTS = dict(weight=None, bias=None, training=False, momentum=0.1, eps=1e-5)
_INPLACE_ADDS = (torch.Tensor.__iadd__, torch.Tensor.add_)
_ADDS = (*_INPLACE_ADDS, torch.Tensor.__add__, torch.Tensor.add, torch.add)


_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_POOL_DEFAULTS = dict(stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)


def _max_pool2d_rule(mode: "ExcitationMode", args, kwargs):
    if not mode.soft_maxpool:
        return F.max_pool2d(*args, **kwargs)
    bound = {**_POOL_DEFAULTS, **dict(zip(_POOL_ARGS, args[1:])), **kwargs}
    if bound["return_indices"]:
        return mode.unsupported("max_pool2d(return_indices=True)", F.max_pool2d, args, kwargs)
    stride = bound["stride"] if bound["stride"] not in (None, []) else bound["kernel_size"]
    return SoftMaxPool2d.apply(args[0], mode.pool_temperature, bound["kernel_size"], stride,
                               bound["padding"], bound["dilation"], bool(bound["ceil_mode"]))


RELU_FUNCTIONS = {F.relu: False, torch.relu: False, torch.Tensor.relu: False,
                  F.relu_: True, torch.relu_: True, torch.Tensor.relu_: True}
"""Every spelling of a ReLU call -> whether it is in place by default."""
MAXPOOL2D_FUNCTIONS = (F.max_pool2d, torch.max_pool2d)

SURROGATES: dict[Callable, Callable] = {
    **{fn: _relu_rule(inplace) for fn, inplace in RELU_FUNCTIONS.items()},
    **{fn: _max_pool2d_rule for fn in MAXPOOL2D_FUNCTIONS},
}
"""Function -> rule ``(mode, args, kwargs) -> output``: every call the surrogates replace."""

_UNSUPPORTED_NAMES = (
    "gelu", "silu", "mish", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_",
    "softplus", "hardswish", "hardsigmoid", "relu6", "hardtanh", "hardtanh_", "prelu", "rrelu", "rrelu_",
    "glu", "threshold", "threshold_", "max_pool1d", "max_pool3d", "max_pool1d_with_indices",
    "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
    "adaptive_max_pool3d_with_indices", "fractional_max_pool2d", "fractional_max_pool3d",
    "fractional_max_pool2d_with_indices", "fractional_max_pool3d_with_indices",
)
UNSUPPORTED_FUNCTIONS = {
    fn for name in _UNSUPPORTED_NAMES for fn in (getattr(F, name, None), getattr(torch, name, None))
    if fn is not None
}
UNSUPPORTED_MODULES = (
    nn.GELU, nn.SiLU, nn.Mish, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.PReLU, nn.RReLU, nn.GLU, nn.Threshold, nn.MaxPool1d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.FractionalMaxPool2d,
    nn.FractionalMaxPool3d,
)


class Recipe(NamedTuple):
    """How a tensor can be recomputed in the backward pass instead of saved."""
    tensor: torch.Tensor
    version: int  # of ``tensor`` when the recipe was made
    batch_norm: dict  # the inference-mode batch_norm call's arguments
    addends: tuple  # tensors added to the batch norm's output since
    inputs: tuple  # (tensor, version) of every tensor used: a recipe is valid while none of them changed


class ExcitationMode(TorchFunctionMode):
    """Routes ReLU and max-pool calls to their surrogates; one instance per forward call."""

    RECIPES_KEPT = 4
    """How many recent batch-norm outputs stay recomputable: a residual block may run its shortcut's convolution
    and batch norm between its last batch norm and the addition (torchvision's Bottleneck with downsample)."""

    def __init__(self, temperature: float, gate: Gate, pool_temperature: float, soft_maxpool: bool, strict: bool):
        super().__init__()
        self.temperature, self.gate = temperature, gate
        self.pool_temperature, self.soft_maxpool, self.strict = pool_temperature, soft_maxpool, strict
        self.recipes: dict[int, Recipe] = {}  # id of a recent tensor -> its recipe

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = SURROGATES.get(func)
        # Calls whose input needs no gradient have no backward to change: skip the surrogate's cost.
        if rule is not None and torch.is_grad_enabled() and args[0].requires_grad:
            return rule(self, args, kwargs)
        if func in UNSUPPORTED_FUNCTIONS:
            return self.unsupported(getattr(func, "__name__", repr(func)), func, args, kwargs)
        extended = None  # (recipe of the batch-norm side, addend), looked up before an in-place add changes it
        if func in _ADDS and len(args) == 2 and not kwargs and all(isinstance(a, torch.Tensor) for a in args):
            # an out-of-place sum may have the batch norm on either side, an in-place one only on the left
            pairs = [(args[0], args[1])] if func in _INPLACE_ADDS else [(args[0], args[1]), (args[1], args[0])]
            for base, addend in pairs:
                recipe = self._valid_recipe(base) if addend is not base else None
                if recipe is not None:
                    extended = (recipe, addend)
                    break
        out = func(*args, **kwargs)
        if not (torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.requires_grad):
            return out
        if func is F.batch_norm:
            bound = {**_BATCH_NORM_DEFAULTS, **dict(zip(_BATCH_NORM_ARGS, args)), **kwargs}
            if not bound["training"] and bound["running_mean"] is not None:  # running statistics: recomputable
                inputs = [bound[k] for k in ("input", "running_mean", "running_var", "weight", "bias")]
                self._remember(out, bound, (), tuple((t, t._version) for t in inputs if t is not None))
        elif extended is not None:
            recipe, addend = extended
            if out.shape == recipe.tensor.shape and out.dtype == recipe.tensor.dtype:
                self._remember(out, recipe.batch_norm, recipe.addends + (addend,),
                               recipe.inputs + ((addend, addend._version),))
        return out

    def _remember(self, out, batch_norm, addends, inputs):
        self.recipes.pop(id(out), None)
        self.recipes[id(out)] = Recipe(out, out._version, batch_norm, addends, inputs)
        while len(self.recipes) > self.RECIPES_KEPT:
            del self.recipes[next(iter(self.recipes))]

    def _valid_recipe(self, z: torch.Tensor):
        """The recipe of ``z`` if neither ``z`` nor any tensor it was computed from changed since; else None."""
        recipe = self.recipes.get(id(z))
        if recipe is None or recipe.tensor is not z or z._version != recipe.version:
            return None
        if any(t._version != version for t, version in recipe.inputs):
            return None
        return recipe

    def recipe_of(self, z: torch.Tensor) -> Recipe | None:
        """The :class:`Recipe` of ``z`` if ``z`` is, unchanged since, an inference-mode batch norm's output plus
        addends, made by recent calls from inputs that did not change since; else None (the gate itself is then
        saved). Used once: the recipe is forgotten."""
        recipe = self._valid_recipe(z)
        self.recipes.pop(id(z), None)
        return recipe

    def unsupported(self, name: str, func, args, kwargs):
        if self.strict:
            raise UnsupportedNonlinearityError(
                f"{name} has no excitation surrogate (supported: ReLU and 2-D max-pooling); "
                "pass strict=False to keep its ordinary backward")
        return func(*args, **kwargs)


def unsupported_modules(model: nn.Module) -> list[str]:
    """Names and types of submodules with no surrogate, e.g. ``["block.act (GELU)"]``."""
    found = [f"{name or '<model>'} ({type(m).__name__})" for name, m in model.named_modules()
             if isinstance(m, UNSUPPORTED_MODULES)]
    found += [f"{name or '<model>'} (MaxPool2d with return_indices=True)" for name, m in model.named_modules()
              if isinstance(m, nn.MaxPool2d) and m.return_indices]
    return found


@contextlib.contextmanager
def soft_backward(model: nn.Module, temperature: float = 0.3, gate: str | Gate = "sigmoid",
                  soft_maxpool: bool = True, pool_temperature: float | None = None, strict: bool = True):
    """Within this block, ``model``'s backward pass is the excitation pullback; its forward is unchanged.

    Every ReLU call in ``model.forward`` (modules, reused modules, ``inplace=True``, ``F.relu``,
    ``torch.relu``, ``Tensor.relu``) multiplies the incoming gradient by ``gate(z / temperature)``
    instead of ``1[z > 0]``; every 2-D max-pool call keeps its hard-max output but back-propagates
    the gradient of the softmax pool at ``pool_temperature``.

    Args:
        model: any ``nn.Module`` (left in its train/eval mode; use eval for pullbacks).
        temperature: ReLU gate temperature T > 0 (default 0.3). T -> 0 gives the ordinary gradient.
        gate: ``"sigmoid"`` (default), ``"normal_cdf"``, ``"softsign"`` or a callable on z / T.
        soft_maxpool: replace the max-pool backward too (default True).
        pool_temperature: max-pool temperature; defaults to ``temperature``.
        strict: raise :class:`UnsupportedNonlinearityError` on nonlinearities with no surrogate
            (GELU, SiLU, LeakyReLU, MaxPool1d/3d, adaptive max-pools, ...); False keeps their
            ordinary backward.

    Yields the same ``model`` object. On exit, normal or by exception, the model is exactly as it was:
    the override of ``forward`` (an instance attribute) is removed; no module, parameter, buffer or
    hook is touched at any time.
    """
    temperature = check_temperature(temperature)
    pool_temperature = temperature if pool_temperature is None else check_temperature(pool_temperature, "pool_temperature")
    gate_fn = get_gate(gate)
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("TorchScript modules cannot be patched: pass the eager nn.Module")
    if strict:
        bad = unsupported_modules(model)
        if bad:
            raise UnsupportedNonlinearityError(
                f"no excitation surrogate for: {', '.join(bad)} (supported: ReLU and MaxPool2d); "
                "pass strict=False to keep their ordinary backward")

    own_forward = model.__dict__.get("forward")
    original = model.forward

    @functools.wraps(original)
    def forward(*args, **kwargs):
        with ExcitationMode(temperature, gate_fn, pool_temperature, soft_maxpool, strict):
            return original(*args, **kwargs)

    model.forward = forward
    try:
        yield model
    finally:
        if own_forward is None:
            del model.forward
        else:
            model.forward = own_forward
