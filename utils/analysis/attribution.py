"""Attribution methods behind one calling convention, for the faithfulness evaluation.

Every method is ``attribute(model, inputs, target) -> tensor shaped like inputs`` (Captum's
convention; ``inputs`` (N, 3, H, W) in [-1, 1], ``target`` an int or one class index per sample).
Our code supplies only the pullback methods; the baselines are Captum's. :func:`explain` is the
same thing with Quantus' ``explain_func(model, inputs, targets, **kwargs)`` signature.

Pixel-space conventions: attributions live in input units (per channel); metrics reduce them to a
per-pixel relevance by summing over channels (:func:`utils.analysis.faithfulness.pixel_relevance`).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import numpy as np
import torch
from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerAttribution,
                         LayerGradCam, NoiseTunnel, Saliency)
from torch import nn

from ..core.ascent import pullback_ascent
from ..core.pullback import Target, as_targets, check_inputs, excitation_pullback, vanilla_gradient

Method = Callable[..., torch.Tensor]

SMOOTHGRAD_SIGMA = 0.3  # 15% of the [-1, 1] input range, Smilkov et al.'s recommended noise level


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The layer whose output Grad-CAM weighs: the last convolutional feature map of the network.

    Known for the bundled PoolResNet and torchvision's ResNets, VGGs and DenseNets (through
    :class:`utils.models.zoo.Classifier`'s ``net``); anything else needs ``layer=`` passed explicitly.
    """
    net = getattr(model, "net", model)
    for name in ("layer4", "features"):
        layer = getattr(net, name, None)
        if layer is None:
            continue
        if name == "features" and isinstance(layer, nn.Sequential) and not hasattr(layer, "norm5"):
            # VGG/PoolResNet: the last block with spatial extent before the classifier's pooling.
            children = list(layer)
            return children[-2] if isinstance(children[-1], nn.MaxPool2d) else children[-1]
        return layer
    raise ValueError(f"no known Grad-CAM layer for {type(net).__name__}: pass layer=<module> explicitly")


@contextlib.contextmanager
def _quiet():
    """Silence Captum's notices that it set requires_grad on its own copy and hooked ReLUs (both expected)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        yield


def _targets(model: nn.Module, inputs: torch.Tensor, target: Target) -> torch.Tensor:
    check_inputs(inputs)
    with torch.no_grad():
        num_classes = model(inputs[:1]).shape[1]
    return as_targets(target, inputs.shape[0], num_classes, inputs.device)


def _captum(method_cls, **call_kwargs) -> Method:
    """A Captum attribution class as ``f(model, inputs, target)``."""
    def attribute(model, inputs, target, **kwargs):
        target = _targets(model, inputs, target)
        with _quiet():
            return method_cls(model).attribute(inputs.detach().clone(), target=target, **{**call_kwargs, **kwargs})
    attribute.__doc__ = f"Captum's {method_cls.__name__} ({call_kwargs or 'defaults'})."
    return attribute


def smoothgrad(model: nn.Module, inputs: torch.Tensor, target: Target, samples: int = 10,
               sigma: float = SMOOTHGRAD_SIGMA) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., 2017): the signed gradient averaged over ``samples`` noisy copies, N(0, sigma^2)."""
    target = _targets(model, inputs, target)
    with _quiet():
        tunnel = NoiseTunnel(Saliency(model))
        return tunnel.attribute(inputs.detach().clone(), nt_type="smoothgrad", nt_samples=samples,
                                nt_samples_batch_size=inputs.shape[0] * samples, stdevs=sigma, target=target,
                                abs=False)


def integrated_gradients(model: nn.Module, inputs: torch.Tensor, target: Target, steps: int = 16) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al., 2017) from the all-zero (mid-grey) image, Gauss-Legendre ``steps``."""
    target = _targets(model, inputs, target)
    with _quiet():
        return IntegratedGradients(model).attribute(inputs.detach().clone(), baselines=0.0, target=target,
                                                    n_steps=steps, method="gausslegendre")


def gradcam(model: nn.Module, inputs: torch.Tensor, target: Target, layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) upsampled bilinearly to the input size, spread evenly over channels."""
    target = _targets(model, inputs, target)
    with _quiet():
        cam = LayerGradCam(model, layer or gradcam_layer(model)).attribute(inputs.detach().clone(), target=target,
                                                                           relu_attributions=True)
    cam = LayerAttribution.interpolate(cam.detach(), tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
    # Same map on every channel, divided so that the channel sum is the Grad-CAM map itself.
    return (cam / inputs.shape[1]).expand_as(inputs).contiguous()


def guided_gradcam(model: nn.Module, inputs: torch.Tensor, target: Target,
                   layer: nn.Module | None = None) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al., 2017): Guided Backprop times the upsampled Grad-CAM map."""
    target = _targets(model, inputs, target)
    with _quiet():
        return GuidedGradCam(model, layer or gradcam_layer(model)).attribute(inputs.detach().clone(), target=target)


def pullback_times_input(model: nn.Module, inputs: torch.Tensor, target: Target, temperature: float = 0.3):
    """Excitation pullback times input, the soft-gated analogue of gradient x input."""
    return excitation_pullback(model, inputs, target, temperature=temperature) * inputs


def ascent_difference(model: nn.Module, inputs: torch.Tensor, target: Target, steps: int = 5,
                      temperature: float = 0.3, alpha: float = 20.0, eps: float = 100.0) -> torch.Tensor:
    """``x_K - x``: the perturbation after K steps of pullback ascent (the paper's figures), K = 5 by default."""
    return pullback_ascent(model, inputs, target, steps=steps, alpha=alpha, eps=eps, temperature=temperature) - inputs


METHODS: dict[str, Method] = {
    "pullback": excitation_pullback,
    "pullback_x_input": pullback_times_input,
    "pullback_ascent_5": ascent_difference,
    "gradient": vanilla_gradient,
    "gradient_x_input": _captum(InputXGradient),
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "guided_backprop": _captum(GuidedBackprop),
    "gradcam": gradcam,
    "guided_gradcam": guided_gradcam,
}
OURS = ("pullback", "pullback_x_input", "pullback_ascent_5")
# x-input methods are their base method's attribution times the input: reuse it when both are asked for.
TIMES_INPUT = {"pullback_x_input": "pullback", "gradient_x_input": "gradient"}


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target, method: str, **kwargs) -> torch.Tensor:
    """Attribution of logit ``target`` by ``method`` (a key of :data:`METHODS`).

    Args:
        model: classifier on images in [-1, 1], (N, 3, H, W) -> logits (N, num_classes), eval mode.
        inputs: images (N, 3, H, W) in [-1, 1].
        target: class index (int) or one per sample.
        method: name in :data:`METHODS`; ``**kwargs`` go to it (e.g. ``temperature``, ``samples``).

    Returns:
        Detached tensor shaped like ``inputs``, in input units (relevance per pixel and channel).
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {sorted(METHODS)}")
    return METHODS[method](model, inputs, target, **kwargs).detach()


def attribute_many(model: nn.Module, inputs: torch.Tensor, target: Target, methods, options=None) -> dict:
    """``{method: attribute(model, inputs, target, method, **options[method])}``, computing each
    gradient once: an x-input method whose base method is also listed is that attribution times ``inputs``."""
    options = options or {}
    result = {}
    for method in sorted(methods, key=lambda m: m in TIMES_INPUT):
        base = TIMES_INPUT.get(method)
        if base in result and options.get(base, {}) == options.get(method, {}):
            result[method] = result[base] * inputs
        else:
            result[method] = attribute(model, inputs, target, method, **options.get(method, {}))
    return {m: result[m] for m in methods}


def explain(model: nn.Module, inputs, targets, method: str = "pullback", **kwargs):
    """Quantus' ``explain_func(model, inputs, targets, **kwargs)``: numpy in, numpy out (tensors stay tensors).

    The model is put in eval mode and must take images in [-1, 1]; ``device`` defaults to the model's.
    """
    device = kwargs.pop("device", None) or next(model.parameters()).device
    as_numpy = isinstance(inputs, np.ndarray)
    x = torch.as_tensor(inputs, dtype=torch.float32, device=device)
    t = torch.as_tensor(np.asarray(targets) if as_numpy else targets, device=device)
    result = attribute(model.eval(), x, t, method, **kwargs)
    return result.cpu().numpy() if as_numpy else result
