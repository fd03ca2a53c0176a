"""Alignment measures: is a vector field more than the model's own noise?

Four questions, each a function on tensors (images (N, 3, H, W) in [-1, 1], one target per image):

* :func:`pullback_gradient_similarity`: how alike the excitation pullback and the vanilla gradient are,
  as single-step fields and as k-step ascent perturbations, per temperature;
* :func:`pairwise_cosines`: how alike two models' fields are for the same image and target (the authors'
  claim that pullbacks highlight similar features across architectures);
* :func:`transfer`: whether a perturbation made on one model moves another model toward the same class;
* :func:`focus`: the share of positive attribution falling in the quadrant of a 2x2 mosaic that holds
  the target class (Arias-Duart et al., 2022, "Focus! Rating XAI methods and finding biases").
"""
from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.ascent import pullback_ascent
from ..core.pullback import Target, as_targets, excitation_pullback, vanilla_gradient

FIELD_METHODS = ("pullback", "gradient")


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per sample of two (N, ...) tensors, float64 (N,); 0 where either side is zero."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 0, (a * b).sum(1) / norms.clamp_min(1e-300), torch.zeros_like(norms))


def field(model: nn.Module, x: torch.Tensor, target: Target, method: str, temperature: float = 0.3) -> torch.Tensor:
    """The input-space field of logit ``target``: excitation pullback at ``temperature`` or vanilla gradient.

    Returns a tensor shaped like ``x`` (logit units per pixel unit).
    """
    if method == "pullback":
        return excitation_pullback(model, x, target, temperature=temperature)
    if method == "gradient":
        return vanilla_gradient(model, x, target)
    raise ValueError(f"method must be one of {FIELD_METHODS}, got {method!r}")


def perturbation(model: nn.Module, x: torch.Tensor, target: Target, method: str, temperature: float = 0.3,
                 steps: int = 5, alpha: float = 20.0, eps: float = 100.0,
                 initial_field: torch.Tensor | None = None) -> torch.Tensor:
    """The ``steps``-step projected L2 ascent perturbation (perturbed image minus ``x``), shaped like ``x``.

    ``initial_field``: :func:`field` at ``x`` for the same method and temperature, if already computed
    (the ascent's first step then costs no backward pass).
    """
    return pullback_ascent(model, x, target, steps=steps, alpha=alpha, eps=eps, method=method,
                           temperature=temperature, initial_direction=initial_field) - x


def pullback_gradient_similarity(model: nn.Module, x: torch.Tensor, target: Target,
                                 temperatures: Sequence[float] = (0.1, 0.3, 1.0, 2.0), steps: int = 5,
                                 alpha: float = 20.0, eps: float = 100.0) -> dict[float, dict[str, torch.Tensor]]:
    """Cosine between pullback and gradient, per sample, at each temperature.

    Returns ``{T: {"field": (N,), "ascent": (N,)}}``: the cosine of the single-step fields and of the
    ``steps``-step ascent perturbations (alpha, eps in [-1, 1] pixel units). The gradient side is
    computed once.
    """
    grad_field = field(model, x, target, "gradient")
    grad_delta = perturbation(model, x, target, "gradient", steps=steps, alpha=alpha, eps=eps, initial_field=grad_field)
    out = {}
    for t in temperatures:
        pull_field = field(model, x, target, "pullback", t)
        pull_delta = perturbation(model, x, target, "pullback", t, steps, alpha, eps, initial_field=pull_field)
        out[t] = {"field": cosine(pull_field, grad_field), "ascent": cosine(pull_delta, grad_delta)}
    return out


def pairwise_cosines(fields: Mapping[str, torch.Tensor]) -> dict[tuple[str, str], torch.Tensor]:
    """Cosine per sample between every pair of models' fields (same images, same targets).

    Args:
        fields: model name -> field (N, ...), all of one shape.

    Returns:
        ``{(name_a, name_b): (N,) float64}`` for each unordered pair, in the order of ``fields``.
    """
    shapes = {tuple(f.shape) for f in fields.values()}
    if len(shapes) != 1:
        raise ValueError(f"fields must share one shape, got {sorted(shapes)}")
    return {(a, b): cosine(fields[a], fields[b]) for a, b in combinations(fields, 2)}


def scale_to_norm(delta: torch.Tensor, norm: float) -> torch.Tensor:
    """``delta`` rescaled per sample to L2 norm ``norm`` (pixel units); a zero sample stays zero."""
    current = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
    return delta * (norm / current.clamp_min(1e-30))


@torch.no_grad()
def transfer(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, target: Target) -> dict[str, torch.Tensor]:
    """How far a perturbation ``delta`` (made on another model) moves ``model`` toward ``target``.

    The perturbed image is ``clamp(x + delta, -1, 1)``. Returns per sample (N,):
    ``"logp_rise"``: log p(target | perturbed) - log p(target | x), float64;
    ``"became"``: top-1 is the target after but was not before (bool);
    ``"was_target"``: top-1 was already the target before (bool; such samples cannot "become" it).
    """
    before = F.log_softmax(model(x).double(), dim=1)
    after = F.log_softmax(model((x + delta).clamp(-1.0, 1.0)).double(), dim=1)
    t = as_targets(target, x.shape[0], before.shape[1], before.device)
    was = before.argmax(1) == t
    return {"logp_rise": (after.gather(1, t[:, None]) - before.gather(1, t[:, None]))[:, 0],
            "became": (after.argmax(1) == t) & ~was, "was_target": was}


def mosaic(images: torch.Tensor) -> torch.Tensor:
    """A 2x2 mosaic of four images (4, C, H, W) -> (C, H, W): each resized to (H/2, W/2), quadrants in
    reading order (0 top left, 1 top right, 2 bottom left, 3 bottom right). H and W must be even."""
    if images.dim() != 4 or images.shape[0] != 4:
        raise ValueError(f"a mosaic takes four images (4, C, H, W), got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"image height and width must be even, got {h}x{w}")
    small = F.interpolate(images, size=(h // 2, w // 2), mode="bilinear", antialias=True, align_corners=False)
    top, bottom = torch.cat([small[0], small[1]], dim=-1), torch.cat([small[2], small[3]], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def focus(attribution: torch.Tensor, quadrant: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Focus: the share of positive relevance inside the given quadrant, per sample.

    Args:
        attribution: (N, C, H, W) attributions of 2x2 mosaics; relevance is the channel sum's positive part.
        quadrant: (N,) quadrant of each sample's target class, in :func:`mosaic`'s order.

    Returns:
        (N,) float64 in [0, 1]; NaN where a map has no positive relevance.
    """
    relevance = attribution.double().sum(1).clamp_min(0)
    n, h, w = relevance.shape
    q = torch.as_tensor(quadrant, device=relevance.device).long()
    if q.shape != (n,) or ((q < 0) | (q > 3)).any():
        raise ValueError(f"quadrant must hold one index in 0..3 per sample ({n}), got {q.tolist()}")
    blocks = relevance.view(n, 2, h // 2, 2, w // 2).sum((2, 4)).flatten(1)  # (N, 4) in reading order
    total = blocks.sum(1)
    inside = blocks.gather(1, q[:, None])[:, 0]
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, float("nan")))
