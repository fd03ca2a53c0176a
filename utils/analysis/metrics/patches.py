"""Metrics that perturb square cells of a grid: Infidelity with optimal scaling and Faithfulness Correlation over
grid cells (the Semantic Pullbacks paper's two subclasses of Quantus 0.6's Infidelity and FaithfulnessCorrelation).

A grid of ``patch`` px cells covers the image edge-padded to a multiple of ``patch`` (Quantus'
``get_padding_size``: the missing rows split floor/ceil between top and bottom, the same for columns); cells
are numbered row by row, as Quantus' ``get_block_indices`` yields them, and span every channel."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_inputs, check_positive, correlation_pearson, target_scores, uniform, unperturbed


def padding(size: int, patch: int) -> tuple[int, int]:
    """Rows (or columns) added before and after ``size`` to reach a multiple of ``patch`` (Quantus' split)."""
    missing = -size % patch
    return missing // 2, missing - missing // 2


def cell_map(height: int, width: int, patch: int, device=None) -> tuple[torch.Tensor, int]:
    """(H, W) long: the grid cell of every pixel, and the number of cells."""
    check_positive(patch=patch)
    (top, bottom), (left, right) = padding(height, patch), padding(width, patch)
    rows = (torch.arange(height, device=device) + top) // patch
    cols = (torch.arange(width, device=device) + left) // patch
    columns = (width + left + right) // patch
    return rows[:, None] * columns + cols[None, :], (height + top + bottom) // patch * columns


def cell_sums(values: torch.Tensor, patch: int, pad_mode: str = "constant") -> torch.Tensor:
    """Sums (N, cells) of (N, C, H, W) over each grid cell and all channels; ``pad_mode="replicate"`` counts the
    edge-padded border as Quantus' subclass does for the attribution, "constant" (zeros) counts only the image."""
    n, c, h, w = values.shape
    (top, bottom), (left, right) = padding(h, patch), padding(w, patch)
    padded = F.pad(values, (left, right, top, bottom), mode=pad_mode)
    grid_h, grid_w = padded.shape[2] // patch, padded.shape[3] // patch
    return padded.view(n, c, grid_h, patch, grid_w, patch).sum((1, 3, 5)).flatten(1)


def _accumulator(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def infidelity(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
               attributions: Mapping[str, torch.Tensor], *, generator: torch.Generator, samples: int = 5,
               patch_sizes: Sequence[int] = (112, 56), batch_size: int | None = None, low: float = -1.0,
               high: float = 1.0) -> dict[str, torch.Tensor]:
    """Infidelity with optimal scaling (Yeh et al., 2019, Def. 2.1 and Sec. 3; the paper's
    ``InfidelityOptimalScaling`` on Quantus 0.6's ``Infidelity``; lower is better).

    For each of ``samples`` draws and each patch size, the grid's cells are replaced one after another, each by
    one U(low, high) value per image (Quantus' batched "uniform" baseline: the whole cell, all channels, gets
    the same value), and they stay replaced (Quantus' loop perturbs its last perturbed copy): the k-th
    perturbation of a pass has cells 0..k replaced. With ``I = x - x~``, ``a = sum(attribution * I)`` and
    ``b = f(x) - f(x~)`` (``f`` the target logit) over all T perturbations of an image, the score is
    ``mean_T (beta a - b)^2`` with the optimal ``beta = sum(ab) / sum(a^2)`` (1 as denominator where
    ``sum(a^2) = 0``, as Captum's). No normalisation, no absolute value (Quantus' defaults).

    The perturbed logits do not depend on the attribution: they are computed once for all names,
    ``samples * sum(cells)`` forward passes an image (100 at 224 px with the defaults).

    Args:
        images: (N, C, H, W) in [-1, 1]; targets: (N,); attributions: name -> (N, C, H, W).
        generator: CPU generator of the uniform values, drawn in Quantus' order (sample, patch size, cell,
            image).

    Returns:
        name -> (N,) float64 on the CPU, in squared logit units.
    """
    check_inputs(images, targets, attributions)
    check_positive(samples=samples, **{f"patch size {p}": p for p in patch_sizes})
    n, _, h, w = images.shape
    targets = targets.to(images.device)
    maps, cells = zip(*(cell_map(h, w, p, images.device) for p in patch_sizes))
    passes = [s for _ in range(samples) for s in range(len(patch_sizes))]  # (sample, patch size), in draw order
    starts = [sum(cells[s] for s in passes[:i]) for i in range(len(passes) + 1)]
    size_of, step_of, start_of = (torch.tensor(column, device=images.device) for column in zip(
        *((s, k, start) for start, s in zip(starts, passes) for k in range(cells[s]))))
    total, stacked = starts[-1], torch.stack(maps)
    noise = uniform(generator, (total, n), low, high, images)  # one row per perturbation

    def build(index):  # perturbation t of image j: cells 0..k of its pass replaced by that pass's values
        t, j = index // n, index % n
        cell = stacked[size_of[t]]
        values = noise[start_of[t, None, None] + cell, j[:, None, None]]
        replaced = cell <= step_of[t, None, None]
        return torch.where(replaced[:, None], values[:, None], images[j]), targets[j]

    y = unperturbed(model, images, targets, batch_size)
    b = (y[None] - target_scores(model, total * n, build, batch_size, images.device).view(total, n)).double().cpu()
    acc = _accumulator(images.device)
    results = {}
    for name, attribution in attributions.items():
        weighted = [cell_sums((attribution * images).to(acc), p) for p in patch_sizes]
        plain = [cell_sums(attribution.to(acc), p) for p in patch_sizes]
        a = torch.cat([(weighted[s].T - noise[start:start + cells[s]].to(acc) * plain[s].T).cumsum(0)
                       for start, s in zip(starts, passes)]).double().cpu()
        a2, ab = (a * a).sum(0), (a * b).sum(0)
        beta = ab / torch.where(a2 != 0, a2, torch.ones_like(a2))
        results[name] = ((beta * a - b) ** 2).mean(0)
    return results


def faithfulness_correlation(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                             attributions: Mapping[str, torch.Tensor], *, patch: int = 56, baseline: float = 0.0,
                             batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Faithfulness Correlation over grid cells (Bhatt et al., 2020, Eq. 3; the paper's
    ``FaithfulnessCorrelationPatches`` on Quantus 0.6's ``FaithfulnessCorrelation``; higher is better).

    Every ``patch`` px cell of the grid is set to ``baseline`` in turn (all channels, one cell at a time); the
    score is the Pearson correlation across cells between the cell's summed ``|attribution|`` (``abs=True``;
    over the edge-padded attribution, as the paper's subclass sums it) and the target logit's drop
    ``f(x) - f(x with the cell set to baseline)``. Quantus' default max-normalisation rescales every map by a
    positive number, which no correlation sees, so it is left out. NaN where every cell sums alike.

    The perturbed logits are computed once for all names: one forward pass per cell (16 at 224 px).

    Args:
        images: (N, C, H, W) in [-1, 1]; targets: (N,); attributions: name -> (N, C, H, W).

    Returns:
        name -> (N,) float64 on the CPU, correlations in [-1, 1].
    """
    check_inputs(images, targets, attributions)
    n, _, h, w = images.shape
    targets = targets.to(images.device)
    cell, cells = cell_map(h, w, patch, images.device)

    def build(index):
        t, j = index // n, index % n
        deleted = cell[None] == t[:, None, None]
        return images[j].masked_fill(deleted[:, None], baseline), targets[j]

    y = unperturbed(model, images, targets, batch_size)
    drop = y[:, None] - target_scores(model, cells * n, build, batch_size, images.device).view(cells, n).T
    return {name: correlation_pearson(cell_sums(a.abs(), patch, "replicate"), drop)
            for name, a in attributions.items()}
