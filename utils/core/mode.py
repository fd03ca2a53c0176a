"""``ExcitationMode``: the interceptor that applies the rules inside one forward call.

Every call of a function some rule replaces (:mod:`utils.core.rules`) goes to that rule, one autograd node per
call. Besides the rules' own functions it watches inference-mode batch norms and the sums after them (so a
ReLU's gate can be recomputed in the backward pass instead of saved), attention weights and the products that
apply them, ReLU-like calls written without ``relu`` (:mod:`utils.core.canonizers.disguises`), activation checkpoints (made
to recompute under the same settings, :mod:`utils.core.recompute`), and calls with no rule.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from . import interception as calls
from . import torch_private as private
from .canonizers.batch_norm import BatchNormRecipes
from .canonizers.disguises import DisguisedReLUs
from .canonizers.reductions import MaxReductions
from .interception import Interceptor
from .recompute import checkpoint_frame, recompute_under
from .rules import RuleContext
from .rules.attention import AttentionValues
from .settings import Settings


class UnsupportedNonlinearityError(TypeError):
    """The model uses a nonlinearity for which no excitation rule is defined (raised with ``strict=True``).

    Attributes:
        args: one message naming the call or submodule (e.g. ``"block.act (ELU)"``) and the way out,
            ``strict=False`` (its exact backward is then kept).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from utils import UnsupportedNonlinearityError, excitation_pullback
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ELU(), nn.Linear(4, 2)).eval()
        >>> try:
        ...     excitation_pullback(model, torch.randn(1, 4), 0)
        ... except UnsupportedNonlinearityError as error:
        ...     print("ELU" in str(error), "strict=False" in str(error))
        True True
        >>> excitation_pullback(model, torch.randn(1, 4), 0, strict=False).shape
        torch.Size([1, 4])
    """


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


_IN_PLACE_OPERATORS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__",
                       "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__imatmul__", "__setitem__"}


def _writes_in_place(func, kwargs) -> bool:
    """Whether a call writes into its first tensor (``add_``, ``+=``, ``x[i] = v``, ``inplace=True``) or ``out=``."""
    name = getattr(func, "__name__", "")
    return ((name.endswith("_") and not name.endswith("__")) or name in _IN_PLACE_OPERATORS
            or bool(kwargs and (kwargs.get("inplace") is True or "out" in kwargs)))


class ExcitationMode(Interceptor, DisguisedReLUs, MaxReductions, BatchNormRecipes):
    """Routes the calls each rule of ``settings`` replaces to that rule; one instance per forward call.

    Besides the rules, it runs the canonizers (:mod:`utils.core.canonizers`: batch-norm recipes, ReLUs written
    another way, max reductions) and keeps short-lived notes on recent outputs (valid while their version
    counters say they are unchanged): which tensors are attention weights from the
    attention rule's softmax, so that ``weights @ V`` passes the soft weights to ``V``'s gradient. It also softens
    ReLU-like calls written without ``relu`` (``clamp``, ``maximum``, ``where``, ``z * (z > 0)``, ...; see
    :class:`~utils.core.canonizers.disguises.DisguisedReLUs`), and names nonlinearities with no rule (strict: raised after the
    forward call, :meth:`raise_deferred`) or leaves them exact. ``recipes=False``: no batch-norm recipes (for calls
    run again in the backward pass, which must save what the first run saved).
    """

    def __init__(self, settings: Settings, recipes: bool = True):
        handlers = {fn: functools.partial(self._rule_call, rule.apply) for fn, rule in settings.dispatch.items()}
        relu = settings.rule("relu")
        recipe_handlers = self.recipe_handlers(recipes)
        if relu is not None:
            handlers.update(recipe_handlers)
        handlers.update(self.disguise_handlers())
        handlers.update(self.reduction_handlers())
        if settings.rule("attention") is not None:
            handlers.update({fn: self._matmul for fn in calls.MATMUL_FUNCTIONS})
            handlers.update({fn: self._dropout for fn in calls.DROPOUT_FUNCTIONS})
        for fn in UNSUPPORTED_FUNCTIONS:
            handlers.setdefault(fn, self._unsupported_call)
        super().__init__(handlers)
        self.settings, self.strict, self.relu, self.hardtanh = settings, settings.strict, relu, settings.rule("hardtanh")
        self.attention: dict[int, tuple] = {}  # id of recent attention weights -> (weights, version, logits, T)
        self.masks: dict[int, tuple] = {}  # id of a recent ``z > c`` -> (mask, version, z, z's version, ">", c)
        self.zeros: dict[int, tuple] = {}  # id of a recent ``zeros_like(...)`` -> (tensor, version)
        self.absolutes: dict[int, tuple] = {}  # id of a recent ``z.abs()`` -> (it, version, z, z's version)
        self.in_checkpoint, self.last_pack_hook = False, None
        self.deferred: UnsupportedNonlinearityError | None = None
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
                f"{name} has no excitation rule (rules: {', '.join(k for k, r in self.settings.chosen.items() if r)}); "
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
