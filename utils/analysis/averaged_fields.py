"""Attributions that average a field over many points: SmoothGrad, FusionGrad, Integrated Gradients, GradientShap.

Each takes ``field(model, points, targets) -> tensor shaped like points`` (the vanilla gradient or the excitation
pullback), so that one definition gives both a method and its pullback version. Points are evaluated in batches
of at most :data:`MAX_BATCH` images; every random draw comes from the ``generator`` passed in, one draw at a time
in a fixed order, so a result does not depend on the batch size.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

Field = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

MAX_BATCH = 16
"""Most images in one forward-backward pass of the averaged fields (memory: about 100 MB an image for ResNet50)."""


def default_generator(images: torch.Tensor, generator: torch.Generator | None, seed: int = 0) -> torch.Generator:
    """``generator``, or a new one on the images' device seeded with ``seed``."""
    return generator if generator is not None else torch.Generator(images.device).manual_seed(seed)


def _normal(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


def weighted_field_sum(field: Field, model: nn.Module, points: Sequence[torch.Tensor], weights: Sequence[float],
                       targets: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[k] * field(model, points[k], targets)``, ``points`` a list of K batches (N, ...) evaluated
    in stacked batches of at most :data:`MAX_BATCH` images."""
    n = points[0].shape[0]
    group = max(1, MAX_BATCH // n)
    total = torch.zeros_like(points[0])
    for start in range(0, len(points), group):
        stop = min(start + group, len(points))
        fields = field(model, torch.cat(points[start:stop]), targets.repeat(stop - start))
        for k, f in zip(range(start, stop), fields.split(n)):
            total += weights[k] * f
    return total


def smooth(field: Field, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, draws: int = 50,
           sigma: float = 0.15, generator: torch.Generator | None = None) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., 2017) of ``field``: its mean over ``draws`` points ``x + N(0, sigma^2)`` (noise
    in [-1, 1] pixel units; the points are not clipped)."""
    generator = default_generator(images, generator)
    points = [images + sigma * _normal(images, generator) for _ in range(draws)]
    return weighted_field_sum(field, model, points, [1.0 / draws] * draws, targets)


@torch.no_grad()
def _perturb_weights_(model: nn.Module, originals: list[torch.Tensor], sigma: float,
                      generator: torch.Generator) -> None:
    """Every parameter set to its original times ``N(1, sigma^2)`` noise (no draw at all when sigma is 0)."""
    for p, original in zip(model.parameters(), originals):
        p.copy_(original if sigma == 0 else original * (1 + sigma * _normal(original, generator)))


def fusion(field: Field, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, models: int = 10,
           draws: int = 10, weight_sigma: float = 0.1, sigma: float = 0.15,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """FusionGrad (Bykov et al., 2022) of ``field``: the mean over ``models`` copies of the model, each parameter
    multiplied by ``N(1, weight_sigma^2)`` noise, of :func:`smooth` with ``draws`` input draws. The model itself is
    not changed (a copy is perturbed); with ``weight_sigma = 0`` no weight noise is drawn and it is :func:`smooth`
    with ``models * draws`` draws."""
    generator = default_generator(images, generator)
    noisy = copy.deepcopy(model)
    originals = [p.detach().clone() for p in model.parameters()]
    total = torch.zeros_like(images)
    for _ in range(models):
        _perturb_weights_(noisy, originals, weight_sigma, generator)
        total += smooth(field, noisy, images, targets, draws, sigma, generator)
    return total / models


def trapezoid(steps: int) -> tuple[list[float], list[float]]:
    """Nodes ``alpha_i = i / (steps - 1)`` and weights of the trapezoid rule on [0, 1] (they sum to 1).

    Captum's ``riemann_trapezoid`` uses the same nodes with weights ``1 / steps`` (halved at both ends), which sum
    to ``1 - 1 / steps``: its maps are ours times that constant."""
    if steps < 2:
        raise ValueError(f"the trapezoid rule needs at least 2 steps, got {steps}")
    nodes = torch.linspace(0, 1, steps, dtype=torch.float64).tolist()
    weights = [1.0 / (steps - 1)] * steps
    weights[0] /= 2
    weights[-1] /= 2
    return nodes, weights


def integrated(field: Field, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
               steps: int = 10) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al., 2017) of ``field`` from the zero image (mid-grey):
    ``x * integral_0^1 field(alpha x) d alpha`` by the trapezoid rule on ``steps`` nodes (:func:`trapezoid`)."""
    nodes, weights = trapezoid(steps)
    return images * weighted_field_sum(field, model, [a * images for a in nodes], weights, targets)


def shap(field: Field, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, samples: int = 5,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """GradientShap (Lundberg and Lee, 2017; Captum's, zero baseline, no input noise) of ``field``:
    ``x * mean_k field(alpha_k x)``, ``alpha_k ~ U(0, 1)`` drawn per image."""
    generator = default_generator(images, generator)
    shape = (images.shape[0],) + (1,) * (images.dim() - 1)
    alphas = [torch.rand(shape, generator=generator, device=generator.device, dtype=images.dtype).to(images.device)
              for _ in range(samples)]
    return images * weighted_field_sum(field, model, [a * images for a in alphas], [1.0 / samples] * samples,
                                       targets)
