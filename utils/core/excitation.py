"""``soft_backward``: run a model with excitation-pullback backward passes, forward untouched.

The model's forward runs under :class:`~utils.core.mode.ExcitationMode`, an :class:`~utils.core.interception.Interceptor` that
routes every call of a function some rule replaces (:mod:`utils.core.rules`) to that rule, one autograd node per
call. The mode is pushed only while a patched model is called (its forward hooks included) or its forward runs,
or one of its submodules is called directly inside the block, in the thread that runs it, with the settings that
thread chose last for that model (:mod:`utils.core.settings`). Only the model in hand is hooked: no process-wide
hook, so another model's forward runs none of this code. Checkpointed parts, recomputed in the backward pass, take the settings of the call
that made them (:mod:`utils.core.recompute`); a custom ``autograd.Function`` in the model is named (strict).

Safe use: the forward wrapper and the hooks are installed once per model, however many contexts (nested, or in several threads)
use it, and removed when the last one exits; each context only adds and removes its own entry on its thread's
stack. So two threads get their own results, the innermost of nested contexts wins, and exits in any order leave
the model exactly as it was.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import types
from copy import deepcopy
from typing import Mapping

import torch
from torch import nn

from .interception import MAXPOOL2D_FUNCTIONS, RELU_FUNCTIONS  # noqa: F401  (public names)
from . import torch_private as private
from .mode import ExcitationMode, UnsupportedNonlinearityError, unsupported_modules  # noqa: F401
from .recompute import inspect_graph
from .gates import Gate
from .rules import Rule
from .settings import FollowsReLU, Settings, resolve_settings


# -- which settings apply where: per thread, per model, innermost first -------------------------------------------

class _Entry:
    """One ``soft_backward`` context: its model, settings (compared by identity) and the ids of its submodules."""
    __slots__ = ("model", "settings", "members", "direct_mode")

    def __init__(self, model, settings):
        self.model, self.settings = model, settings
        self.members = {id(m) for m in model.modules()}
        self.direct_mode = None


_local = threading.local()
_lock = threading.Lock()
_installed: dict[int, list] = {}  # id(model) -> [own forward or _MISSING, contexts, wrapper, hooks, submodules hooked]
_MISSING = object()


def _stack() -> list[_Entry]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def active_settings(model: nn.Module) -> Settings | None:
    """The settings of this thread's innermost ``soft_backward`` context on ``model``, or None."""
    for entry in reversed(_stack()):
        if entry.model is model:
            return entry.settings
    return None


def _compiled_original(model: nn.Module):
    """``model._orig_mod`` for a ``torch.compile``d module (run eagerly under the rules), else None."""
    compiled = private.compiled_module_type()
    return model._orig_mod if compiled is not None and isinstance(model, compiled) else None


class _Forward:
    """The ``forward`` a patched model carries while any context on it is open: runs ``model``'s own forward under
    an :class:`ExcitationMode` with this thread's innermost settings for ``model``, else unchanged.

    A deep copy of the model made inside the block gets the model's own forward, bound to the copy (the copy is
    another model: it is not patched)."""

    def __init__(self, model: nn.Module, own):
        self.model, self.own = model, own
        self.original = model.forward
        eager = _compiled_original(model)
        self.eager = eager.forward if eager is not None else self.original
        # TorchDynamo cannot trace the interception: a compiled caller runs it eagerly (graph break).
        self.run = private.dynamo_disable(self._run)
        functools.update_wrapper(self, self.original)

    def __call__(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    def _run(self, *args, **kwargs):
        settings = active_settings(self.model)
        if settings is None:  # another thread's context, or none of this thread's
            return self.original(*args, **kwargs)
        if private.functorch_transforms_active():
            raise RuntimeError("torch.func transforms (grad, vmap, jacrev, ...) cannot run through soft_backward: "
                               "compute the field with excitation_pullback (it takes a batch), or torch.autograd.grad "
                               "inside the block")
        since = private.sequence_nr()
        called = getattr(_local, "direct", None)
        _local.depth = getattr(_local, "depth", 0) + 1
        try:
            if called is not None and called[0] is self.model:  # its call's hook pushed the mode (hooks inside it)
                mode = called[1]
                out = self.eager(*args, **kwargs)
            else:
                with ExcitationMode(settings) as mode:
                    out = self.eager(*args, **kwargs)
        finally:
            _local.depth -= 1
        mode.raise_deferred()
        if torch.is_grad_enabled():
            custom = inspect_graph(out, since, mode.recompute_mode)
            if custom and settings.strict:
                raise UnsupportedNonlinearityError(
                    f"no excitation rule for {', '.join(custom)}: its own backward would be used; pass strict=False "
                    "to keep it")
        return out

    def __reduce__(self):
        """Pickled (``torch.save(model)``, ``pickle``, multiprocessing) as the model's own forward: what is saved is
        the unpatched model. (Unpickled, the model's class ``forward`` is found on the model being rebuilt.)"""
        if self.own is not _MISSING:
            return _same, (self.own,)
        return getattr, (self.model, "forward")

    def __deepcopy__(self, memo):
        copy = memo.get(id(self.model))
        if copy is None:  # the forward alone is copied: it stays this model's
            return self
        if self.own is not _MISSING:
            return deepcopy(self.own, memo)
        return types.MethodType(type(self.model).forward, copy)


def _same(value):
    return value


def _install(model: nn.Module, submodules: bool) -> None:
    with _lock:
        record = _installed.get(id(model))
        if record is None:
            own = model.__dict__.get("forward", _MISSING)
            forward = _Forward(model, own)
            model.forward = forward
            record = _installed[id(model)] = [own, 0, forward, _attach_hooks([model]), False]
        if submodules and not record[4]:
            record[3] += _attach_hooks([m for m in {id(m): m for m in model.modules()}.values() if m is not model])
            record[4] = True
        record[1] += 1


def _attach_hooks(modules: list) -> list:
    """Hooks on the model in hand (and, for :func:`soft_backward`, each of its submodules; never process-wide
    ones): a call of any of them from outside its forward -- the model itself with its own forward hooks, or a
    submodule called on its own (``clf.net(x)`` in ``soft_backward(clf)``) -- runs, hooks included, under a mode
    with this thread's settings for the model. Ours run first among the pre-hooks and after the forward hooks
    registered before the block."""
    handles = []
    for module in modules:
        handles.append(module.register_forward_pre_hook(_enter_call, prepend=True))
        handles.append(module.register_forward_hook(_exit_call, always_call=True))
    return handles


def _enter_call(module, args):
    if getattr(_local, "depth", 0) or getattr(_local, "direct", None) is not None:
        return  # inside a patched forward, or inside a call that pushed a mode already
    for entry in reversed(_stack()):
        if id(module) in entry.members:
            if _excitation_mode_active():
                return  # a recomputation runs under one already
            if private.in_backward_pass():  # run again in a backward pass: save what the first run did
                mode = ExcitationMode(entry.settings, recipes=False)
            elif module is entry.model:  # the model's own call: a mode of its own, as its forward would push
                mode = ExcitationMode(entry.settings)
            else:
                if entry.direct_mode is None:  # one mode for the block, so that direct calls share recipes
                    entry.direct_mode = ExcitationMode(entry.settings)
                mode = entry.direct_mode
            mode.__enter__()
            _local.direct = (module, mode)
            return


def _exit_call(module, args, output):
    current = getattr(_local, "direct", None)
    if current is not None and current[0] is module:
        _local.direct = None
        current[1].__exit__(None, None, None)
        current[1].raise_deferred()




def _excitation_mode_active() -> bool:
    modes = private.function_mode_stack()
    return bool(modes) and isinstance(modes[-1], ExcitationMode)


def _uninstall(model: nn.Module) -> None:
    with _lock:
        record = _installed[id(model)]
        record[1] -= 1
        if record[1]:
            return
        del _installed[id(model)]
        own, _, wrapper, handles, _ = record
        for handle in handles:
            handle.remove()
        if model.__dict__.get("forward") is wrapper:
            if own is _MISSING:
                del model.forward
            else:
                model.forward = own


def _check_model(model: nn.Module, settings: Settings) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("TorchScript modules cannot be patched: pass the eager nn.Module")
    if settings.strict:
        bad = unsupported_modules(model)
        if bad:
            raise UnsupportedNonlinearityError(
                f"no excitation rule for: {', '.join(bad)}; pass strict=False to keep their ordinary backward")


@contextlib.contextmanager
def soft_backward(model: nn.Module,
                  temperature: float | None = 0.3,
                  gate: str | Gate = "sigmoid", *, pool_temperature: FollowsReLU = "relu", pool: str = "soft",
                  silu_temperature: float | None = 1.6, gelu_temperature: float | None = 1.0,
                  attention_temperature: float | None = 1.5, hardswish_temperature: float | None = 1.0,
                  leaky_relu_temperature: FollowsReLU = "relu", hardtanh_temperature: FollowsReLU = "relu",
                  layer_norm: str | None = "held", strict: bool = True, rules: Mapping[str, Rule] | None = None,
                  preset: str | None = None, settings: Settings | None = None):
    """Within this block, ``model``'s backward pass is the excitation pullback; its forward is unchanged.

    Every call of a nonlinearity with a rule (:mod:`utils.core.rules`) in ``model.forward`` -- modules, reused
    modules, ``inplace=True``, functional calls -- keeps its exact output but back-propagates like its softened
    stand-in: ReLU ``gate(z / T)`` instead of ``1[z > 0]``; 2-D max-pools the softmax pool's gradient; SiLU, GELU,
    LayerNorm, attention, LeakyReLU, ReLU6/Hardtanh and Hardswish their rules.

    Args:
        model: any ``nn.Module`` (left in its train/eval mode; use eval for pullbacks); a ``torch.compile``d module
            runs its original module eagerly inside the block.
        temperature, gate, pool_temperature, ..., preset, settings: the excitation pullback's settings, as for
            :func:`~utils.core.pullback.excitation_pullback` (the fields of :class:`~utils.core.settings.Settings`).

    Yields:
        The same ``model`` object.

    Raises:
        TypeError: a TorchScript module (it cannot be patched), a bad setting.
        UnsupportedNonlinearityError: (``strict=True``) a submodule with no rule (ELU, MaxPool1d, ...), named on
            entry; a call with no rule, named after the forward call.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from utils import soft_backward
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        >>> x = torch.randn(2, 4, requires_grad=True)
        >>> with soft_backward(model, temperature=0.3):
        ...     y = model(x)
        ...     y[:, 1].sum().backward()
        >>> torch.equal(y, model(x)), x.grad.shape
        (True, torch.Size([2, 4]))

    The model is the same object; Contexts nest (the innermost settings win, per thread) and may be used from
    several threads at once, each thread getting its own settings. When the last context on the model exits,
    normally or by exception, in any order, the model is exactly as it was: the override of ``forward`` (an
    instance attribute) and the block's own pre- and forward hooks on the model and its submodules are removed; no
    parameter, buffer or other hook is touched at any time, and no process-wide hook is used.

    Inside the block the model's own forward hooks (and pre-hooks) take the rules too, as does a submodule called
    on its own (``model.net(x)``), hooks included; a deep copy of the model
    is another, unpatched model. The backward pass is not differentiable: ``create_graph=True`` and ``torch.func``
    transforms through the block raise.
    """
    chosen = resolve_settings(
        settings, preset, temperature=temperature, gate=gate, pool_temperature=pool_temperature, pool=pool,
        silu_temperature=silu_temperature, gelu_temperature=gelu_temperature,
        attention_temperature=attention_temperature, hardswish_temperature=hardswish_temperature,
        leaky_relu_temperature=leaky_relu_temperature, hardtanh_temperature=hardtanh_temperature,
        layer_norm=layer_norm, strict=strict, rules=rules or {})
    with block(model, chosen):
        yield model


@contextlib.contextmanager
def block(model: nn.Module, settings: Settings, submodules: bool = True):
    """:func:`soft_backward` with ready ``settings``; ``submodules=False`` (a pullback, which calls only the model
    itself) hooks the model alone, not each submodule for calls on their own."""
    _check_model(model, settings)
    entry = _Entry(model, settings)
    _install(model, submodules)
    stack = _stack()
    stack.append(entry)
    try:
        yield model
    finally:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is entry:
                del stack[i]
                break
        entry.direct_mode = None
        _uninstall(model)
