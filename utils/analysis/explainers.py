"""The explainers of the Semantic Pullbacks table (arXiv:2507.22832 v6), under the paper's row names.

Every explainer is ``explainer(model, images, targets) -> attribution``: ``images`` (N, 3, H, W) in [-1, 1],
``targets`` (N,) int64 class indices, the attribution shaped like ``images`` in input units (per pixel and
channel), detached. The random ones also take ``generator=`` (a ``torch.Generator``; default: seeded with 0).
Pullback versions use the ``"semantic"`` preset (:mod:`utils.core.presets`).

================  ==============================================================================================
SoftPullback      the excitation pullback (one unnormalised step of size 1)
PullbackAscent    ``x_5 - x``: 5 steps of ``alpha = 20`` along the L2-normalised pullback, no ball, no clipping
GradientAscent    the same along the gradient
Gradient          the input gradient
SmoothGrad        the gradient's mean over 50 points ``x + N(0, 0.15^2)``; SmoothPullback: the pullback's
FusionGrad        10 weight draws ``w * N(1, 0.1^2)``, each with 10 input draws as SmoothGrad; FusionPullback
IntegratedGrad.   zero baseline, 10 trapezoid nodes; IntegratedPullbacks: the pullback integrated
GradientShap      zero baseline, 5 draws ``alpha ~ U(0, 1)``: ``x * mean grad(alpha x)``; PullbackShap
DeepLift          ``x * grad(x)``, as the authors' pipeline computed it (see :func:`deep_lift`); PbDeepLift
GuidedGradCam     Captum's, on :func:`gradcam_layer`; GuidedPbCam: the same inside ``soft_backward``
================  ==============================================================================================

Settings read from the authors' ``lib/defaults.py``, ``lib/evaluator.py`` and ``lib/attributions.py``. Their
PullbackAscent row runs ``PGA`` with ``eps=None`` and ``clip_margin=None``: no projection and no clipping to
[-1, 1] (their ``PullbackAscentClipLast`` row clips once at the end; it is not in the table).
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Callable

import torch
from torch import nn

from ..core.ascent import ascent_step
from ..core.excitation import soft_backward
from ..core.pullback import excitation_pullback, vanilla_gradient
from ..core.surrogates import inputs_only
from . import averaged_fields as avg

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
PRESET = "semantic"
ASCENT_STEPS, ASCENT_ALPHA = 5, 20.0
NOISE_SIGMA, SMOOTH_DRAWS = 0.15, 50
FUSION_MODELS, FUSION_DRAWS, FUSION_WEIGHT_SIGMA = 10, 10, 0.1
IG_STEPS, SHAP_SAMPLES = 10, 5


def pullback(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The excitation pullback under the ``"semantic"`` preset (the SoftPullback row)."""
    return excitation_pullback(model, images, targets, preset=PRESET)


def gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The ordinary input gradient (the Gradient row)."""
    return vanilla_gradient(model, images, targets)


def ascent(field: avg.Field, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
           steps: int = ASCENT_STEPS, alpha: float = ASCENT_ALPHA) -> torch.Tensor:
    """``x_steps - x`` with ``x_{k+1} = x_k + alpha field(x_k) / ||field(x_k)||_2`` per image: no projection onto a
    ball and no clipping to [-1, 1] (the authors' table rows)."""
    x = images.detach()
    for _ in range(steps):
        x = ascent_step(x, field(model, x, targets), alpha)
    return x - images


def gradcam_layer(model: nn.Module) -> nn.Module | None:
    """Guided Grad-CAM's layer: ResNets' last bottleneck ``conv3`` and VGG's ``avgpool`` (the authors'), DenseNet's
    ``features.norm5`` (the last feature map, our choice; the paper has no DenseNet); None for anything else."""
    net = getattr(model, "net", model)
    if hasattr(net, "layer4"):
        return net.layer4[-1].conv3
    if hasattr(net, "features") and hasattr(net.features, "norm5"):
        return net.features.norm5
    if hasattr(net, "features") and hasattr(net, "avgpool"):
        return net.avgpool
    return None


@contextlib.contextmanager
def _captum(model: nn.Module):
    """No parameter gradients from our surrogates (local to this thread: nothing shared is changed), and Captum's
    notices about gradients it enables and hooks it sets kept quiet."""
    with inputs_only(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        yield


def guided_gradcam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, soft: bool = False) -> torch.Tensor:
    """Captum's Guided Grad-CAM on :func:`gradcam_layer` (Grad-CAM upsampled by nearest neighbour, times Guided
    Backprop). ``soft``: inside ``soft_backward(preset="semantic")``, so both the Grad-CAM weights and the guided
    backward pass go through the soft gates (Guided Backprop's clamp acts on the gated gradient)."""
    from captum.attr import GuidedGradCam

    layer = gradcam_layer(model)
    if layer is None:
        raise ValueError(f"no Guided Grad-CAM layer known for {type(getattr(model, 'net', model)).__name__}")
    context = soft_backward(model, preset=PRESET) if soft else contextlib.nullcontext()
    with _captum(model), context:
        return GuidedGradCam(model, layer).attribute(images.detach().clone(), target=targets).detach()


def deep_lift(field: avg.Field, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The DeepLift row as the authors' pipeline computed it: ``(x - 0) * field(x)``.

    Their evaluation swaps every ``nn.ReLU`` and ``nn.MaxPool2d`` for a surrogate subclass before any explainer
    runs, and Captum's DeepLift applies its rescale rule only to modules whose type is exactly ``nn.ReLU``,
    ``nn.MaxPool2d``, ... (``SUPPORTED_NON_LINEAR``): no rule engaged, and Captum returned ``(x - baseline)``
    times the plain gradient at ``x`` (their PbDeepLift: times the pullback). A true DeepLift pullback is not
    defined: the rescale rule replaces each ReLU's gate by a finite-difference ratio, leaving no gate to soften.
    (Captum's own DeepLift refuses torchvision's ResNets outright, which call one ReLU module three times.)"""
    return images * field(model, images, targets)


def _explainer(fn, field: avg.Field, random: bool = False, **settings) -> Explainer:
    """``fn(field, model, images, targets, **settings)`` as an explainer (random ones take ``generator=``)."""
    def explain(model, images, targets, generator: torch.Generator | None = None):
        extra = {"generator": generator} if random else {}
        return fn(field, model, images.detach(), targets, **settings, **extra).detach()
    explain.__doc__ = f"{fn.__name__} of the {field.__name__} ({settings or 'defaults'})."
    return explain


_SMOOTH = dict(draws=SMOOTH_DRAWS, sigma=NOISE_SIGMA)
_FUSION = dict(models=FUSION_MODELS, draws=FUSION_DRAWS, weight_sigma=FUSION_WEIGHT_SIGMA, sigma=NOISE_SIGMA)

EXPLAINERS: dict[str, Explainer] = {
    "SoftPullback": lambda model, images, targets: pullback(model, images, targets).detach(),
    "PullbackAscent": _explainer(ascent, pullback),
    "SmoothPullback": _explainer(avg.smooth, pullback, random=True, **_SMOOTH),
    "FusionPullback": _explainer(avg.fusion, pullback, random=True, **_FUSION),
    "Gradient": lambda model, images, targets: gradient(model, images, targets).detach(),
    "GradientAscent": _explainer(ascent, gradient),
    "SmoothGrad": _explainer(avg.smooth, gradient, random=True, **_SMOOTH),
    "FusionGrad": _explainer(avg.fusion, gradient, random=True, **_FUSION),
    "GradientShap": _explainer(avg.shap, gradient, random=True, samples=SHAP_SAMPLES),
    "IntegratedGradients": _explainer(avg.integrated, gradient, steps=IG_STEPS),
    "DeepLift": _explainer(deep_lift, gradient),
    "GuidedGradCam": guided_gradcam,
    "PullbackShap": _explainer(avg.shap, pullback, random=True, samples=SHAP_SAMPLES),
    "IntegratedPullbacks": _explainer(avg.integrated, pullback, steps=IG_STEPS),
    "PbDeepLift": _explainer(deep_lift, pullback),
    "GuidedPbCam": functools.partial(guided_gradcam, soft=True),
}
"""Row name -> explainer: the paper's twelve rows, then the pullback versions of the Captum methods."""
PAPER_ROWS = tuple(list(EXPLAINERS)[:12])
SMOOTHING = ("SmoothPullback", "FusionPullback", "SmoothGrad", "FusionGrad")
"""The rows whose explainer averages 50 or 100 fields (their Max-Sensitivity alone: 500-1,000 backward passes)."""
RANDOM = ("SmoothPullback", "FusionPullback", "SmoothGrad", "FusionGrad", "GradientShap", "PullbackShap")
PULLBACK_OF = {"SoftPullback": "Gradient", "PullbackAscent": "GradientAscent", "SmoothPullback": "SmoothGrad",
               "FusionPullback": "FusionGrad", "PullbackShap": "GradientShap",
               "IntegratedPullbacks": "IntegratedGradients", "PbDeepLift": "DeepLift", "GuidedPbCam": "GuidedGradCam"}
"""Each pullback row -> the row it softens (the paired comparisons)."""
GRADCAM_ROWS = ("GuidedGradCam", "GuidedPbCam")


def available(model: nn.Module, names=None) -> list[str]:
    """The rows of ``names`` (default: all) that ``model`` can run: the Grad-CAM rows need :func:`gradcam_layer`."""
    names = list(EXPLAINERS) if names is None else list(names)
    unknown = [n for n in names if n not in EXPLAINERS]
    if unknown:
        raise ValueError(f"unknown explainers {unknown}: choose from {list(EXPLAINERS)}")
    return [n for n in names if n not in GRADCAM_ROWS or gradcam_layer(model) is not None]


def seeded(names, seed: int, device) -> dict[str, Explainer]:
    """The explainers ``names`` with their random draws bound to one generator each, seeded from ``seed`` and the
    position in :data:`EXPLAINERS` of the row itself, or for a pullback row of the row it softens: a pullback row
    and its original draw the same noise, so that their paired difference carries no noise of its own (and adding
    a row changes no other row's draws)."""
    order = list(EXPLAINERS)
    bound = {}
    for name in names:
        if name in RANDOM:
            generator = torch.Generator(device).manual_seed(seed * 1_000_003 + order.index(PULLBACK_OF.get(name, name)))
            bound[name] = functools.partial(EXPLAINERS[name], generator=generator)
        else:
            bound[name] = EXPLAINERS[name]
    return bound
