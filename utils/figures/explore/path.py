"""The explorer's computation: one image's field, ascent path and target probabilities (no widgets)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field as dataclass_field

import torch

from ...core.ascent import ascent_step, project_l2
from ...core.excitation import soft_backward
from ...core.surrogates import inputs_only

METHOD_LABELS = {"pullback": "excitation pullback", "gradient": "vanilla gradient"}


@dataclass
class Exploration:
    """One image's ascent toward one target.

    Attributes:
        field: the direction at the image, (C, H, W): the excitation pullback or the vanilla gradient.
        trajectory: the images along the path, (steps + 1, C, H, W), index 0 the input.
        probabilities: the target's softmax probability at each iterate, (steps + 1,).
        predictions: the model's top class at each iterate, (steps + 1,).
        settings: what was computed (target, method, temperature, gate, alpha, eps).
        first: the softmax of every class at the image, (classes,) (the same for every target and method).
    """

    field: torch.Tensor
    trajectory: torch.Tensor
    probabilities: torch.Tensor
    predictions: torch.Tensor
    settings: dict = dataclass_field(default_factory=dict)
    first: torch.Tensor | None = None

    @property
    def steps(self) -> int:
        return self.trajectory.shape[0] - 1

    def perturbation(self, k: int) -> torch.Tensor:
        """``x_k - x``, (C, H, W)."""
        return self.trajectory[k] - self.trajectory[0]

    def upto(self, k: int) -> "Exploration":
        """The first ``k`` steps of this path."""
        return Exploration(self.field, self.trajectory[:k + 1], self.probabilities[:k + 1], self.predictions[:k + 1],
                           self.settings, self.first)


def direction_and_logits(model, x: torch.Tensor, target: int, method: str = "pullback", temperature: float = 0.3,
                         gate="sigmoid"):
    """The ascent direction at ``x`` (1, C, H, W) and the logits, from one forward and one backward pass.

    The direction is what :func:`utils.excitation_pullback` (``method="pullback"``) or
    :func:`utils.vanilla_gradient` (``"gradient"``) return for the same settings.
    """
    if method not in METHOD_LABELS:
        raise ValueError(f"method must be one of {tuple(METHOD_LABELS)}, got {method!r}")
    context = (soft_backward(model, temperature=temperature, gate=gate) if method == "pullback"
               else contextlib.nullcontext())
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad(), inputs_only(), context:
        logits = model(leaf)
        index = torch.full((x.shape[0], 1), int(target), device=logits.device)
        (direction,) = torch.autograd.grad(logits.gather(1, index).sum(), leaf)
    return direction, logits.detach()


def explore_path(model, image: torch.Tensor, target: int, method: str = "pullback", steps: int = 5,
                 temperature: float = 0.3, gate="sigmoid", alpha: float = 20.0, eps: float = 100.0,
                 start: Exploration | None = None, on_step=None, on_partial=None) -> Exploration:
    """Field, ascent trajectory and target probabilities for one image (3, H, W) in [-1, 1].

    The steps are those of :func:`utils.pullback_ascent` (same settings, same iterates); the logits of
    each iterate come from the forward pass that its step needs anyway, so ``steps`` steps cost
    ``steps`` forward-backward passes and one forward pass.

    Args:
        model: classifier on images in [-1, 1], eval mode.
        image: (3, H, W).
        target: logit index to ascend.
        method: ``"pullback"`` or ``"gradient"``.
        steps: number of ascent steps (0 gives only the field and the image's probability).
        temperature, gate: the excitation pullback's settings (ignored for ``"gradient"``).
        alpha, eps: step length and radius of the L2 ball, as in the paper's figures.
        start: a shorter path from the same image with the same settings, to continue instead of
            starting over (ignored when its settings differ).
        on_step: called as ``on_step(k)`` after each pass (k = 0 .. steps), e.g. for a progress bar; an
            exception it raises stops the computation (the explorer's cancellation of stale work).
        on_partial: called with the path so far (an :class:`Exploration` of k steps, its last
            probability not yet known and repeated from step k - 1) after each step, e.g. to draw it.

    Returns:
        An :class:`Exploration` with ``steps`` steps.
    """
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    settings = dict(target=int(target), method=method, alpha=alpha, eps=eps,
                    temperature=temperature if method == "pullback" else None, gate=gate if method == "pullback" else None)
    device = next(model.parameters()).device
    if start is not None and start.settings == settings and start.steps == steps:
        return start
    trajectory, field, done, probabilities, predictions = _resumed(start, settings, steps, image, device)
    origin, first = trajectory[0], start.first if start is not None and done else None
    for k in range(done, steps):
        direction, step_logits = direction_and_logits(model, trajectory[k], target, method, temperature, gate)
        if field is None:
            field, first = direction[0].cpu(), step_logits.softmax(1)[0].cpu()
        probabilities.append(step_logits.softmax(1)[0, int(target)].cpu())
        predictions.append(step_logits.argmax(1)[0].cpu())
        trajectory.append(project_l2(ascent_step(trajectory[k], direction, alpha), origin, eps).clamp(-1.0, 1.0))
        if on_step:
            on_step(k)
        if on_partial and k + 1 < steps:
            on_partial(Exploration(field, torch.cat(trajectory).cpu(), torch.stack(probabilities + probabilities[-1:]),
                                   torch.stack(predictions + predictions[-1:]), settings, first))
    if field is None:  # no steps: the field alone
        field, step_logits = direction_and_logits(model, origin, target, method, temperature, gate)
        field, first = field[0].cpu(), step_logits.softmax(1)[0].cpu()
    else:
        with torch.no_grad():
            step_logits = model(trajectory[-1])
    probabilities.append(step_logits.softmax(1)[0, int(target)].cpu())
    predictions.append(step_logits.argmax(1)[0].cpu())
    if on_step:
        on_step(steps)
    return Exploration(field, torch.cat(trajectory).cpu(), torch.stack(probabilities), torch.stack(predictions),
                       settings, first)


def _resumed(start: Exploration | None, settings: dict, steps: int, image: torch.Tensor, device):
    """Where a path continues from: ``start``'s iterates when it is a shorter path with the same settings, else
    the image alone. Returns (trajectory list of (1, C, H, W), field or None, steps done, probabilities, predictions)."""
    if start is not None and start.settings == settings and start.steps < steps:
        done = start.steps
        return (list(start.trajectory.to(device).unsqueeze(1)), start.field, done,
                list(start.probabilities[:done]), list(start.predictions[:done]))
    return [image.detach().to(device).unsqueeze(0)], None, 0, [], []
