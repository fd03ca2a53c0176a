"""The Semantic Pullbacks paper's six metrics and Focus, batched in torch on any device.

Each metric scores several explainers at once on the same images: ``attributions`` is {name: (N, C, H, W)} and
the result {name: (N,) float64 on the CPU}. Work that does not depend on the attribution (perturbed logits, noise,
the other class) is done once for all names. Random draws come only from the explicit CPU ``generator``. The
settings are the paper's (``lib/evaluator.py``), every other one Quantus 0.6's default; the tests check each
metric against Quantus itself.

``METRICS`` maps the paper's column names to a :class:`MetricSpec` with one call for all:
``METRICS["Infidelity"](model, images, targets, attributions, explainers=..., generator=...)``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from .common import Explainer
from .focus import QUADRANTS, focus, make_mosaics
from .ordering import faithfulness_estimate, monotonicity_correlation
from .patches import faithfulness_correlation, infidelity
from .sensitivity import max_sensitivity, other_classes, random_logit


@dataclass(frozen=True)
class MetricSpec:
    """A metric with the paper's settings: ``function``, whether lower scores are better, and whether it calls
    the explainers again (then ``explainers`` must be given)."""
    function: Callable[..., dict]
    lower_is_better: bool
    needs_explainers: bool

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 attributions: Mapping[str, torch.Tensor], *, explainers: Optional[Mapping[str, Explainer]] = None,
                 generator: Optional[torch.Generator] = None, **settings) -> dict[str, torch.Tensor]:
        """Score ``attributions`` (name -> (N, C, H, W)); ``explainers`` and ``generator`` are passed on where the
        metric takes them, ``settings`` override its keyword defaults."""
        takes = inspect.signature(self.function).parameters
        if self.needs_explainers:
            if explainers is None:
                raise ValueError(f"{self.function.__name__} calls the explainers again: pass explainers=")
            settings["explainers"] = explainers
        if "generator" in takes:
            if generator is None:
                raise ValueError(f"{self.function.__name__} draws random numbers: pass generator=")
            settings["generator"] = generator
        return self.function(model, images, targets, attributions, **settings)


METRICS: dict[str, MetricSpec] = {
    "Infidelity": MetricSpec(infidelity, lower_is_better=True, needs_explainers=False),
    "Faith.Corr": MetricSpec(faithfulness_correlation, lower_is_better=False, needs_explainers=False),
    "Faith.Est": MetricSpec(faithfulness_estimate, lower_is_better=False, needs_explainers=False),
    "Mono.Corr": MetricSpec(monotonicity_correlation, lower_is_better=False, needs_explainers=False),
    "Max.Sens": MetricSpec(max_sensitivity, lower_is_better=True, needs_explainers=True),
    "Rand.Logit": MetricSpec(random_logit, lower_is_better=True, needs_explainers=True),
}

__all__ = [
    "METRICS", "QUADRANTS", "Explainer", "MetricSpec", "faithfulness_correlation", "faithfulness_estimate", "focus",
    "infidelity", "make_mosaics", "max_sensitivity", "monotonicity_correlation", "other_classes", "random_logit",
]
