"""Call-level access to a ReLU network's gates: record every ReLU pre-activation, and the kernel they define.

Every ReLU *call* is one gating site, including reused modules and functional calls, found by the
same function-mode interception that :mod:`utils.excitation` uses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.excitation import RELU_FUNCTIONS
from ..core.gates import Gate, check_temperature, get_gate, hard_gate


class _RecordPreactivations(TorchFunctionMode):
    def __init__(self, store: list):
        super().__init__()
        self.store = store

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELU_FUNCTIONS:
            self.store.append(args[0].detach().clone())  # before an in-place ReLU overwrites it
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def preactivations(model: nn.Module, x: torch.Tensor, return_output: bool = False):
    """The pre-activation z of every ReLU call in ``model(x)``, in call order; each (N, ...) like its layer.

    With ``return_output``, returns ``(zs, model(x))`` from that one forward pass.
    """
    store: list[torch.Tensor] = []
    with _RecordPreactivations(store):
        output = model(x)
    return (store, output) if return_output else store


def gate_patterns(model: nn.Module, x: torch.Tensor, temperature: float | None = None,
                  gate: str | Gate = "sigmoid") -> list[torch.Tensor]:
    """Per ReLU call, the gates of each sample flattened to (N, units): hard ``1[z > 0]`` when
    ``temperature`` is None, else ``gate(z / temperature)``."""
    zs = preactivations(model, x)
    if temperature is None:
        return [hard_gate(z).flatten(1) for z in zs]
    t, g = check_temperature(temperature), get_gate(gate)
    return [g(z / t).flatten(1) for z in zs]


def excitation_kernel(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                      temperature: float | None = 0.3, gate: str | Gate = "sigmoid",
                      normalise: bool = True, per_layer: bool = False) -> torch.Tensor:
    """The excitation kernel ``K(x, x') = <x, x'> * prod_l <gate_l(x), gate_l(x')>`` (Eq. 23).

    Args:
        model: ReLU network; every ReLU call is one layer l.
        x: inputs (N, ...); y: inputs (M, ...), default ``x``.
        temperature: soft gates ``gate(z / T)``; None for hard gates ``1[z > 0]``.
        normalise: return the cosine form ``K(x, x') / sqrt(K(x, x) K(x', x'))`` (the product of the
            input cosine and the per-layer gate cosines); False gives the raw product, which over- or
            underflows for deep networks.
        per_layer: return the geometric mean of the factors, ``K ** (1 / (layers + 1))``, instead of
            their product: the same ordering, on a readable scale.

    Returns:
        (N, M) float64 matrix.
    """
    y = x if y is None else y
    gx, gy = gate_patterns(model, x, temperature, gate), gate_patterns(model, y, temperature, gate)
    kernel = kernel_from_patterns(x, y, gx, gy, normalise)
    return kernel.sign() * kernel.abs() ** (1 / (len(gx) + 1)) if per_layer else kernel


def kernel_from_patterns(x, y, gates_x, gates_y, normalise: bool = True) -> torch.Tensor:
    """Eq. 23 from inputs and their per-call gate patterns (as from :func:`gate_patterns`): (N, M) float64."""
    kernel = input_kernel(x, y, normalise)
    for a, b in zip(gates_x, gates_y):
        kernel = kernel * _gram(a, b, normalise)
    return kernel


def input_kernel(x: torch.Tensor, y: torch.Tensor | None = None, normalise: bool = True) -> torch.Tensor:
    """``<x, x'>`` between flattened inputs (N, ...) and (M, ...), as an (N, M) float64 matrix (cosine if normalised)."""
    return _gram(x.flatten(1), (x if y is None else y).flatten(1), normalise)


def _gram(a: torch.Tensor, b: torch.Tensor, normalise: bool) -> torch.Tensor:
    a, b = a.double(), b.double()
    if normalise:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return a @ b.T



def class_contrast(kernel: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean kernel value over same-class pairs (off the diagonal) and over different-class pairs."""
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    return kernel[same & off_diagonal].mean().item(), kernel[~same].mean().item()
