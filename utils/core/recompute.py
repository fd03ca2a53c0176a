"""What call interception alone does not reach: activation checkpoints and custom autograd Functions.

Activation checkpointing (``torch.utils.checkpoint``, ``densenet121(memory_efficient=True)``) runs part of the
forward pass again during the backward pass, outside the model's forward and possibly on another thread (CUDA
backward passes run on the device's own thread). The recomputed calls must take the same rules, and save the same
tensors, as the first time: each checkpoint's recomputation is made to run under a fresh mode of the same settings.

- A non-reentrant checkpoint (``use_reentrant=False``) is seen while it runs: its saved-tensor hooks are on top of
  autograd's stack when a rule is called inside it (:func:`checkpoint_frame`); the mode then wraps the frame's
  recompute function (:func:`recompute_under`).
- A reentrant checkpoint (``use_reentrant=True``) runs its function with autograd off and leaves one
  ``CheckpointFunction`` node in the graph; :func:`inspect_graph`, run once per forward call on the nodes that
  call made, wraps that node's function.

A custom ``torch.autograd.Function`` (other than the surrogates and torch's own) has its own backward, which no
rule changes; :func:`inspect_graph` names it so that strict mode can say so.
"""
from __future__ import annotations

from typing import Callable, ContextManager

import torch

from . import torch_private as private

MakeMode = Callable[[], ContextManager]


def checkpoint_frame(pack_hook):
    """The frame of the non-reentrant checkpoint whose saved-tensor pack hook is ``pack_hook``, else None."""
    frame_type = private.checkpoint_frame_type()
    if frame_type is None:
        return None
    for cell in getattr(pack_hook, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, frame_type):
            return value
    return None


def _under(fn: Callable, make_mode: MakeMode) -> Callable:
    """``fn`` run under ``make_mode()`` (once: a wrapped function is returned as is)."""
    if getattr(fn, "under_excitation_mode", False):
        return fn

    def run(*args, **kwargs):
        with make_mode():
            return fn(*args, **kwargs)

    run.under_excitation_mode = True
    return run


def recompute_under(frame, make_mode: MakeMode) -> None:
    """Make a non-reentrant checkpoint recompute under ``make_mode()``."""
    frame.recompute_fn = _under(frame.recompute_fn, make_mode)


_OURS = __name__.rsplit(".", 1)[0] + "."  # this package's modules: the surrogates, wherever they live


def _is_known(cls) -> bool:
    return cls.__module__.startswith(_OURS) or cls.__module__.split(".")[0] == "torch"


def inspect_graph(outputs, since: int | None, make_mode: MakeMode) -> list[str]:
    """Walk the autograd nodes reachable from ``outputs`` (any nesting of tensors) made in this thread since sequence
    number ``since`` (:func:`~utils.core.torch_private.sequence_nr` before the forward call; None: all of them):
    every reentrant checkpoint among them recomputes under ``make_mode()``; returns the names of the custom
    ``autograd.Function``s found (none on a torch whose Function nodes cannot be told apart)."""
    node_type, checkpoint_type = private.python_function_node_type(), private.checkpoint_function_type()
    if node_type is None:
        return []
    stack = [t.grad_fn for t in private.tree_leaves(outputs) if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    seen, custom = set(), set()
    while stack:
        node = stack.pop()
        key = id(node)  # (the graph keeps every node alive during the walk: ids are not reused)
        if key in seen or (since is not None and node._sequence_nr() < since):  # seen, or made before this call
            continue
        seen.add(key)
        if isinstance(node, node_type):  # a Python autograd.Function
            cls = node._forward_cls
            if cls is checkpoint_type:
                node.run_function = _under(node.run_function, make_mode)
            elif not _is_known(cls):
                custom.add(f"{cls.__qualname__} (a custom torch.autograd.Function)")
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return sorted(custom)
