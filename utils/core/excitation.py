"""``soft_backward``: run a model with excitation-pullback backward passes, forward untouched.

The model's forward runs under :class:`~utils.core.mode.ExcitationMode`, an :class:`~utils.core.interception.Interceptor` that
routes every call of a function some rule replaces (:mod:`utils.core.rules`) to that rule, one autograd node per
call. The mode is pushed only while a patched model's forward runs, in the thread that runs it, with the
settings that thread chose last for that model (:mod:`utils.core.settings`).

Safe use: the forward wrapper is installed once per model, however many contexts (nested, or in several threads)
use it, and removed when the last one exits; each context only adds and removes its own entry on its thread's
stack. So two threads get their own results, the innermost of nested contexts wins, and exits in any order leave
the model exactly as it was.
"""
from __future__ import annotations

import contextlib
import functools
import threading

import torch
from torch import nn

from .interception import MAXPOOL2D_FUNCTIONS, RELU_FUNCTIONS  # noqa: F401  (public names)
from .mode import ExcitationMode, UnsupportedNonlinearityError, unsupported_modules  # noqa: F401
from .settings import Settings, make_settings


# -- which settings apply where: per thread, per model, innermost first -------------------------------------------

class _Entry:
    """One ``soft_backward`` context: its model, settings (compared by identity) and the ids of its submodules."""
    __slots__ = ("model", "settings", "members", "recompute_mode")

    def __init__(self, model, settings):
        self.model, self.settings = model, settings
        self.members = {id(m) for m in model.modules()}
        self.recompute_mode = None  # one mode for all recomputed calls, so that they share batch-norm recipes


_local = threading.local()
_lock = threading.Lock()
_installed: dict[int, list] = {}  # id(model) -> [own instance forward or _MISSING, number of contexts, wrapper]
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
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except ImportError:  # pragma: no cover
        return None
    return model._orig_mod if isinstance(model, OptimizedModule) else None


def _install(model: nn.Module) -> None:
    with _lock:
        record = _installed.get(id(model))
        if record is None:
            own = model.__dict__.get("forward", _MISSING)
            original = model.forward
            eager = _compiled_original(model)
            eager = eager.forward if eager is not None else original

            @functools.wraps(original)
            def forward(*args, **kwargs):
                settings = active_settings(model)
                if settings is None:  # another thread's context, or none of this thread's
                    return original(*args, **kwargs)
                _local.depth = getattr(_local, "depth", 0) + 1
                try:
                    with ExcitationMode(settings):
                        return eager(*args, **kwargs)
                finally:
                    _local.depth -= 1

            # TorchDynamo cannot trace the interception: a compiled caller runs this frame eagerly (graph break).
            forward = _dynamo_disable(forward)
            model.forward = forward
            record = _installed[id(model)] = [own, 0, forward]
        record[1] += 1
        _recompute_hooks.acquire()


class _RecomputeHooks:
    """Activation checkpointing (``torch.utils.checkpoint``, ``densenet121(memory_efficient=True)``) runs part of
    the forward pass again during the backward pass, outside the model's forward and so outside the mode. While any
    ``soft_backward`` context is open, global module hooks push the mode (with this thread's settings for the
    model) around a call of any submodule of a patched model made outside a patched forward: the recomputed calls
    then take the same rules, and save the same tensors, as the first time. (So the backward pass must run inside
    the block, as ``excitation_pullback`` does.)"""

    def __init__(self):
        self.users, self.handles = 0, ()

    def acquire(self):  # under _lock
        self.users += 1
        if self.users == 1:
            self.handles = (nn.modules.module.register_module_forward_pre_hook(_enter_recompute),
                            nn.modules.module.register_module_forward_hook(_exit_recompute, always_call=True))

    def release(self):  # under _lock
        self.users -= 1
        if self.users == 0:
            for handle in self.handles:
                handle.remove()
            self.handles = ()


_recompute_hooks = _RecomputeHooks()


def _enter_recompute(module, args):
    if getattr(_local, "depth", 0) or getattr(_local, "recompute", None) is not None:
        return  # inside a patched forward, or inside a recomputed module already
    if torch._C._current_graph_task_id() == -1:
        return  # not in a backward pass: no recomputation
    for entry in reversed(_stack()):
        if id(module) in entry.members:
            if entry.recompute_mode is None:
                entry.recompute_mode = ExcitationMode(entry.settings)
            mode = entry.recompute_mode
            mode.__enter__()
            _local.recompute = (module, mode)
            return


def _exit_recompute(module, args, output):
    current = getattr(_local, "recompute", None)
    if current is not None and current[0] is module:
        _local.recompute = None
        current[1].__exit__(None, None, None)


def _dynamo_disable(fn):
    try:
        import torch._dynamo

        return torch._dynamo.disable(fn, recursive=True)
    except Exception:  # pragma: no cover - no dynamo
        return fn


def _uninstall(model: nn.Module) -> None:
    with _lock:
        _recompute_hooks.release()
        record = _installed[id(model)]
        record[1] -= 1
        if record[1]:
            return
        del _installed[id(model)]
        own, _, wrapper = record
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
def soft_backward(model: nn.Module, temperature: float = 0.3, gate="sigmoid", soft_maxpool: bool = True,
                  **settings):
    """Within this block, ``model``'s backward pass is the excitation pullback; its forward is unchanged.

    Every call of a nonlinearity with a rule (:mod:`utils.core.rules`) in ``model.forward`` -- modules, reused
    modules, ``inplace=True``, functional calls -- keeps its exact output but back-propagates like its softened
    stand-in: ReLU ``gate(z / T)`` instead of ``1[z > 0]``; 2-D max-pools the softmax pool's gradient; SiLU, GELU,
    LayerNorm, attention, LeakyReLU, ReLU6/Hardtanh and Hardswish their rules.

    Args:
        model: any ``nn.Module`` (left in its train/eval mode; use eval for pullbacks); a ``torch.compile``d module
            runs its original module eagerly inside the block.
        temperature: ReLU gate temperature T > 0 (default 0.3). T -> 0 gives the ordinary gradient.
        gate: ``"sigmoid"`` (default), ``"normal_cdf"``, ``"softsign"`` or a callable on z / T.
        soft_maxpool: replace the max-pool backward too (default True).
        **settings: the other keywords of :func:`utils.core.settings.make_settings` (``pool_temperature``,
            ``pool``, ``strict``, ``silu_temperature``, ``gelu_temperature``, ``attention_temperature``,
            ``layer_norm``, ``rules``, ...), or ``settings=`` a ready :class:`~utils.core.settings.Settings`.

    Yields the same ``model`` object. Contexts nest (the innermost settings win, per thread) and may be used from
    several threads at once, each thread getting its own settings. When the last context on the model exits,
    normally or by exception, in any order, the model is exactly as it was: the override of ``forward`` (an
    instance attribute) is removed; no module, parameter, buffer or hook is touched at any time.
    """
    chosen = make_settings(temperature=temperature, gate=gate, soft_maxpool=soft_maxpool, **settings)
    _check_model(model, chosen)
    entry = _Entry(model, chosen)
    _install(model)
    stack = _stack()
    stack.append(entry)
    try:
        yield model
    finally:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is entry:
                del stack[i]
                break
        entry.recompute_mode = None
        _uninstall(model)
