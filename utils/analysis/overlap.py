"""Gate overlap between checkpoints: the Jaccard index of their active units, per ReLU call site.

Every ReLU *call* is one gating site, as in :mod:`utils.analysis.gating`; models run in eval mode on
inputs batched in chunks of ``chunk_size``.
"""
from __future__ import annotations

import torch
from torch import nn

from .gating import chunks, preactivations, require_eval


class GateMismatchError(ValueError):
    """Gates given for a model do not match its ReLU calls (their number or a shape)."""



def _hard_patterns(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Bool ``z > 0`` per ReLU call, each (N, ...) like its pre-activation."""
    require_eval(model)
    return [z > 0 for z in preactivations(model, x)]


def _check_sites(a: list, b: list, what: str = "patterns") -> None:
    if len(a) != len(b):
        raise GateMismatchError(f"{what} have {len(a)} and {len(b)} ReLU call sites: not the same architecture")
    for i, (p, q) in enumerate(zip(a, b)):
        if p.shape != q.shape:
            raise GateMismatchError(f"ReLU call {i}: shapes {tuple(p.shape)} and {tuple(q.shape)} differ")


def _jaccard(inter: torch.Tensor, active_s: torch.Tensor, active_t: torch.Tensor) -> torch.Tensor:
    union = active_s + active_t - inter
    # Two empty patterns are identical: Jaccard 1.
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def gate_jaccard(patterns_s: list[torch.Tensor], patterns_t: list[torch.Tensor],
                 per_site: bool = False) -> float | torch.Tensor:
    """Overlap of the active units of two models on the same inputs (Hypothesis 1: patterns stabilise).

    Per ReLU call site i, the Jaccard index ``|A_i ∩ B_i| / |A_i ∪ B_i|`` of the active sets pooled
    over all samples and units of the site (so a sample with few active units weighs little; a site
    where both sets are empty scores 1); then the unweighted mean over sites.

    Args:
        patterns_s, patterns_t: hard gates per call site, bool or {0, 1}, each (N, ...) with matching
            shapes, e.g. from :func:`utils.analysis.gating.gate_patterns` with ``temperature=None`` or
            :func:`utils.analysis.cross_gating.gates_of`.
        per_site: return the (sites,) float64 tensor of per-site indices instead of their mean.
    """
    _check_sites(patterns_s, patterns_t)
    inter, act_s, act_t = (torch.zeros(len(patterns_s), dtype=torch.float64) for _ in range(3))
    for i, (p, q) in enumerate(zip(patterns_s, patterns_t)):
        p, q = _as_bool(p), _as_bool(q)
        inter[i], act_s[i], act_t[i] = (p & q).sum(), p.sum(), q.sum()
    sites = _jaccard(inter, act_s, act_t)
    return sites if per_site else sites.mean().item()


def _as_bool(p: torch.Tensor) -> torch.Tensor:
    if p.dtype == torch.bool:
        return p
    if not ((p == 0) | (p == 1)).all():
        raise ValueError("gate_jaccard takes hard gates (bool or {0, 1}); got soft values")
    return p != 0


@torch.no_grad()
def jaccard_matrix(models: list[nn.Module], x: torch.Tensor, chunk_size: int = 50,
                   per_site: bool = False) -> torch.Tensor:
    """:func:`gate_jaccard` between every pair of ``models`` on inputs x (N, ...), pooled over all of x.

    Each model's hard patterns are computed once per chunk (memory: about
    ``len(models) * chunk_size * units`` bytes, units = 3.4M per image for PoolResNet at 224px).

    Returns:
        (S, S) float64 symmetric matrix with ones on the diagonal, or (S, S, sites) if ``per_site``.
    """
    S = len(models)
    inter = None
    for sl in chunks(len(x), chunk_size):
        patterns = [_hard_patterns(m, x[sl]) for m in models]
        for p in patterns[1:]:
            _check_sites(patterns[0], p)
        if inter is None:
            inter = torch.zeros(S, S, len(patterns[0]), dtype=torch.float64)
        for s in range(S):
            for t in range(s, S):
                counts = torch.tensor([(a & b).sum().item() for a, b in zip(patterns[s], patterns[t])],
                                      dtype=torch.float64)
                inter[s, t] += counts
                if t != s:
                    inter[t, s] += counts
        del patterns
    active = inter.diagonal(dim1=0, dim2=1).T  # (S, sites): |A ∩ A| = |A|
    sites = _jaccard(inter, active[:, None, :], active[None, :, :])
    return sites if per_site else sites.mean(-1)
