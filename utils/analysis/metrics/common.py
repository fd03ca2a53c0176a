"""What the metrics share: input checks, seeded draws, chunked forward passes over lazily built perturbations,
and Quantus' similarity functions (scipy's Pearson and Spearman) on torch tensors."""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from ..stats import pearson

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Builder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def check_inputs(images: torch.Tensor, targets: torch.Tensor, attributions: Mapping[str, torch.Tensor]) -> None:
    """Raise a clear error unless images are (N, C, H, W), targets (N,) integers and every attribution is shaped
    like the images."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if targets.shape != images.shape[:1] or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be (N,) = ({images.shape[0]},) class indices, got {targets.dtype} "
                         f"of shape {tuple(targets.shape)}")
    if not isinstance(attributions, Mapping):
        raise TypeError("attributions must be a mapping {explainer name: (N, C, H, W) tensor}")
    for name, a in attributions.items():
        if a.shape != images.shape:
            raise ValueError(f"attribution {name!r} must be shaped like the images {tuple(images.shape)}, "
                             f"got {tuple(a.shape)}")


def check_positive(**counts: int) -> None:
    """Raise unless every named count is a positive integer."""
    for name, value in counts.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_explainers(attributions: Mapping[str, torch.Tensor], explainers: Mapping[str, Explainer]) -> None:
    missing = [name for name in attributions if name not in explainers]
    if missing:
        raise KeyError(f"no explainer given for {missing}: this metric recomputes the attributions")


def uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float,
            like: torch.Tensor) -> torch.Tensor:
    """U(low, high) draws of ``shape`` from the CPU ``generator``, moved to ``like``'s device and dtype. Every
    random draw of the metrics goes through here, so a score depends only on the images, seed and settings."""
    draws = torch.rand(shape, generator=generator, dtype=like.dtype)
    return (low + (high - low) * draws).to(like.device, non_blocking=True)


CPU_BATCH, DEVICE_BATCH = 16, 64
"""Perturbed inputs per forward pass by default, on a CPU and on other devices: on a CPU a 224 px ResNet50 runs
about a fifth slower per image at 64 than at 4-16 (its activations leave the cache; ``benchmarks/README.md``)."""


def target_scores(model: nn.Module, count: int, build: Builder, batch_size: int | None, device: torch.device,
                  softmax: bool = False) -> torch.Tensor:
    """The target's logit (or softmax probability) for ``count`` inputs made chunk by chunk: ``build(index)``
    turns a 1-D tensor of input numbers (on ``device``) into (inputs (k, C, H, W), targets (k,)). At most
    ``batch_size`` inputs exist at once (None: :data:`CPU_BATCH` on a CPU, ``DEVICE_BATCH`` elsewhere); returns
    (count,) on ``device``, without a host sync."""
    if batch_size is None:
        batch_size = CPU_BATCH if torch.device(device).type == "cpu" else DEVICE_BATCH
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    scores = []
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            inputs, targets = build(torch.arange(start, min(start + batch_size, count), device=device))
            out = model(inputs)
            if softmax:
                out = out.softmax(1)
            scores.append(out.gather(1, targets[:, None])[:, 0])
    return torch.cat(scores) if scores else torch.zeros(0, device=device)


def unperturbed(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int | None,
                softmax: bool = False) -> torch.Tensor:
    """The target's logit (or probability) on the images themselves, (N,); targets on the images' device."""
    return target_scores(model, len(images), lambda i: (images[i], targets[i]), batch_size, images.device, softmax)


def correlation_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of rows (N, K) in float64 on the CPU (Quantus' ``correlation_pearson``, scipy's
    ``pearsonr``): NaN where a row is constant."""
    return pearson(a.double().cpu(), b.double().cpu())


def average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..K of each row of (N, K), tied values sharing their mean rank (scipy's ``rankdata``)."""
    v = v.double()
    sorted_v, order = v.sort(dim=1, stable=True)
    new = torch.ones_like(sorted_v, dtype=torch.bool)
    new[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = new.long().cumsum(1) - 1
    position = torch.arange(v.shape[1], dtype=torch.float64, device=v.device).expand_as(v)
    first = torch.full_like(v, float(v.shape[1])).scatter_reduce(1, group, position, "amin")
    last = torch.zeros_like(v).scatter_reduce(1, group, position, "amax")
    ranked = (first.gather(1, group) + last.gather(1, group)) / 2 + 1
    return torch.empty_like(ranked).scatter_(1, order, ranked)


def correlation_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of rows (N, K) in float64 on the CPU (Quantus' ``correlation_spearman``, scipy's
    ``spearmanr``): Pearson correlation of average ranks, so ties count as scipy counts them; NaN where a row
    is constant or holds NaN."""
    a, b = a.double().cpu(), b.double().cpu()
    nan = a.isnan().any(1) | b.isnan().any(1)
    rho = pearson(average_ranks(a.nan_to_num(0.0)), average_ranks(b.nan_to_num(0.0)))
    return rho.masked_fill(nan, float("nan"))
