"""Call-level access to a ReLU network's gates: record every ReLU pre-activation, and the kernel they define.

Every ReLU *call* is one gating site, including reused modules and functional calls, found by the
same call interception that the excitation pullback uses (:class:`utils.core.interception.Interceptor`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.gates import Gate, gate_or_hard
from ..core.interception import RELU_FUNCTIONS, Interceptor


def _record_preactivations(store: list) -> Interceptor:
    def record(func, args, kwargs):
        store.append(args[0].detach().clone())  # before an in-place ReLU overwrites it
        return func(*args, **kwargs)

    return Interceptor({fn: record for fn in RELU_FUNCTIONS})


@torch.no_grad()
def preactivations(model: nn.Module, x: torch.Tensor, return_output: bool = False):
    """The pre-activation z of every ReLU call in ``model(x)``, in call order; each (N, ...) like its layer.

    With ``return_output``, returns ``(zs, model(x))`` from that one forward pass.
    """
    store: list[torch.Tensor] = []
    with _record_preactivations(store):
        output = model(x)
    return (store, output) if return_output else store


def gate_patterns(model: nn.Module, x: torch.Tensor, temperature: float | None = None,
                  gate: str | Gate = "sigmoid") -> list[torch.Tensor]:
    """Per ReLU call, the gates of each sample flattened to (N, units): hard ``1[z > 0]`` when
    ``temperature`` is None, else ``gate(z / temperature)``."""
    return [gate_or_hard(z, temperature, gate).flatten(1) for z in preactivations(model, x)]


def require_eval(model: nn.Module) -> None:
    """Refuse a model in training mode: BatchNorm would use batch statistics and overwrite its running ones."""
    if model.training:
        raise ValueError("model is in training mode: call model.eval() first (BatchNorm would use batch "
                         "statistics and overwrite its running ones)")


def chunks(n: int, chunk_size: int) -> list[slice]:
    """Slices covering ``range(n)`` in pieces of at most ``chunk_size``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]


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


def gate_kernel(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, temperature: float | None = 0.3,
                gate: str | Gate = "sigmoid", per_layer: bool = True) -> torch.Tensor:
    """The gate factors of Eq. 23 alone: ``prod_l cos(gate_l(x), gate_l(x'))``, without the input cosine.

    Gates are non-negative, so every factor lies in [0, 1] and the kernel has no sign (the input cosine
    ``<x, x'>`` of raw pixels does). ``per_layer`` gives the geometric mean of the factors instead of their
    product. Returns an (N, M) float64 matrix.
    """
    y = x if y is None else y
    gx, gy = gate_patterns(model, x, temperature, gate), gate_patterns(model, y, temperature, gate)
    kernel = path_kernel(torch.ones(len(x), len(y), dtype=torch.float64), gx, gy)
    return kernel ** (1 / len(gx)) if per_layer else kernel


def kernel_from_patterns(x, y, gates_x, gates_y, normalise: bool = True, dtype=torch.float64) -> torch.Tensor:
    """Eq. 23 from inputs and their per-call gate patterns (as from :func:`gate_patterns`): (N, M) float64."""
    return path_kernel(input_kernel(x, y, normalise), gates_x, gates_y, normalise, dtype)


def path_kernel(inputs: torch.Tensor, gates_x, gates_y, normalise: bool = True, dtype=torch.float64) -> torch.Tensor:
    """The product of Eq. 23: an (N, M) float64 input kernel times ``<gates_x[l], gates_y[l]>`` of every layer l.

    Each Gram product runs in ``dtype`` and is multiplied in in float64: float64 for exact comparisons,
    float32 for large kernels (about 1e-6 relative error per factor). With ``normalise`` the gates are
    scaled to unit norm first (the cosine form); pass pre-normalised gates with ``normalise=False``.
    """
    kernel = inputs.clone()
    for a, b in zip(gates_x, gates_y):
        kernel *= _gram(a, b, normalise, dtype)
    return kernel


def input_kernel(x: torch.Tensor, y: torch.Tensor | None = None, normalise: bool = True) -> torch.Tensor:
    """``<x, x'>`` between flattened inputs (N, ...) and (M, ...), as an (N, M) float64 matrix (cosine if normalised)."""
    return _gram(x.flatten(1), (x if y is None else y).flatten(1), normalise)


def _gram(a: torch.Tensor, b: torch.Tensor, normalise: bool, dtype=torch.float64) -> torch.Tensor:
    a, b = a.to(dtype), b.to(dtype)
    if normalise:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return (a @ b.T).double()


def class_contrast(kernel: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean kernel value over same-class pairs (off the diagonal) and over different-class pairs."""
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    return kernel[same & off_diagonal].mean().item(), kernel[~same].mean().item()
