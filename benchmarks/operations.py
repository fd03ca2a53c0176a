"""Counting the aten operations a call dispatches: on a CPU, what a GPU would launch (used by
``tests/core/test_operation_count.py`` and ``benchmarks/overhead.py``)."""
from __future__ import annotations

from collections import Counter

from utils.core.torch_private import dispatch_mode_type


def count_operations(fn, *args, **kwargs) -> tuple[object, Counter]:
    """Run ``fn(*args, **kwargs)``; return its result and how many times each aten operation was dispatched in it,
    forward and backward (views included: on a CPU what a GPU would launch, give or take the views)."""
    counter: Counter = Counter()

    class Counting(dispatch_mode_type()):  # torch's private name, checked in one place
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counter[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    with Counting():
        result = fn(*args, **kwargs)
    return result, counter
