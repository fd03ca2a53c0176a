"""Metrics that call the explainers again: Max-Sensitivity on noisy inputs and Random Logit for another class
(Quantus 0.6's ``MaxSensitivity`` and ``RandomLogit``). They need autograd, so no inference mode here."""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from .common import Explainer, check_explainers, check_inputs, check_positive, correlation_pearson, uniform


def max_sensitivity(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                    attributions: Mapping[str, torch.Tensor], *, explainers: Mapping[str, Explainer],
                    generator: torch.Generator, samples: int = 10, radius: float = 0.02) -> dict[str, torch.Tensor]:
    """Max-Sensitivity (Yeh et al., 2019, Def. 3.1; Quantus 0.6's ``MaxSensitivity``; lower is better).

    ``samples`` times, every input value gets its own U(-radius, radius) noise (Quantus' ``uniform_noise``,
    no clipping) and the explainer is run again on the noisy images for the same targets; the score is the
    largest relative change ``||a(x~) - a(x)|| / ||a(x)||`` (Frobenius norms over the whole map; NaN samples
    ignored, Quantus' ``nanmax``). No normalisation, no absolute value (Quantus' defaults). The noise is drawn
    once per sample and serves every name.

    Args:
        images: (N, C, H, W) in [-1, 1]; targets: (N,); attributions: name -> (N, C, H, W), each
            ``explainers[name](model, images, targets)``.
        explainers: name -> ``(model, images, targets) -> (N, C, H, W)``.
        generator: CPU generator of the noise, drawn per sample in the images' layout (N, C, H, W).

    Returns:
        name -> (N,) float64 on the CPU.
    """
    check_inputs(images, targets, attributions)
    check_explainers(attributions, explainers)
    check_positive(samples=samples)
    worst = {name: torch.full((len(images),), float("nan"), device=images.device) for name in attributions}
    for _ in range(samples):
        noisy = images + uniform(generator, tuple(images.shape), -radius, radius, images)
        for name, a in attributions.items():
            changed = explainers[name](model, noisy, targets).detach()
            ratio = (changed - a).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)
            worst[name] = torch.fmax(worst[name], ratio.to(worst[name].dtype))
    return {name: w.double().cpu() for name, w in worst.items()}


def random_logit(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 attributions: Mapping[str, torch.Tensor], *, explainers: Mapping[str, Explainer],
                 generator: torch.Generator, num_classes: Optional[int] = None) -> dict[str, torch.Tensor]:
    """Random Logit (Sixt et al., 2020; Quantus 0.6's ``RandomLogit`` with ``similarity_func=correlation_pearson``
    as the paper sets it; lower is better).

    For each image a class other than its target is drawn uniformly (one draw per image, shared by every name);
    the score is the Pearson correlation between the map for the target and the explainer's map for that class.
    Quantus' max-normalisation rescales both maps by positive numbers, which the correlation does not see.

    Args:
        images: (N, C, H, W) in [-1, 1]; targets: (N,); attributions: name -> (N, C, H, W).
        explainers: name -> ``(model, images, targets) -> (N, C, H, W)``.
        generator: CPU generator of the other classes.
        num_classes: the model's number of classes; None reads it from one forward pass.

    Returns:
        name -> (N,) float64 on the CPU, correlations in [-1, 1].
    """
    check_inputs(images, targets, attributions)
    check_explainers(attributions, explainers)
    if num_classes is None:
        with torch.inference_mode():
            num_classes = model(images[:1]).shape[1]
    if num_classes < 2:
        raise ValueError(f"random_logit needs at least 2 classes, got num_classes={num_classes}")
    others = other_classes(targets, num_classes, generator)
    return {name: correlation_pearson(a.flatten(1), explainers[name](model, images, others).detach().flatten(1))
            for name, a in attributions.items()}


def other_classes(targets: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A class drawn uniformly from the ``num_classes - 1`` classes other than each target (Quantus' draw: an index
    into the classes with the target left out)."""
    index = torch.randint(0, num_classes - 1, targets.shape, generator=generator).to(targets.device)
    return index + (index >= targets).long()
