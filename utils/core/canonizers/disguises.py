"""ReLU-like calls written without ``relu``: the ones the rules recognise, and what strict mode says of the rest.

Recognised (forward: the call as made; backward: a rule's):

- ReLU rule: ``clamp(z, min=0)`` (also ``clip``, ``clamp_min``, in place); ``maximum(z, 0)`` / ``max(z, 0)``;
  ``where(z > 0, z, 0)``, ``where(z >= 0, z, 0)``, ``where(z < 0, 0, z)``, ``where(z <= 0, 0, z)``;
  ``z * (z > 0)``, ``z * (z >= 0)`` (either order, in place, the mask also cast by ``float``, ``to``, ...);
  ``threshold(z, 0, 0)``; ``z.masked_fill(z < 0, 0)`` (also ``<=``, in place); ``z + z.abs()`` (twice a ReLU, as in
  ``(z + z.abs()) / 2``; either order, or ``z += z.abs()``). A zero is a number, a one-element tensor, or a tensor made by ``zeros_like``,
  ``zeros`` or ``new_zeros`` in the same forward call.
- Hardtanh rule: ``clamp(z, lo, hi)`` with number bounds (ReLU6 is ``clamp(z, 0, 6)``), an absent bound being
  infinite; ``maximum(z, c)`` and ``minimum(z, c)`` for a one-element ``c``.

Named as having no rule (strict raises; otherwise the exact backward): ``clamp`` with tensor bounds,
``maximum`` / ``minimum`` of two tensors, ``where`` and products whose mask compares ``z`` itself in another way
(``where(z > 0, z, 0.1 * z)``, ``z * (z > 1)``, ``z.masked_fill(z > 0, 0)``), ``masked_fill`` by a mask that
compares another tensor, ``threshold`` at other values. (Max and min reductions: :mod:`utils.core.canonizers.reductions`.)
"""
from __future__ import annotations

import math

import torch

from .. import interception as calls

_KEPT = 4  # recent comparisons and zero tensors remembered
_REDUCING = (torch.max, torch.Tensor.max, torch.min, torch.Tensor.min)  # also reductions (of one tensor)


def _remember(notes: dict, key: torch.Tensor, note: tuple) -> None:
    notes.pop(id(key), None)
    notes[id(key)] = note
    while len(notes) > _KEPT:
        del notes[next(iter(notes))]


def _grad_tensor(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad and torch.is_grad_enabled()


class DisguisedReLUs:
    """Handlers of the calls above, for :class:`~utils.core.mode.ExcitationMode` (which sets ``relu``, ``hardtanh``,
    ``masks``, ``zeros`` and ``unsupported``)."""

    def disguise_handlers(self) -> dict:
        handlers = {fn: self._clamp for fn in calls.CLAMP_FUNCTIONS}
        handlers.update({fn: self._maximum for fn in (*calls.MAXIMUM_FUNCTIONS, *calls.MINIMUM_FUNCTIONS)})
        handlers.update({fn: self._compare for fn in calls.COMPARE_FUNCTIONS})
        handlers.update({fn: self._where for fn in calls.WHERE_FUNCTIONS})
        handlers.update({fn: self._mul for fn in calls.MUL_FUNCTIONS})
        handlers.update({fn: self._zeros for fn in calls.ZEROS_FUNCTIONS})
        handlers.update({fn: self._cast for fn in calls.CAST_FUNCTIONS})
        handlers.update({fn: self._threshold for fn in calls.THRESHOLD_FUNCTIONS})
        handlers.update({fn: self._masked_fill for fn in calls.MASKED_FILL_FUNCTIONS})
        handlers.update({fn: self._abs for fn in calls.ABS_FUNCTIONS})
        return handlers

    # -- what the arguments are ------------------------------------------------------------------------------------
    def _number(self, value, read: bool = True) -> float | None:
        """``value`` as a float if it is a number, a tensor of zeros made in this forward call, or (``read``) a
        one-element tensor outside the graph; else None. (Reading a tensor, ``item()``, syncs with the device: only
        on the spellings above, never on a comparison.)"""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, torch.Tensor) or value.requires_grad:
            return None
        note = self.zeros.get(id(value))
        if note is not None and note[0] is value and value._version == note[1]:
            return 0.0
        return float(value.item()) if read and value.numel() == 1 else None

    def _mask(self, t):
        """``(z, op, value)`` if ``t`` is ``z op value`` (op: >, >=, <, <=) with neither changed since, else None."""
        note = self.masks.get(id(t)) if isinstance(t, torch.Tensor) else None
        if note is None or note[0] is not t or t._version != note[1] or note[2]._version != note[3]:
            return None
        return note[2], note[4], note[5]

    def _zeros(self, func, args, kwargs):
        out = func(*args, **kwargs)
        _remember(self.zeros, out, (out, out._version))
        return out

    def _compare(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if len(args) == 2 and not kwargs and _grad_tensor(args[0]):
            value = self._number(args[1], read=False)
            if value is not None:
                z = args[0]
                _remember(self.masks, out, (out, out._version, z, z._version, calls.COMPARE_FUNCTIONS[func], value))
        return out

    def _cast(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if self.masks:
            note = self.masks.get(id(args[0]))
            if note is not None and self._mask(args[0]) is not None and isinstance(out, torch.Tensor) \
                    and out.shape == args[0].shape:
                _remember(self.masks, out, (out, out._version, *note[2:]))
        return out

    # -- the spellings -----------------------------------------------------------------------------------------------
    def _relu(self, z, run, inplace, scale=1.0):
        return self.relu.disguised(z, run, inplace, scale) if self.relu is not None else run(z)

    def _hardtanh(self, z, run, inplace, lo, hi):
        return self.hardtanh.disguised(z, run, inplace, lo, hi) if self.hardtanh is not None else run(z)

    def _clamp(self, func, args, kwargs):
        z = args[0]
        if not _grad_tensor(z):
            return func(*args, **kwargs)
        low = calls.bound_argument(args, kwargs, 1, "min")
        high = calls.bound_argument(args, kwargs, 2, "max")
        if func in calls.CLAMP_MAX_FUNCTIONS:
            low, high = None, calls.bound_argument(args, kwargs, 1, "max")
        elif func in calls.CLAMP_MIN_FUNCTIONS:
            high = None
        if low is None and high is None:
            return func(*args, **kwargs)  # (torch's own error)
        lo, hi = (None if b is None else self._number(b) for b in (low, high))
        if (low is not None and lo is None) or (high is not None and hi is None):
            return self.unsupported("clamp with tensor bounds", func, args, kwargs)
        if lo is not None and hi is not None and lo >= hi:
            return self.unsupported(f"clamp({lo}, {hi}) (a constant)", func, args, kwargs)
        run = lambda t: func(t, *args[1:], **kwargs)  # noqa: E731
        inplace = calls.CLAMP_FUNCTIONS[func]
        if lo == 0 and hi is None:
            return self._relu(z, run, inplace)
        return self._hardtanh(z, run, inplace, -math.inf if lo is None else lo, math.inf if hi is None else hi)

    def _maximum(self, func, args, kwargs):
        if func in _REDUCING and "other" not in kwargs and not (len(args) == 2 and isinstance(args[1], torch.Tensor)):
            return self.reduce(func, args, kwargs, 1.0 if func in calls.MAXIMUM_FUNCTIONS else -1.0)  # max(z, dim)
        if len(args) != 2 or kwargs or not isinstance(args[1], torch.Tensor):
            return func(*args, **kwargs)  # an out= call
        upper = func in calls.MAXIMUM_FUNCTIONS
        for z, c, swap in ((args[0], args[1], False), (args[1], args[0], True)):
            if _grad_tensor(z) and not c.requires_grad and torch.broadcast_shapes(z.shape, c.shape) == z.shape:
                value = self._number(c)
                if value is not None:
                    run = (lambda t: func(c, t)) if swap else (lambda t: func(t, c))
                    if upper and value == 0:
                        return self._relu(z, run, False)
                    return self._hardtanh(z, run, False, *((value, math.inf) if upper else (-math.inf, value)))
        if _grad_tensor(args[0]) or _grad_tensor(args[1]):
            return self.unsupported(f"{calls.call_name(func)} of two tensors", func, args, kwargs)
        return func(*args, **kwargs)

    def _where(self, func, args, kwargs):
        if len(args) != 3 or kwargs:
            return func(*args, **kwargs)
        # torch.where(mask, a, b); Tensor.where is a.where(mask, b)
        mask, a, b = (args[1], args[0], args[2]) if func is torch.Tensor.where else args
        found = self._mask(mask)
        if found is None or not (a is found[0] or b is found[0]):
            return func(*args, **kwargs)
        z, op, value = found
        if value == 0 and ((op in (">", ">=") and a is z and self._number(b) == 0)
                           or (op in ("<", "<=") and b is z and self._number(a) == 0)):
            if func is torch.Tensor.where:
                return self._relu(z, lambda t: func(t, mask, b), False)
            return self._relu(z, lambda t: func(mask, t, b) if a is z else func(mask, a, t), False)
        return self.unsupported(f"where(z {op} {value!r}, ...) with z in a branch", func, args, kwargs)

    def _mul(self, func, args, kwargs):
        if not self.masks or len(args) != 2 or kwargs:
            return func(*args, **kwargs)
        for z, mask, swap in ((args[0], args[1], False), (args[1], args[0], True)):
            found = self._mask(mask)
            if found is not None and found[0] is z:
                if found[1] in (">", ">=") and found[2] == 0 and z.shape == mask.shape:
                    run = (lambda t: func(mask, t)) if swap else (lambda t: func(t, mask))
                    return self._relu(z, run, calls.MUL_FUNCTIONS[func] and not swap)
                return self.unsupported(f"z * (z {found[1]} {found[2]!r})", func, args, kwargs)
        return func(*args, **kwargs)

    def _threshold(self, func, args, kwargs):
        z = args[0]
        threshold = calls.bound_argument(args, kwargs, 1, "threshold")
        value = calls.bound_argument(args, kwargs, 2, "value")
        if not _grad_tensor(z):
            return func(*args, **kwargs)
        if self._number(threshold) == 0 and self._number(value) == 0:
            inplace = calls.THRESHOLD_FUNCTIONS[func] or bool(calls.bound_argument(args, kwargs, 3, "inplace", False))
            return self._relu(z, lambda t: func(t, *args[1:], **kwargs), inplace)
        return self.unsupported(f"threshold({threshold!r}, {value!r})", func, args, kwargs)

    def _masked_fill(self, func, args, kwargs):
        z, mask = args[0], calls.bound_argument(args, kwargs, 1, "mask")
        found = self._mask(mask)
        if found is None or not _grad_tensor(z):
            return func(*args, **kwargs)
        value = calls.bound_argument(args, kwargs, 2, "value")
        if found[0] is not z:  # a hard gate of z by another tensor's sign
            return self.unsupported("masked_fill by a mask comparing another tensor", func, args, kwargs)
        _, op, c = found
        if op in ("<", "<=") and c == 0 and self._number(value) == 0 and mask.shape == z.shape:
            return self._relu(z, lambda t: func(t, *args[1:], **kwargs), calls.MASKED_FILL_FUNCTIONS[func])
        return self.unsupported(f"masked_fill(z {op} {c!r}, {value!r})", func, args, kwargs)

    def _abs(self, func, args, kwargs):
        out = func(*args, **kwargs)
        z = args[0]
        if _grad_tensor(z) and isinstance(out, torch.Tensor) and out is not z:
            _remember(self.absolutes, out, (out, out._version, z, z._version))
        return out

    def abs_sum(self, func, args, kwargs, inplace: bool):
        """``z + z.abs()`` (either order; ``z += z.abs()``) as twice a ReLU; None if the sum is not one."""
        if len(args) != 2 or kwargs or not self.absolutes:
            return None
        for z, a, swap in ((args[0], args[1], False), (args[1], args[0], True)):
            note = self.absolutes.get(id(a)) if isinstance(a, torch.Tensor) else None
            if note is None or note[0] is not a or a._version != note[1] or note[2] is not z or z._version != note[3]:
                continue
            if inplace and swap:
                return self.unsupported("z.abs() += z (in place on the absolute value)", func, args, kwargs)
            run = (lambda t: func(a, t)) if swap else (lambda t: func(t, a))
            return self._relu(z, run, inplace, 2.0)
        return None
