"""Surrogate gates: smooth replacements for ReLU's hard gate ``1[z > 0]`` in the backward pass.

Each gate maps ``u = z / T`` to [0, 1], is increasing, and sends 0 to 0.5. As ``T -> 0`` every one of
them tends to the hard gate (for z != 0), which is why small temperatures give back the ordinary
gradient. ``GATES`` maps each gate's name (the ``gate=`` setting) to the gate.

Example:
    >>> import torch
    >>> from utils import GATES
    >>> u = torch.tensor([-2.0, 0.0, 2.0])
    >>> {name: [round(v, 3) for v in gate(u).tolist()] for name, gate in sorted(GATES.items())}
    {'normal_cdf': [0.023, 0.5, 0.977], 'sigmoid': [0.119, 0.5, 0.881], 'softsign': [0.167, 0.5, 0.833]}
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

import torch

Gate = Callable[[torch.Tensor], torch.Tensor]


def sigmoid_gate(u: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp(-u))``: the paper's default gate."""
    return torch.sigmoid(u)


sigmoid_gate.is_softplus_derivative = True
"""A property the surrogates' fast paths look for (a gate that is softplus' derivative may use aten's fused
``softplus_backward``); any other gate, e.g. a user's own sigmoid, takes the generic path: correct, a bit slower."""


def is_sigmoid(gate: Gate) -> bool:
    """Whether ``gate`` declares itself the logistic sigmoid (``gate.is_softplus_derivative``)."""
    return getattr(gate, "is_softplus_derivative", False) is True


def normal_cdf_gate(u: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF ``Phi(u) = (1 + erf(u / sqrt 2)) / 2`` (one fused kernel, ``torch.special.ndtr``)."""
    return torch.special.ndtr(u)


def softsign_gate(u: torch.Tensor) -> torch.Tensor:
    """Softsign rescaled to [0, 1]: ``(1 + u / (1 + |u|)) / 2``."""
    return 0.5 * (1.0 + u / (1.0 + u.abs()))


def hard_gate(z: torch.Tensor) -> torch.Tensor:
    """ReLU's own gate ``1[z > 0]`` (the T -> 0 limit), in z's dtype."""
    return (z > 0).to(z.dtype)


GATES: dict[str, Gate] = {
    "sigmoid": sigmoid_gate,
    "normal_cdf": normal_cdf_gate,
    "softsign": softsign_gate,
}


def get_gate(gate: str | Gate) -> Gate:
    """A gate by name (``"sigmoid"``, ``"normal_cdf"``, ``"softsign"``) or a callable passed through."""
    if callable(gate):
        return gate
    try:
        return GATES[gate]
    except (KeyError, TypeError):
        raise ValueError(f"unknown gate {gate!r}: choose one of {sorted(GATES)} or pass a callable") from None


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """``temperature`` as a float: a number (or a one-element tensor) that is finite and > 0; else a TypeError
    (a bool, a string, a tensor of several elements) or a ValueError naming ``name``."""
    value = as_number(temperature, name)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")
    return value


def as_number(value, name: str) -> float:
    """``value`` as a float if it is a real number or a one-element real tensor, not a bool; else a TypeError
    naming ``name`` (``True`` is not 1.0 here: a flag passed in a number's place is a mistake)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a number, got a tensor of {value.numel()} elements ({value.dtype})")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def soft_gate(z: torch.Tensor, temperature: float = 0.3, gate: str | Gate = "sigmoid") -> torch.Tensor:
    """``gate(z / T)``: the excitation of each unit, the soft gate that replaces a ReLU's ``1[z > 0]``.

    Args:
        z: pre-activations, any shape.
        temperature: T > 0 (default 0.3); T -> 0 gives the hard gate (0.5 at ``z = 0``).
        gate: ``"sigmoid"`` (default), ``"normal_cdf"``, ``"softsign"`` (:data:`GATES`) or a callable on ``z / T``.

    Returns:
        A tensor shaped like ``z``, in [0, 1].

    Raises:
        ValueError: a temperature that is not > 0, or an unknown gate name.
        TypeError: a temperature that is not a number.

    Example:
        >>> import torch
        >>> from utils import soft_gate
        >>> soft_gate(torch.tensor([-3.0, 0.0, 3.0]), temperature=0.3)
        tensor([4.5398e-05, 5.0000e-01, 9.9995e-01])
        >>> from utils import GATES
        >>> sorted(GATES)
        ['normal_cdf', 'sigmoid', 'softsign']
    """
    return get_gate(gate)(z / check_temperature(temperature))


def gate_or_hard(z: torch.Tensor, temperature: float | None, gate: str | Gate = "sigmoid") -> torch.Tensor:
    """The gate of ``z``: ReLU's own hard gate ``1[z > 0]`` when ``temperature`` is None, else ``gate(z / T)``."""
    return hard_gate(z) if temperature is None else soft_gate(z, temperature, gate)
