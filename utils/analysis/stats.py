"""Small statistics on torch tensors shared by the evaluations."""
from __future__ import annotations

import torch


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last dimension; NaN where either side is constant."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of (N, ...) tensors (Pearson correlation of ranks; ties ranked in
    index order, so the ranks are never constant)."""
    def ranks(v):
        return torch.argsort(torch.argsort(v.flatten(1), dim=1), dim=1).to(torch.float64)
    return pearson(ranks(a), ranks(b))


def bootstrap_ci(values: torch.Tensor, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% confidence interval of the mean of ``values`` (1-D)."""
    idx = torch.randint(len(values), (resamples, len(values)), generator=torch.Generator().manual_seed(seed))
    means = values[idx].mean(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=means.dtype)).tolist()
    return low, high
