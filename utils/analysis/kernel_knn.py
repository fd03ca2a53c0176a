"""Kernel classifiers: how good a k-nearest-neighbour classifier the excitation kernel (Eq. 23), the input
cosine and the cosine of the penultimate features are."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.gates import Gate, gate_or_hard
from ..models.nets import PoolResNet
from .gating import chunks, input_kernel, path_kernel, preactivations, require_eval


@torch.no_grad()
def excitation_kernels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, temperatures=(None, 0.3),
                       gate: str | Gate = "sigmoid", chunk_size: int = 50, block_size: int = 250) -> list[torch.Tensor]:
    """Cosine-form excitation kernels (Eq. 23) of x against y, one per temperature, from shared forward passes.

    ``K_T(x, x') = cos(x, x') * prod_l cos(gate_l(x), gate_l(x'))`` with hard gates for T = None and
    ``gate(z / T)`` otherwise: the values of :func:`utils.analysis.gating.excitation_kernel` with
    ``normalise=True``. Each forward pass serves every temperature: the gates of a block of ``block_size``
    x-inputs are kept while all of y streams past, ``N + ceil(N / block_size) * M`` forward passes in all.
    The per-layer Gram products run in x's dtype (:func:`utils.analysis.gating.path_kernel`; float32 for
    the study, about 1e-6 relative error per factor).

    Memory: the block's unit-norm gates, ``len(temperatures) * block_size * units`` numbers (units = 0.81M per
    image for PoolResNet at 112px: 1.6 GB in float32 for two temperatures and 250 inputs).

    Args:
        x: inputs (N, ...); y: inputs (M, ...), e.g. val images against a train subset.

    Returns:
        list of (N, M) float64 kernels, in the order of ``temperatures``.
    """
    require_eval(model)
    cos_in = input_kernel(x, y)
    out = [torch.empty(len(x), len(y), dtype=torch.float64) for _ in temperatures]
    for bi in chunks(len(x), block_size):
        gx = _unit_gates(model, x[bi], temperatures, gate, chunk_size)
        for bj in chunks(len(y), chunk_size):
            gy = _unit_gates(model, y[bj], temperatures, gate, chunk_size)
            for kernel, sites_x, sites_y in zip(out, gx, gy):
                kernel[bi, bj] = path_kernel(cos_in[bi, bj], sites_x, sites_y, normalise=False, dtype=x.dtype)
    return out


def _unit_gates(model: nn.Module, x: torch.Tensor, temperatures, gate, chunk_size: int) -> list[list[torch.Tensor]]:
    """Per temperature, per ReLU call: the gates of each input flattened to unit norm, (N, units) in x's dtype
    (an all-zero gate stays zero, as in :func:`utils.analysis.gating.input_kernel`)."""
    per_t: list[list[list[torch.Tensor]]] = [[] for _ in temperatures]
    for sl in chunks(len(x), chunk_size):
        zs = preactivations(model, x[sl])
        for parts, t in zip(per_t, temperatures):
            gates = (gate_or_hard(z, t, gate) for z in zs)
            parts.append([F.normalize(q.flatten(1), dim=1) for q in gates])
    return [[torch.cat(site) for site in zip(*parts)] for parts in per_t]


@torch.no_grad()
def penultimate_features(model: PoolResNet, x: torch.Tensor, chunk_size: int = 50) -> torch.Tensor:
    """The globally pooled features ``model.pool(model.features(x))`` that ``model.fc`` reads:
    x (N, 3, H, W) -> (N, channels) float32. Their cosine (``input_kernel(f, g)``) is the baseline
    feature kernel to compare the excitation kernel against."""
    if not all(hasattr(model, a) for a in ("features", "pool", "fc")):
        raise TypeError(f"penultimate_features needs a PoolResNet (features, pool, fc), got {type(model).__name__}")
    require_eval(model)
    return torch.cat([model.pool(model.features(x[sl])).flatten(1) for sl in chunks(len(x), chunk_size)])


def kernel_knn_predict(kernel: torch.Tensor, train_labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Class of each row of ``kernel`` (N, M) by majority vote of its k most similar training points;
    ties go to the class with the largest summed similarity among the k."""
    if not 1 <= k <= kernel.shape[1]:
        raise ValueError(f"k must be in [1, {kernel.shape[1]}], got {k}")
    if len(train_labels) != kernel.shape[1]:
        raise ValueError(f"kernel has {kernel.shape[1]} columns but {len(train_labels)} train labels")
    sims, idx = kernel.double().topk(k, dim=1)
    votes = nn.functional.one_hot(train_labels.long()[idx], int(train_labels.max()) + 1).double()  # (N, k, C)
    counts, mass = votes.sum(1), (votes * sims[..., None]).sum(1)
    tied = counts == counts.max(1, keepdim=True).values
    return torch.where(tied, mass, torch.full_like(mass, -torch.inf)).argmax(1)


def kernel_knn_accuracy(kernel_val_train: torch.Tensor, train_labels: torch.Tensor, val_labels: torch.Tensor,
                        k: int = 1) -> float:
    """Top-1 accuracy of the k-nearest-neighbour classifier defined by a kernel (higher = more similar).

    How good a classifier a kernel is: for the excitation kernel (Eq. 23, hard or soft gates, e.g. from
    :func:`excitation_kernels`), the input kernel (:func:`utils.analysis.gating.input_kernel`) or the
    cosine of :func:`penultimate_features`. ``kernel_val_train`` is (N_val, N_train); labels (N_train,),
    (N_val,). Ties: see :func:`kernel_knn_predict`.
    """
    if len(val_labels) != kernel_val_train.shape[0]:
        raise ValueError(f"kernel has {kernel_val_train.shape[0]} rows but {len(val_labels)} val labels")
    pred = kernel_knn_predict(kernel_val_train, train_labels, k)
    return (pred == val_labels.long()).double().mean().item()
