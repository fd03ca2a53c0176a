"""``evaluate_explainers``: the Semantic Pullbacks table's explainers scored by its metrics, per image."""
from __future__ import annotations

import time
from typing import Callable, Mapping

import torch
from torch import nn

from ..core.pullback import as_targets, check_inputs
from .explainers import EXPLAINERS, available, seeded


def _chosen_explainers(model, explainers) -> list[str] | dict[str, Callable]:
    """Registry names (every row the model can run by default), or a mapping name -> explainer kept as it is."""
    if explainers is None:
        return available(model)
    if isinstance(explainers, Mapping):
        return dict(explainers)
    names = [explainers] if isinstance(explainers, str) else list(explainers)
    unknown = [n for n in names if n not in EXPLAINERS]
    if unknown:
        raise ValueError(f"unknown explainers {unknown}: choose from {list(EXPLAINERS)} or pass name -> callable")
    return names


def metric_seed(seed: int, metric: str) -> int:
    """The seed of one metric's draws (and of the explainers it calls again), from the run's seed and its name."""
    return seed * 1_000_003 + sum(map(ord, metric))


def _chosen_metrics(metrics) -> dict:
    from .metrics import METRICS

    names = list(METRICS) if metrics is None else [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}: choose from {list(METRICS)}")
    return {n: METRICS[n] for n in names}


def attributions_of(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, explainers: Mapping,
                    timings: dict | None = None) -> dict[str, torch.Tensor]:
    """``{name: explainer(model, images, targets)}``; the seconds each took go to ``timings`` when given."""
    result = {}
    for name, explain in explainers.items():
        began = time.perf_counter()
        result[name] = explain(model, images, targets).detach()
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - began
    return result


def score(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, attributions: Mapping, explainers,
          metrics: Mapping, seed: int = 0, timings: dict | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Every metric of ``metrics`` (name -> spec) on ``attributions``: ``{metric: {explainer: (N,) float64}}``.

    ``explainers``: registry names (each metric then calls them again with generators of its own, seeded by
    :func:`metric_seed`) or a mapping name -> explainer (called as it is). Each metric draws from its own
    generator, so choosing fewer metrics or explainers changes no other score; the seconds each metric took go to
    ``timings`` (``"metric:<name>"``)."""
    scores = {}
    for name, metric in metrics.items():
        own = metric_seed(seed, name)
        calls = dict(explainers) if isinstance(explainers, Mapping) else seeded(explainers, own, images.device)
        began = time.perf_counter()
        scores[name] = metric(model, images, targets, dict(attributions), explainers=calls,
                              generator=torch.Generator().manual_seed(own))
        if timings is not None:
            timings["metric:" + name] = timings.get("metric:" + name, 0.0) + time.perf_counter() - began
    return scores


def evaluate_explainers(model: nn.Module, images: torch.Tensor, targets, explainers=None, metrics=None,
                        seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Score explainers with the Semantic Pullbacks table's metrics, per image.

    Each explainer explains every image once; each metric then scores every explainer's attributions (Max.Sens
    and Rand.Logit call the explainers again). Work that does not depend on the attribution is shared among the
    explainers, and each metric draws from a generator of its own, so choosing fewer metrics or explainers
    changes no other score. On a CPU most of the time is the metrics' forward passes (Monotonicity Correlation
    alone: 480 an image and explainer at 224 px); a convolutional model in channels_last
    (``model.to(memory_format=torch.channels_last)``, as the study runs it) takes them about 1.4 times faster.

    Args:
        model: classifier on images in [-1, 1], (N, 3, H, W) -> logits (N, classes), in eval mode.
        images: float (N, 3, H, W) in [-1, 1], on the model's device.
        targets: the class explained: an int for every image, or one index per image (sequence or tensor (N,)).
        explainers: row names of :data:`utils.analysis.explainers.EXPLAINERS` (one name or several; default None:
            every row the model can run, up to 16, the smoothing ones 50-100 backward passes each) or a mapping
            name -> ``explainer(model, images, targets)`` returning attributions shaped like ``images``.
        metrics: column names of :data:`utils.analysis.metrics.METRICS` ("Infidelity", "Faith.Corr",
            "Faith.Est", "Mono.Corr", "Max.Sens", "Rand.Logit"; one name or several; default None: all).
        seed: seeds every random draw (noisy explainers, metric perturbations): the same seed, the same scores
            (default 0).

    Returns:
        ``{metric: {explainer: scores}}`` in the order asked for, scores a float64 CPU tensor (N,) in image order
        (lower is better for Infidelity, Max.Sens and Rand.Logit: ``METRICS[name].lower_is_better``).

    Raises:
        TypeError: ``images`` is not a floating-point tensor, or ``targets`` holds no integer class indices.
        ValueError: ``images`` is not a batch (N, C, H, W); ``targets`` has neither one index nor N; an unknown
            explainer or metric name; a Grad-CAM row named for a model with no known Grad-CAM layer.
        IndexError: a target outside the model's classes.

    Example:
        >>> import torch
        >>> from utils import evaluate_explainers, load_model, paper_batch
        >>> model = load_model("bundled", "cpu")
        >>> images = paper_batch(size=64, classes=(0, 2))[0]  # two images, 64 px to keep it quick
        >>> scores = evaluate_explainers(model, images, [0, 2], explainers=["SoftPullback", "Gradient"],
        ...                              metrics=["Faith.Corr", "Infidelity"], seed=0)
        >>> list(scores), list(scores["Faith.Corr"])
        (['Faith.Corr', 'Infidelity'], ['SoftPullback', 'Gradient'])
        >>> scores["Infidelity"]["Gradient"].shape, scores["Infidelity"]["Gradient"].dtype
        (torch.Size([2]), torch.float64)
        >>> again = evaluate_explainers(model, images, [0, 2], explainers=["Gradient"], metrics="Infidelity", seed=0)
        >>> torch.equal(again["Infidelity"]["Gradient"], scores["Infidelity"]["Gradient"])  # seeded per metric
        True
    """
    check_inputs(images)
    with torch.no_grad():
        classes = model(images[:1]).shape[1]
    targets = as_targets(targets, images.shape[0], classes, images.device)
    chosen = _chosen_explainers(model, explainers)
    specs = _chosen_metrics(metrics)
    calls = chosen if isinstance(chosen, dict) else seeded(chosen, seed, images.device)
    attributions = attributions_of(model, images, targets, calls)
    return score(model, images, targets, attributions, chosen, specs, seed)


__all__ = ["attributions_of", "evaluate_explainers", "metric_seed", "score"]
