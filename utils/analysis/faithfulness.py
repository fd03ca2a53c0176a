"""Faithfulness and sanity metrics for attributions of image classifiers.

All take a classifier on images in [-1, 1] (N, 3, H, W) and attributions shaped like the images,
reduced to a per-pixel relevance (N, H, W) by summing over channels, so a positive relevance means
"this pixel, as it is, raises the target logit" for every method. Infidelity is Captum's; deletion,
insertion, faithfulness correlation and the randomisation check are written here because no
maintained package computes them batched on torch tensors (Quantus works on numpy one run at a
time, which would not fit the evaluation's time budget). Random draws come from explicit
generators, so a score depends only on the image, its seed and the settings.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from captum.metrics import infidelity as captum_infidelity
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from .stats import pearson


def pixel_relevance(attribution: torch.Tensor) -> torch.Tensor:
    """Per-pixel relevance (N, H, W): the attribution (N, C, H, W) summed over channels."""
    if attribution.dim() != 4:
        raise ValueError(f"attributions must be (N, C, H, W), got shape {tuple(attribution.shape)}")
    return attribution.sum(1)


def _batched(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(chunk) for chunk in images.split(batch_size)])


def pixel_order(relevance: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pixel indices (N, H*W) from most to least relevant; ties in random (seeded) order, not raster order."""
    flat = relevance.flatten(1)
    shuffle = torch.stack([torch.randperm(flat.shape[1], generator=generator) for _ in range(flat.shape[0])])
    shuffle = shuffle.to(flat.device)
    order = torch.argsort(flat.gather(1, shuffle), dim=1, descending=True, stable=True)
    return shuffle.gather(1, order)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under curves (N, S+1) sampled evenly on [0, 1]."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def deletion_insertion(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                       relevances: dict[str, torch.Tensor], generator: torch.Generator, steps: int = 16,
                       budget: float = 1.0, blur_sigma: float = 5.0, batch_size: int = 64) -> dict[str, dict]:
    """Deletion and insertion curves and AUCs (Petsiuk et al., 2018, "RISE", Sec. 4.2).

    Deletion replaces the most relevant pixels first by 0 (mid-grey in [-1, 1]); insertion starts
    from a blurred copy (Gaussian, ``blur_sigma`` pixels, kernel 4 sigma + 1, as RISE's 11 px / 5)
    and puts the most relevant pixels back first. Both move ``budget * H * W`` pixels in ``steps``
    equal steps (a fixed pixel budget for every method) and record the softmax probability of the
    target class. The curves' end points do not depend on the method and are computed once.

    Args:
        images: (N, C, H, W) in [-1, 1]; target: (N,) class indices; relevances: name -> (N, H, W).
        generator: breaks ties between equally relevant pixels.

    Returns:
        name -> ``{"deletion": (N, steps+1), "insertion": (N, steps+1), "deletion_auc": (N,),
        "insertion_auc": (N,)}``; AUCs on the unit interval of the budget (lower deletion and
        higher insertion AUC are better).
    """
    n, c, h, w = images.shape
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be a fraction in (0, 1], got {budget}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    counts = [round(budget * h * w * k / steps) for k in range(steps + 1)]
    kernel = min(int(4 * blur_sigma) | 1, (min(h, w) - 1) | 1)  # reflect padding must fit the image
    blurred = gaussian_blur(images, [kernel, kernel], [blur_sigma, blur_sigma])
    x = images[:, None]

    def probabilities(batch: torch.Tensor) -> torch.Tensor:  # (N, K, C, H, W) -> (N, K) target probabilities
        k = batch.shape[1]
        p = _batched(model, batch.flatten(0, 1), batch_size).softmax(1).view(n, k, -1)
        return p.gather(2, target.view(n, 1, 1).expand(n, k, 1))[..., 0]

    interior = counts[1:-1] if budget == 1 else counts[1:]
    shared = probabilities(torch.cat([x, blurred[:, None], torch.zeros_like(x)], 1))  # original, blurred, deleted
    results = {}
    for name, relevance in relevances.items():
        if relevance.shape != (n, h, w):
            raise ValueError(f"relevance {name!r} must be (N, H, W) = {(n, h, w)}, got {tuple(relevance.shape)}")
        order = pixel_order(relevance, generator)
        # rank[i, p] = position of pixel p in image i's order; pixel p is moved once rank < count.
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
        moved = torch.stack([(rank < k).view(n, 1, h, w) for k in interior], 1)  # (N, S-1 or S, 1, H, W)
        curves = probabilities(torch.cat([torch.where(moved, torch.zeros_like(x), x),
                                          torch.where(moved, x, blurred[:, None])], 1))
        middle_del, middle_ins = curves.split(len(interior), dim=1)
        ends_del, ends_ins = [shared[:, 2:3]], [shared[:, 0:1]]
        if budget < 1:
            ends_del, ends_ins = [], []
        deletion = torch.cat([shared[:, 0:1], middle_del, *ends_del], 1)
        insertion = torch.cat([shared[:, 1:2], middle_ins, *ends_ins], 1)
        results[name] = {"deletion": deletion, "insertion": insertion,
                         "deletion_auc": auc(deletion), "insertion_auc": auc(insertion)}
    return results


def patch_subsets(n: int, height: int, width: int, runs: int, patches: int, patch: int,
                  generator: torch.Generator) -> torch.Tensor:
    """Random pixel subsets (N, runs, H, W) of bool: ``patches`` distinct ``patch x patch`` squares each."""
    grid_h, grid_w = -(-height // patch), -(-width // patch)
    scores = torch.rand(n, runs, grid_h * grid_w, generator=generator)
    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(2, scores.topk(patches, dim=2).indices, True)
    masks = chosen.view(n * runs, 1, grid_h, grid_w).float()
    masks = F.interpolate(masks, scale_factor=patch, mode="nearest")[..., :height, :width]
    return masks.view(n, runs, height, width).bool()


def faithfulness_correlation(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                             relevances: dict[str, torch.Tensor], generator: torch.Generator, runs: int = 32,
                             patches: int = 32, patch: int = 8, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Faithfulness correlation (Bhatt et al., 2020, "Evaluating and aggregating feature-based model
    explanations", Eq. 3): over random subsets S of the pixels, the Pearson correlation between the
    summed relevance ``sum_{i in S} r_i`` and the logit drop ``f(x) - f(x with S set to 0)``.

    Subsets are ``patches`` random ``patch x patch`` squares (32 of 8 x 8 = 4% of a 224 px image), one
    set of ``runs`` subsets per image shared by every method, so the forward passes are shared too.

    Args:
        images: (N, C, H, W) in [-1, 1]; target: (N,); relevances: name -> (N, H, W).

    Returns:
        name -> (N,) correlations in [-1, 1] (higher is more faithful).
    """
    n, c, h, w = images.shape
    subsets = patch_subsets(n, h, w, runs, patches, patch, generator).to(images.device)
    masked = torch.where(subsets[:, :, None], torch.zeros((), device=images.device), images[:, None])
    logits = _batched(model, torch.cat([images, masked.flatten(0, 1)]), batch_size)
    index = torch.cat([target, target.repeat_interleave(runs)])
    scores = logits.gather(1, index[:, None])[:, 0]
    drop = scores[:n, None] - scores[n:].view(n, runs)
    # A map whose subset sums are all equal (e.g. all zero) carries no information: correlation 0, not NaN.
    return {name: pearson((subsets * r[:, None]).sum((2, 3)), drop).nan_to_num(0.0) for name, r in relevances.items()}


def noisy_baseline(sigma: float, generator: torch.Generator) -> Callable:
    """Yeh et al.'s noisy-baseline perturbation for Captum: ``I = x - x0`` with ``x0 = 0 + N(0, sigma^2)``.

    Returns ``perturb_func(inputs) -> (I, x - I)``; draws from ``generator``, so a fresh generator with
    the same seed gives every method the same perturbations.
    """
    def perturb(inputs: torch.Tensor):
        noise = torch.randn(inputs.shape, generator=generator).to(inputs) * sigma
        return inputs - noise, noise
    return perturb


def infidelity(model: nn.Module, images: torch.Tensor, target: torch.Tensor, attribution: torch.Tensor,
               seed: int, samples: int = 8, sigma: float = 0.1) -> torch.Tensor:
    """Infidelity (Yeh et al., 2019, "On the (in)fidelity and sensitivity of explanations", Def. 2.1):
    ``E_I[(I . attribution - (f(x) - f(x - I)))^2]`` with noisy-baseline perturbations, via Captum.

    Attributions are rescaled by the optimal scalar per image (Captum's ``normalize=True``, Yeh et
    al. Sec. 3), so methods are compared up to scale; ``f`` is the target logit.

    Args:
        images, attribution: (N, C, H, W); target: (N,); seed: perturbation seed (same for every method).

    Returns:
        (N,) infidelity (lower is better), in squared logit units.
    """
    perturb = noisy_baseline(sigma, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        # Captum wants whole copies of the batch per chunk, and no more than ``samples`` of them.
        per_chunk = images.shape[0] * max(1, min(samples, 64 // images.shape[0]))
        return captum_infidelity(model, perturb, images, attribution, target=target, n_perturb_samples=samples,
                                 max_examples_per_batch=per_chunk, normalize=True)


def _parameterised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


def cascading_randomisation(model: nn.Module, stages: int = 5,
                            seed: int = 0) -> Iterator[tuple[int, int, nn.Module]]:
    """Adebayo et al. (2018, "Sanity checks for saliency maps", Sec. 3.1): copies of ``model`` with its
    layers re-initialised cumulatively from the top (logits) down, in ``stages`` groups of parameterised
    layers (registration order, which is forward order for torchvision models and ours).

    Convolutions and linear layers get PyTorch's default initialisation; BatchNorm its affine reset
    (gamma 1, beta 0), keeping the running statistics so activations keep a sane scale.

    Yields:
        ``(k, L, model)``: the top k of the L parameterised layers randomised, and an independent copy of
        the model in eval mode with them randomised.
    """
    layers = _parameterised_layers(model)
    if not layers:
        raise ValueError("model has no Conv2d, Linear or BatchNorm layers to randomise")
    stages = min(stages, len(layers))
    bounds = [round(len(layers) * (k + 1) / stages) for k in range(stages)]
    randomised = copy.deepcopy(model).eval()
    copies = dict(_parameterised_layers(randomised))
    done = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for bound in bounds:
            for name, _ in reversed(layers[len(layers) - bound:len(layers) - done]):
                layer = copies[name]
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                    nn.init.ones_(layer.weight) if layer.weight is not None else None
                    nn.init.zeros_(layer.bias) if layer.bias is not None else None
                else:
                    layer.reset_parameters()
            done = bound
            yield bound, len(layers), copy.deepcopy(randomised)
