"""Every private part of torch the core uses, in one place, each with what happens on a torch without it.

Torch's private names may change in any release. Each is looked up here once, at import; where one is missing
the core takes a plain path that is still right (a public function, or a check skipped), or says what it cannot
do, in words, when that is first needed -- never an AttributeError deep inside a backward pass. ``MISSING`` lists
the names this torch lacks; ``python -m utils.core.torch_private`` prints them.
"""
from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F

OLDEST = (2, 8)
"""The oldest torch the core is tested on (``requirements.txt``, ``tests/core/torch-versions.csv``). What it calls
goes back to 2.1 (``register_forward_hook(always_call=True)``, the non-reentrant checkpoint's ``_CheckpointFrame``),
with the plain paths below where a private name is missing, but nothing older than 2.8 is tested."""


def _version(text: str) -> tuple[int, int]:
    parts = text.split("+")[0].split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def check_version(version: str = torch.__version__) -> None:
    """An ImportError, in words, on a torch older than :data:`OLDEST`."""
    if _version(version) < OLDEST:
        raise ImportError(f"utils.core needs torch >= {OLDEST[0]}.{OLDEST[1]}, found {version}: install a newer torch")


check_version()


def _find(path: str):
    """``module.attr.attr`` or None."""
    module, _, rest = path.partition(":")
    try:
        value = importlib.import_module(module)
        for name in rest.split("."):
            value = getattr(value, name)
        return value
    except (ImportError, AttributeError):
        return None


_NAMES = {
    "top_saved_tensors_hooks": "torch._C._autograd:_top_saved_tensors_default_hooks",
    "sequence_nr": "torch._C._autograd:_get_sequence_nr",
    "current_graph_task_id": "torch._C:_current_graph_task_id",
    "functorch_transforms_active": "torch._C:_are_functorch_transforms_active",
    "function_mode_stack": "torch.overrides:_get_current_function_mode_stack",
    "assert_async": "torch:_assert_async",
    "CheckpointFrame": "torch.utils.checkpoint:_CheckpointFrame",
    "CheckpointFunction": "torch.utils.checkpoint:CheckpointFunction",
    "BackwardCFunction": "torch.autograd.function:BackwardCFunction",
    "OptimizedModule": "torch._dynamo.eval_frame:OptimizedModule",
    "dynamo_disable": "torch._dynamo:disable",
    "TorchDispatchMode": "torch.utils._python_dispatch:TorchDispatchMode",
    "batch_norm_no_training": "torch:ops.aten._native_batch_norm_legit_no_training",
    "tree_leaves": "torch.utils._pytree:tree_leaves",
}
_found = {key: _find(path) for key, path in _NAMES.items()}
MISSING = sorted(_NAMES[key].replace(":", ".") for key, value in _found.items() if value is None)
"""The private names this torch lacks."""


@functools.lru_cache(maxsize=None)
def _say_once(what: str) -> None:
    warnings.warn(f"torch {torch.__version__} lacks a private part the excitation pullback uses: {what}",
                  RuntimeWarning, stacklevel=3)


def top_saved_tensors_hooks():
    """The innermost saved-tensor hooks (a checkpoint's, when one is running), or None; None too on a torch
    without them (then a checkpointed part cannot be found: see :func:`checkpoint_frame_type`)."""
    get = _found["top_saved_tensors_hooks"]
    return get(False) if get is not None else None


def sequence_nr() -> int | None:
    """The autograd sequence number the next node will get (None on a torch without it: graphs are walked whole)."""
    get = _found["sequence_nr"]
    return get() if get is not None else None


def in_backward_pass() -> bool:
    """Whether this thread is running a backward pass (an activation checkpoint recomputing); False if unknown."""
    get = _found["current_graph_task_id"]
    return get is not None and get() != -1


def functorch_transforms_active() -> bool:
    get = _found["functorch_transforms_active"]
    return bool(get()) if get is not None else False


def function_mode_stack() -> list:
    get = _found["function_mode_stack"]
    return list(get()) if get is not None else []


def assert_on_device(condition: torch.Tensor, message: str) -> None:
    """Stop with ``message`` unless ``condition`` holds, without waiting for the device where torch can; else (no
    ``torch._assert_async``) reads the condition (one synchronisation) and raises IndexError."""
    check = _found["assert_async"]
    if check is not None:
        check(condition, message)
    elif not bool(condition):
        raise IndexError(message)


def checkpoint_frame_type():
    """The class of a non-reentrant checkpoint's frame, or None (checkpoints then recompute without the rules: said
    once, when a checkpoint would need it)."""
    if _found["CheckpointFrame"] is None:
        _say_once("torch.utils.checkpoint._CheckpointFrame: a non-reentrant activation checkpoint recomputes its "
                  "part with the plain backward")
    return _found["CheckpointFrame"]


def checkpoint_function_type():
    return _found["CheckpointFunction"]


def python_function_node_type():
    """The class of a custom ``autograd.Function``'s node; None: custom Functions are not named (strict)."""
    if _found["BackwardCFunction"] is None:
        _say_once("torch.autograd.function.BackwardCFunction: strict mode cannot name custom autograd.Functions, "
                  "and reentrant checkpoints recompute with the plain backward")
    return _found["BackwardCFunction"]


def compiled_module_type():
    return _found["OptimizedModule"]


def dynamo_disable(fn):
    """``fn`` that TorchDynamo runs eagerly (a graph break); ``fn`` itself on a torch without dynamo."""
    disable = _found["dynamo_disable"]
    if disable is None:
        return fn
    try:
        return disable(fn, recursive=True)
    except Exception:  # pragma: no cover - a dynamo that cannot wrap it
        return fn


def dispatch_mode_type():
    mode = _found["TorchDispatchMode"]
    if mode is None:
        raise RuntimeError(f"counting operations needs torch.utils._python_dispatch.TorchDispatchMode, which torch "
                           f"{torch.__version__} lacks")
    return mode


def batch_norm_no_training(c, weight, bias, running_mean, running_var, eps: float) -> torch.Tensor:
    """``(c - mean) / sqrt(var + eps) * weight + bias`` with the running statistics, a fresh tensor: one aten call
    where torch has it, else the public ``F.batch_norm`` (the same values, a few more operations)."""
    op = _found["batch_norm_no_training"]
    if op is not None:
        return op(c, weight, bias, running_mean, running_var, 0.0, eps)[0]
    with torch.no_grad():
        return F.batch_norm(c, running_mean, running_var, weight, bias, False, 0.0, eps)


def tree_leaves(tree) -> list:
    """The leaves of nested tuples, lists and dicts (torch's pytree, which also knows torch's own containers; a
    plain walk of the built-in containers without it)."""
    found = _found["tree_leaves"]
    if found is not None:
        return found(tree)
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in tree_leaves(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in tree_leaves(item)]
    return [tree]


def pair(value) -> tuple:
    """``(v, v)`` for a number, ``tuple(value)`` for a sequence (as a 2-D layer's sizes are given)."""
    return tuple(value) if isinstance(value, Iterable) else (value, value)


if __name__ == "__main__":
    print(f"torch {torch.__version__}; private names missing: {', '.join(MISSING) or 'none'}")
