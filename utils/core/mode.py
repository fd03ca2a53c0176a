"""``ExcitationMode``: the interceptor that applies the rules inside one forward call.

Every call of a function some rule replaces (:mod:`utils.core.rules`) goes to that rule, one autograd node per
call. Besides the rules' own functions it watches inference-mode batch norms and the sums after them (so a
ReLU's gate can be recomputed in the backward pass instead of saved), attention weights and the products that
apply them, ReLU-like calls written without ``relu`` (:mod:`utils.core.disguises`), activation checkpoints (made
to recompute under the same settings, :mod:`utils.core.recompute`), and calls with no rule.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import interception as calls
from . import torch_private as private
from .disguises import DisguisedReLUs
from .interception import Interceptor
from .recompute import checkpoint_frame, recompute_under
from .reductions import MaxReductions
from .rules import RuleContext
from .settings import Settings
from .surrogates import AttentionValues, SoftGateReLUAfterBatchNorm


class UnsupportedNonlinearityError(TypeError):
    """The model uses a nonlinearity for which no excitation rule is defined."""


_NO_RULE_NAMES = (
    "mish", "elu", "elu_", "selu", "selu_", "celu", "celu_", "softplus", "prelu", "rrelu", "rrelu_", "glu",
    "hardshrink", "softshrink",
    "max_pool1d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices", "fractional_max_pool2d",
    "fractional_max_pool3d", "fractional_max_pool2d_with_indices", "fractional_max_pool3d_with_indices",
)
UNSUPPORTED_FUNCTIONS = {
    fn for name in _NO_RULE_NAMES for fn in (getattr(F, name, None), getattr(torch, name, None)) if fn is not None
}
"""Nonlinearities with no rule: strict mode names them, otherwise they keep their exact backward. (Sigmoid and
Hardsigmoid, as multiplicative gates in squeeze-excitation blocks, keep their exact backward without a word.)"""
UNSUPPORTED_MODULES = (
    nn.Mish, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.PReLU, nn.RReLU, nn.GLU, nn.Hardshrink, nn.Softshrink,
    nn.MaxPool1d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool3d, nn.FractionalMaxPool2d, nn.FractionalMaxPool3d,
)


class Recipe(NamedTuple):
    """How a tensor can be recomputed in the backward pass instead of saved."""
    tensor: torch.Tensor
    version: int  # of ``tensor`` when the recipe was made
    batch_norm: dict  # the inference-mode batch_norm call's arguments
    addends: tuple  # tensors added to the batch norm's output since
    inputs: tuple  # (tensor, version) of every tensor used: a recipe is valid while none of them changed


_BATCH_NORM_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_BATCH_NORM_DEFAULTS = dict(weight=None, bias=None, training=False, momentum=0.1, eps=1e-5)
_INPLACE_ADDS = (torch.Tensor.__iadd__, torch.Tensor.add_)
_ADDS = (*_INPLACE_ADDS, torch.Tensor.__add__, torch.Tensor.add, torch.add)


_IN_PLACE_OPERATORS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__",
                       "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__imatmul__", "__setitem__"}


def _writes_in_place(func, kwargs) -> bool:
    """Whether a call writes into its first tensor (``add_``, ``+=``, ``x[i] = v``, ``inplace=True``) or ``out=``."""
    name = getattr(func, "__name__", "")
    return ((name.endswith("_") and not name.endswith("__")) or name in _IN_PLACE_OPERATORS
            or bool(kwargs and (kwargs.get("inplace") is True or "out" in kwargs)))


class ExcitationMode(Interceptor, DisguisedReLUs, MaxReductions):
    """Routes the calls each rule of ``settings`` replaces to that rule; one instance per forward call.

    Besides the rules, it keeps two kinds of short-lived notes on recent outputs (valid while their version
    counters say they are unchanged): how an inference-mode batch norm's output (plus residual addends) can be
    recomputed, so that the ReLU after it saves no gate; and which tensors are attention weights from the
    attention rule's softmax, so that ``weights @ V`` passes the soft weights to ``V``'s gradient. It also softens
    ReLU-like calls written without ``relu`` (``clamp``, ``maximum``, ``where``, ``z * (z > 0)``, ...; see
    :class:`~utils.core.disguises.DisguisedReLUs`), and names nonlinearities with no rule (strict: raised after the
    forward call, :meth:`raise_deferred`) or leaves them exact. ``recipes=False``: no batch-norm recipes (for calls
    run again in the backward pass, which must save what the first run saved).
    """

    RECIPES_KEPT = 4
    """How many recent batch-norm outputs stay recomputable: a residual block may run its shortcut's convolution
    and batch norm between its last batch norm and the addition (torchvision's Bottleneck with downsample)."""

    def __init__(self, settings: Settings, recipes: bool = True):
        handlers = {fn: functools.partial(self._rule_call, rule.apply) for fn, rule in settings.dispatch.items()}
        relu = settings.rule("relu")
        if relu is not None:
            handlers[F.batch_norm] = self._batch_norm
            handlers.update({fn: self._add for fn in _ADDS})
        handlers.update(self.disguise_handlers())
        handlers.update(self.reduction_handlers())
        if settings.rule("attention") is not None:
            handlers.update({fn: self._matmul for fn in calls.MATMUL_FUNCTIONS})
            handlers.update({fn: self._dropout for fn in calls.DROPOUT_FUNCTIONS})
        for fn in UNSUPPORTED_FUNCTIONS:
            handlers.setdefault(fn, self._unsupported_call)
        super().__init__(handlers)
        self.settings, self.strict, self.relu, self.hardtanh = settings, settings.strict, relu, settings.rule("hardtanh")
        self.recipes: dict[int, Recipe] = {}  # id of a recent tensor -> its recipe
        self.attention: dict[int, tuple] = {}  # id of recent attention weights -> (weights, version, logits, T)
        self.masks: dict[int, tuple] = {}  # id of a recent ``z > c`` -> (mask, version, z, z's version, ">", c)
        self.zeros: dict[int, tuple] = {}  # id of a recent ``zeros_like(...)`` -> (tensor, version)
        self.absolutes: dict[int, tuple] = {}  # id of a recent ``z.abs()`` -> (it, version, z, z's version)
        self.use_recipes, self.in_checkpoint, self.last_pack_hook = recipes, False, None
        self.deferred: UnsupportedNonlinearityError | None = None
        self.watched: list[tuple] = []  # (addend, its version, node): residual addends of recomputed gates
        self.context = RuleContext(self.recipe_of, self.remember_attention, self.unsupported, self.watch)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.watched and args and _writes_in_place(func, kwargs):
            written = kwargs["out"] if kwargs and "out" in kwargs else args[0]
            if isinstance(written, torch.Tensor):
                self._before_write(written)
        return super().__torch_function__(func, types, args, kwargs)

    def _rule_call(self, apply, func, args, kwargs):
        hooks = private.top_saved_tensors_hooks()  # None unless a checkpoint (or other saved-tensor hooks) is active
        if hooks is not None or self.in_checkpoint:
            self._note_checkpoint(hooks)
        return apply(self.context, func, args, kwargs)

    def _note_checkpoint(self, hooks) -> None:
        """Inside a non-reentrant checkpoint, make it recompute under this mode's settings; and keep batch-norm
        recipes out of it: the recomputation must save the same tensors as the first call, and it cannot see a
        recipe made before the checkpoint."""
        if hooks is None:
            self.in_checkpoint = False
        elif hooks[0] is not self.last_pack_hook:
            frame = checkpoint_frame(hooks[0])
            if frame is not None:
                recompute_under(frame, self.recompute_mode)
            self.in_checkpoint, self.last_pack_hook = frame is not None, hooks[0]

    def recompute_mode(self) -> "ExcitationMode":
        """A mode with these settings for calls run again in the backward pass (no batch-norm recipes)."""
        return ExcitationMode(self.settings, recipes=False)

    # -- batch-norm recipes (the ReLU rule's memory saving) --------------------------------------------------------
    def _batch_norm(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if torch.is_grad_enabled() and out.requires_grad:
            bound = {**_BATCH_NORM_DEFAULTS, **dict(zip(_BATCH_NORM_ARGS, args)), **kwargs}
            if not bound["training"] and bound["running_mean"] is not None:  # running statistics: recomputable
                inputs = [bound[k] for k in ("input", "running_mean", "running_var", "weight", "bias")]
                self._remember(out, bound, (), tuple((t, t._version) for t in inputs if t is not None))
        return out

    def _add(self, func, args, kwargs):
        twice_relu = self.abs_sum(func, args, kwargs, func in _INPLACE_ADDS)
        if twice_relu is not None:
            return twice_relu
        extended = None  # (recipe of the batch-norm side, addend), looked up before an in-place add changes it
        if len(args) == 2 and not kwargs and all(isinstance(a, torch.Tensor) for a in args):
            # an out-of-place sum may have the batch norm on either side, an in-place one only on the left
            pairs = [(args[0], args[1])] if func in _INPLACE_ADDS else [(args[0], args[1]), (args[1], args[0])]
            for base, addend in pairs:
                recipe = self._valid_recipe(base) if addend is not base else None
                if recipe is not None:
                    extended = (recipe, addend)
                    break
        out = func(*args, **kwargs)
        if extended is not None and torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.requires_grad:
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
        if not self.use_recipes or self.in_checkpoint:
            return None
        recipe = self._valid_recipe(z)
        self.recipes.pop(id(z), None)
        return recipe

    def watch(self, addends: tuple, out: torch.Tensor) -> None:
        node = out.grad_fn
        if node is not None:
            self.watched.extend((a, a._version, node) for a in addends)

    def _before_write(self, written: torch.Tensor) -> None:
        """An in-place call is about to write ``written``: a recomputed gate whose addend shares its memory is
        computed now, while the addend still holds what was added (autograd's plain sum saves nothing to break)."""
        storage = written.untyped_storage().data_ptr()
        kept = []
        for a, version, node in self.watched:
            if a._version != version:
                continue  # changed already (its node kept its gate then)
            if a.untyped_storage().data_ptr() == storage:
                SoftGateReLUAfterBatchNorm.keep_gate(node)
            else:
                kept.append((a, version, node))
        self.watched = kept

    # -- attention weights ---------------------------------------------------------------------------------------
    def remember_attention(self, weights: torch.Tensor, logits: torch.Tensor, temperature: float) -> None:
        self.attention[id(weights)] = (weights, weights._version, logits, temperature)
        while len(self.attention) > 4:
            del self.attention[next(iter(self.attention))]

    def _attention_of(self, t):
        note = self.attention.get(id(t))
        if note is None or note[0] is not t or t._version != note[1]:
            return None
        return note

    def _dropout(self, func, args, kwargs):
        out = func(*args, **kwargs)
        note = self._attention_of(args[0])
        p = calls.bound_argument(args, kwargs, 1, "p", 0.5)
        training = calls.bound_argument(args, kwargs, 2, "training", True)
        if note is not None and (not training or p == 0) and out.shape == args[0].shape:
            self.remember_attention(out, note[2], note[3])
        return out

    def _matmul(self, func, args, kwargs):
        note = self._attention_of(args[0]) if len(args) == 2 and not kwargs else None
        if note is None or not isinstance(args[1], torch.Tensor):
            return func(*args, **kwargs)
        self.attention.pop(id(args[0]), None)
        return AttentionValues.apply(args[0], args[1], note[2], -1, note[3], func)

    # -- no rule ---------------------------------------------------------------------------------------------------
    def _unsupported_call(self, func, args, kwargs):
        return self.unsupported(getattr(func, "__name__", repr(func)), func, args, kwargs)

    def unsupported(self, name: str, func, args, kwargs):
        """Run the call as it is; strict: keep an :class:`UnsupportedNonlinearityError` naming it, raised after the
        forward call (:meth:`raise_deferred`): raised here, inside an operator such as ``*``, torch would turn it into
        a bare TypeError."""
        if self.strict and self.deferred is None:
            self.deferred = UnsupportedNonlinearityError(
                f"{name} has no excitation rule (rules: {', '.join(k for k, r in self.settings.rules.items() if r)}); "
                "pass strict=False to keep its ordinary backward")
        return func(*args, **kwargs)

    def raise_deferred(self) -> None:
        """Raise the first error :meth:`unsupported` kept for after the forward call, if any."""
        if self.deferred is not None:
            error, self.deferred = self.deferred, None
            raise error


def unsupported_modules(model: nn.Module) -> list[str]:
    """Names and types of submodules with no rule, e.g. ``["block.act (ELU)"]``."""
    found = [f"{name or '<model>'} ({type(m).__name__})" for name, m in model.named_modules()
             if isinstance(m, UNSUPPORTED_MODULES)]
    found += [f"{name or '<model>'} ({type(m).__name__} with return_indices=True)" for name, m in model.named_modules()
              if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) and m.return_indices]
    found += [f"{name or '<model>'} (Threshold({m.threshold}, {m.value}))" for name, m in model.named_modules()
              if isinstance(m, nn.Threshold) and not (m.threshold == 0 and m.value == 0)]
    return found
