"""Projected L2 gradient ascent in pixel space along excitation pullbacks (or vanilla gradients)."""
from __future__ import annotations

import math
import numbers
from typing import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from .gates import Gate, as_number
from .pullback import Target, check_inputs, excitation_pullback, vanilla_gradient
from .rules import Rule
from .settings import FollowsReLU, Settings, resolve_settings

METHODS = ("pullback", "gradient")


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def project_l2(x: torch.Tensor, origin: torch.Tensor, eps: float) -> torch.Tensor:
    """Project each ``x[i]`` onto the L2 ball of radius ``eps`` around ``origin[i]``."""
    delta = x - origin
    norm = _per_sample_norm(delta)
    return origin + delta * torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)


def ascent_step(x: torch.Tensor, direction: torch.Tensor, alpha: float) -> torch.Tensor:
    """``x + alpha * direction / ||direction||_2`` per sample; a zero direction leaves x unchanged."""
    return x + alpha * direction / _per_sample_norm(direction).clamp_min(1e-30)


def pullback_ascent(model: nn.Module, x: torch.Tensor, target: Target, steps: int = 5, alpha: float = 20.0,
                    eps: float = 100.0, method: str = "pullback",
                    temperature: float | None = 0.3,
                    gate: str | Gate = "sigmoid", *, pool_temperature: FollowsReLU = "relu", pool: str = "soft",
                    silu_temperature: float | None = 1.6, gelu_temperature: float | None = 1.0,
                    attention_temperature: float | None = 1.5, hardswish_temperature: float | None = 1.0,
                    leaky_relu_temperature: FollowsReLU = "relu", hardtanh_temperature: FollowsReLU = "relu",
                    layer_norm: str | None = "held", strict: bool = True, rules: Mapping[str, Rule] | None = None,
                    preset: str | None = None, settings: Settings | None = None,
                    return_trajectory: bool = False, progress: bool = False,
                    initial_direction: torch.Tensor | None = None) -> torch.Tensor:
    """Follow the excitation pullback (or vanilla gradient) of logit ``target`` by projected L2 ascent.

    Each step adds ``alpha`` times the unit-L2 direction (per sample), projects onto the L2 ball of
    radius ``eps`` around the original image, and clamps to [-1, 1].

    Args:
        model: classifier taking images in [-1, 1], (N, 3, H, W) -> logits (N, num_classes), eval mode.
        x: images (N, C, H, W) in [-1, 1].
        target: class index (int) or one per sample.
        steps: number of ascent steps (default 5; the paper shows 1, 5 and 10).
        alpha: L2 norm of each raw step, in [-1, 1] pixel units (default 20).
        eps: radius of the L2 ball around ``x`` (default 100; ``inf``: no ball).
        method: ``"pullback"`` (excitation pullback) or ``"gradient"`` (vanilla gradient).
        temperature, gate, pool_temperature, ..., preset, settings: the excitation pullback's settings, as for
            :func:`~utils.core.pullback.excitation_pullback` (ignored for ``"gradient"``).
        return_trajectory: return every iterate, ``(steps + 1, N, C, H, W)`` with index 0 the input
            and index k the image after k steps, instead of only the last one.
        progress: show a tqdm bar over steps.
        initial_direction: the field at ``x`` (shaped like ``x``) when the caller has already computed it
            with this method and these settings: the first step uses it instead of a backward pass.

    Returns:
        Perturbed images (N, C, H, W) in [-1, 1], or the trajectory (see ``return_trajectory``); a new tensor
        that shares no memory with ``x`` (also for ``steps=0``).

    Raises:
        ValueError: an unknown ``method``, ``steps`` not a non-negative integer, ``alpha`` or ``eps`` not > 0,
            ``initial_direction`` not shaped like ``x``; and what :func:`excitation_pullback` raises.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from utils import pullback_ascent
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        >>> x = torch.rand(2, 3, 2, 2) * 2 - 1
        >>> path = pullback_ascent(model, x, target=0, steps=3, alpha=0.5, return_trajectory=True)
        >>> path.shape, bool(path.abs().max() <= 1)
        (torch.Size([4, 2, 3, 2, 2]), True)
        >>> bool(((path[-1] - x).flatten(1).norm(dim=1) <= 3 * 0.5 + 1e-6).all())
        True
    """
    check_inputs(x)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Real) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    alpha, eps = as_number(alpha, "alpha"), as_number(eps, "eps")
    if not (0 < alpha < math.inf and eps > 0):  # (an infinite eps is no ball: unconstrained ascent)
        raise ValueError(f"alpha must be a finite number > 0 and eps a number > 0 (inf for no ball), "
                         f"got alpha={alpha!r}, eps={eps!r}")
    chosen = resolve_settings(
        settings, preset, temperature=temperature, gate=gate, pool_temperature=pool_temperature, pool=pool,
        silu_temperature=silu_temperature, gelu_temperature=gelu_temperature,
        attention_temperature=attention_temperature, hardswish_temperature=hardswish_temperature,
        leaky_relu_temperature=leaky_relu_temperature, hardtanh_temperature=hardtanh_temperature,
        layer_norm=layer_norm, strict=strict, rules=rules or {})  # checked once

    def direction(image):
        if method == "gradient":
            return vanilla_gradient(model, image, target)
        return excitation_pullback(model, image, target, settings=chosen)

    if initial_direction is not None and initial_direction.shape != x.shape:
        raise ValueError(f"initial_direction must be shaped like x {tuple(x.shape)}, "
                         f"got {tuple(initial_direction.shape)}")
    origin = x.detach()
    current = origin
    trajectory = [origin]
    for k in tqdm(range(int(steps)), desc=f"{method} ascent", disable=not progress, leave=False):
        step = initial_direction.detach() if k == 0 and initial_direction is not None else direction(current)
        current = project_l2(ascent_step(current, step, alpha), origin, eps).clamp(-1.0, 1.0)
        if return_trajectory:
            trajectory.append(current)
    if return_trajectory:
        return torch.stack(trajectory)  # a new tensor
    return current if current is not origin else origin.clone()  # never the caller's own storage (steps=0)
