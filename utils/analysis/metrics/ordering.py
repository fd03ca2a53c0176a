"""Metrics that perturb the input's features in the order of their attribution, ``features_in_step`` at a time:
Faithfulness Estimate and Monotonicity Correlation (Quantus 0.6's ``FaithfulnessEstimate`` and
``MonotonicityCorrelation``).

A feature is one value of the (C, H, W) input, as Quantus flattens it (3,136 features are a sixteenth of one
channel of a 224 px image; an image has 48 steps). Both sort ``|attribution|`` (``abs=True``); Quantus'
max-normalisation before it divides a map by a positive number, which changes neither the order nor a
correlation, so it is left out. Equal values keep their index order (a stable sort; numpy's default sort,
which Quantus uses, orders ties arbitrarily)."""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from .common import (check_inputs, check_positive, correlation_pearson, correlation_spearman, target_scores, uniform,
                     unperturbed)


def steps_in_order(attribution: torch.Tensor, features_in_step: int,
                   descending: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """For (N, C, H, W): the step of every feature (N, C*H*W) when ``|attribution|`` is sorted (``descending``:
    largest first) and cut into steps of ``features_in_step``, and the summed ``|attribution|`` of each step
    (N, steps)."""
    check_positive(features_in_step=features_in_step)
    a = attribution.abs().flatten(1)
    n, features = a.shape
    steps = math.ceil(features / features_in_step)
    ordered, order = a.sort(dim=1, descending=descending, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(features, device=a.device).expand(n, -1))
    sums = torch.nn.functional.pad(ordered, (0, steps * features_in_step - features))
    return (rank // features_in_step).int(), sums.view(n, steps, features_in_step).sum(2)


def faithfulness_estimate(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                          attributions: Mapping[str, torch.Tensor], *, features_in_step: int = 3136,
                          baseline: float = 0.0, batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Faithfulness Estimate (Alvarez-Melis and Jaakkola, 2018; Quantus 0.6's ``FaithfulnessEstimate``; higher is
    better).

    The features are taken from the most to the least relevant by ``|attribution|``, ``features_in_step`` at a
    time; each step alone (not cumulatively) is set to ``baseline``. The score is the Pearson correlation across
    steps between the step's summed ``|attribution|`` and the target logit's drop ``f(x) - f(x~)``; NaN where
    either is constant. One forward pass per step, per name (48 at 224 px).

    Args:
        images: (N, C, H, W) in [-1, 1]; targets: (N,); attributions: name -> (N, C, H, W).

    Returns:
        name -> (N,) float64 on the CPU, correlations in [-1, 1].
    """
    check_inputs(images, targets, attributions)
    n = len(images)
    targets = targets.to(images.device)
    flat = images.flatten(1)
    y = unperturbed(model, images, targets, batch_size)
    results = {}
    for name, attribution in attributions.items():
        step_of, sums = steps_in_order(attribution, features_in_step, descending=True)
        steps = sums.shape[1]

        def build(index, step_of=step_of):
            t, j = index // n, index % n
            deleted = step_of[j] == t[:, None]
            return flat[j].masked_fill(deleted, baseline).view(-1, *images.shape[1:]), targets[j]

        drop = y[:, None] - target_scores(model, steps * n, build, batch_size, images.device).view(steps, n).T
        results[name] = correlation_pearson(sums, drop)
    return results


def monotonicity_correlation(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                             attributions: Mapping[str, torch.Tensor], *, generator: torch.Generator,
                             samples: int = 10, features_in_step: int = 3136, eps: float = 1e-12,
                             batch_size: int | None = None, low: float = -1.0,
                             high: float = 1.0) -> dict[str, torch.Tensor]:
    """Monotonicity Correlation (Nguyen and Martínez, 2020; Quantus 0.6's ``MonotonicityCorrelation``; higher is
    better).

    The features are taken from the least to the most relevant by ``|attribution|``, ``features_in_step`` at a
    time; each step alone is replaced ``samples`` times by one U(low, high) value per image (Quantus' batched
    "uniform" baseline). With ``p`` the target's softmax probability (Quantus' default ``softmax=True`` for this
    metric), a step's variance is ``mean_samples (p(x~) - p(x))^2 / p(x)^2`` (no division where ``|p(x)| < eps``);
    the score is the Spearman correlation across steps between the step's summed ``|attribution|`` and its
    variance (tied values share their mean rank, as scipy ranks them).

    The uniform values are drawn once (in Quantus' order: step, sample, image) and serve every name, so a
    name's score does not depend on which others are scored with it. ``samples`` forward passes per step, per
    name (480 at 224 px with the defaults), through the model ``batch_size`` at a time (default:
    ``common.CPU_BATCH`` on a CPU, ``common.DEVICE_BATCH`` elsewhere).

    Args:
        images: (N, C, H, W) in [-1, 1]; targets: (N,); attributions: name -> (N, C, H, W).
        generator: CPU generator of the uniform values.

    Returns:
        name -> (N,) float64 on the CPU, correlations in [-1, 1].
    """
    check_inputs(images, targets, attributions)
    check_positive(samples=samples, features_in_step=features_in_step)
    n = len(images)
    targets = targets.to(images.device)
    flat = images.flatten(1)
    steps = math.ceil(flat.shape[1] / features_in_step)
    noise = uniform(generator, (steps, samples, n), low, high, images)
    p = unperturbed(model, images, targets, batch_size, softmax=True)
    inverse = torch.where(p.abs() >= eps, 1 / p.double() ** 2, torch.ones_like(p, dtype=torch.float64)).cpu()
    results = {}
    for name, attribution in attributions.items():
        step_of, sums = steps_in_order(attribution, features_in_step, descending=False)

        def build(index, step_of=step_of):
            t, s, j = index // (samples * n), index // n % samples, index % n
            replaced = step_of[j] == t[:, None]
            perturbed = torch.where(replaced, noise[t, s, j][:, None], flat[j])
            return perturbed.view(-1, *images.shape[1:]), targets[j]

        perturbed = target_scores(model, steps * samples * n, build, batch_size, images.device, softmax=True)
        variance = ((perturbed.view(steps, samples, n) - p).double().cpu() ** 2).mean(1) * inverse
        results[name] = correlation_spearman(sums, variance.T)
    return results
