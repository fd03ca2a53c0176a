"""The paper's figures: class-by-target ascent grids and temperature sweeps, written to ``media/``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from ..analysis.alignment import cosine
from ..core.ascent import pullback_ascent
from ..models.zoo import Classifier, paper_targets
from .plot import as_image, as_signed_map, image_grid
from ..core.pullback import excitation_pullback, vanilla_gradient

# (method, kind) -> media subfolder, as the paper names them
FIGURE_DIRS = {("pullback", "diff"): "pullback_diff", ("pullback", "image"): "pullback",
               ("gradient", "diff"): "vanilla_grad_diff", ("gradient", "image"): "vanilla_grad"}
METHOD_NAMES = {"pullback": "excitation pullback", "gradient": "vanilla gradient"}
PAPER_TEMPERATURE = 0.3  # the paper's figures; their files carry no temperature in the name


def figure_path(out_dir, method: str, kind: str, model_name: str, alpha: float, steps: int,
                temperature: float = PAPER_TEMPERATURE) -> Path:
    """``media/pullback_diff/resnet50_alpha_20_steps_5.jpg`` and the like.

    At the paper's T = 0.3 the paper's names; at any other temperature the pullback figures are
    ``<model>_temperature_<T>_alpha_<alpha>_steps_<k>.jpg``. Vanilla-gradient figures never depend
    on T and keep the paper's names.
    """
    tag = "" if method == "gradient" or math.isclose(temperature, PAPER_TEMPERATURE) else f"temperature_{temperature:g}_"
    return Path(out_dir) / FIGURE_DIRS[method, kind] / f"{model_name}_{tag}alpha_{alpha:g}_steps_{steps}.jpg"


class AscentGrids(dict):
    """What :func:`ascent_figures` computed: ``{(method, steps): hit rate}`` as before, plus the grids.

    Attributes:
        images: the rows' images (rows, C, H, W), on the CPU.
        targets: the columns' logit indices; ``labels`` their titles.
        perturbed: ``{(method, k): images after k steps (rows, targets, C, H, W)}`` on the CPU.
        temperature, alpha, eps: the ascent settings; ``paths`` the JPEGs written.
    """

    def __init__(self, hits=(), *, images=None, targets=(), labels=(), perturbed=None, temperature=PAPER_TEMPERATURE,
                 alpha=20.0, eps=100.0, paths=()):
        super().__init__(hits)
        self.images, self.targets, self.labels = images, list(targets), list(labels)
        self.perturbed = dict(perturbed or {})
        self.temperature, self.alpha, self.eps, self.paths = temperature, alpha, eps, list(paths)

    def perturbation(self, method: str, steps: int) -> torch.Tensor:
        """The k-step perturbations ``x_k - x`` of one method, (rows, targets, C, H, W)."""
        if (method, steps) not in self.perturbed:
            raise KeyError(f"no {method} grid after {steps} steps here; computed: {sorted(self.perturbed)}")
        return self.perturbed[method, steps] - self.images.unsqueeze(1)


def perturbation_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine between matching perturbations of two grids (..., C, H, W) -> (...), each flattened over C, H, W.

    A zero perturbation against anything gives 0.
    """
    if a.shape != b.shape:
        raise ValueError(f"grids differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    cells = a.shape[:-3]
    return cosine(a.detach().reshape(-1, *a.shape[-3:]), b.detach().reshape(-1, *b.shape[-3:])).view(cells)


def grid_cosines(pullback: AscentGrids, gradient: AscentGrids | None = None, steps: int = 5) -> dict:
    """How alike the pullback-ascent and gradient-ascent grids are: the per-cell cosine between the
    ``steps``-step perturbations along the excitation pullback and along the vanilla gradient.

    Args:
        pullback: an :func:`ascent_figures` result holding the pullback grid after ``steps`` steps.
        gradient: the result holding the gradient grid (default: ``pullback`` itself), e.g. the T = 0.3
            run's when the T = 1 run computed only pullbacks. Both must hold the same images and targets.
        steps: which step count to compare.

    Returns:
        ``{"mean", "min", "max", "median"}`` over the grid's cells (floats), ``"cells"`` (rows, targets)
        and the settings ``"temperature"``, ``"steps"``.
    """
    gradient = pullback if gradient is None else gradient
    if gradient.targets != pullback.targets or not torch.equal(gradient.images, pullback.images):
        raise ValueError("the two results hold different images or targets")
    cells = perturbation_cosines(pullback.perturbation("pullback", steps), gradient.perturbation("gradient", steps))
    return {"mean": cells.mean().item(), "median": cells.median().item(), "min": cells.min().item(),
            "max": cells.max().item(), "cells": cells, "temperature": pullback.temperature, "steps": steps}


def ascent_trajectories(model, images: torch.Tensor, targets: Sequence[int], steps: int = 10, method="pullback",
                        alpha=20.0, eps=100.0, temperature=0.3, progress=True) -> torch.Tensor:
    """Ascent from every image toward every target: (steps + 1, rows, targets, C, H, W), index 0 the images."""
    rows = []
    for image in tqdm(images, desc=f"{METHOD_NAMES[method]} ascent, {len(targets)} targets per image",
                      disable=not progress):
        batch = image.unsqueeze(0).expand(len(targets), *image.shape)
        rows.append(pullback_ascent(model, batch, list(targets), steps=steps, alpha=alpha, eps=eps, method=method,
                                    temperature=temperature, return_trajectory=True))
    return torch.stack(rows, dim=1)


@torch.no_grad()
def hit_rate(model, perturbed: torch.Tensor, targets: Sequence[int]) -> float:
    """Fraction of perturbed images (rows, targets, C, H, W) that the model classifies as their column's target."""
    rows, cols = perturbed.shape[:2]
    predicted = model(perturbed.flatten(0, 1)).argmax(1).view(rows, cols).cpu()
    return (predicted == torch.tensor(targets)).double().mean().item()


def ascent_figures(model: Classifier, images: torch.Tensor, out_dir="media", steps=(1, 5, 10), alpha=20.0,
                   eps=100.0, temperature=PAPER_TEMPERATURE, methods=("pullback", "gradient"),
                   progress=True) -> AscentGrids:
    """The paper's class-by-target grids for one model, as difference images and as perturbed images.

    Rows are ``images`` (the paper's five); columns the original and the six targets of
    :func:`utils.models.zoo.paper_targets`. Writes one JPEG per method, kind and step count (see
    :func:`figure_path`: at T != 0.3 the pullback files carry the temperature in their names).

    Returns:
        An :class:`AscentGrids`: the dict ``{(method, steps): hit rate}`` (the fraction of the grid's
        cells that the model assigns to the column's target after that many steps), which also keeps
        the perturbed grids for :func:`grid_cosines`.
    """
    targets, labels = paper_targets(model)
    titles = ["original"] + labels
    originals = [as_image(x) for x in images]
    result = AscentGrids(images=images.detach().cpu(), targets=targets, labels=labels, temperature=temperature,
                         alpha=alpha, eps=eps)
    for method in methods:
        path = ascent_trajectories(model, images, targets, max(steps), method, alpha, eps, temperature, progress)
        for k in steps:
            result.perturbed[method, k] = path[k].detach().cpu()
            diffs = path[k] - images.unsqueeze(1)
            for kind, show in (("diff", as_signed_map), ("image", as_image)):
                source = diffs if kind == "diff" else path[k]
                cells = [[originals[r]] + [show(source[r, c]) for c in range(len(targets))] for r in range(len(images))]
                what = "perturbation" if kind == "diff" else "perturbed image"
                title = (f"{model.name}: {what} after {k} step{'s' * (k > 1)} of {METHOD_NAMES[method]} ascent"
                         f" (alpha={alpha:g}, eps={eps:g}" + (f", T={temperature:g})" if method == "pullback" else ")"))
                file = figure_path(out_dir, method, kind, model.name, alpha, k, temperature)
                fig = image_grid(cells, titles, path=file, title=title)
                plt.close(fig)
                result.paths.append(file)
            result[method, k] = hit_rate(model, path[k], targets)
        del path
    return result


def temperature_sweep(model: Classifier, images: torch.Tensor, targets: Sequence[int], out_dir="media",
                      temperatures=(0.1, 0.2, 0.3, 0.5, 1.0, 2.0), steps=5, alpha=20.0, eps=100.0):
    """Pullbacks and ``steps``-step ascent perturbations across temperatures, beside the vanilla gradient.

    Rows are ``images`` (each toward its ``targets`` entry). Writes two JPEGs under
    ``out_dir/temperature_sweep/`` and returns their paths.
    """
    titles = ["original", "vanilla gradient"] + [f"pullback T={t:g}" for t in temperatures]
    maps = [vanilla_gradient(model, images, targets)] + [
        excitation_pullback(model, images, targets, temperature=t) for t in tqdm(temperatures, desc="pullbacks")]
    ascents = [pullback_ascent(model, images, targets, steps, alpha, eps, method="gradient")] + [
        pullback_ascent(model, images, targets, steps, alpha, eps, temperature=t)
        for t in tqdm(temperatures, desc=f"{steps}-step ascents")]
    folder = Path(out_dir) / "temperature_sweep"
    names = [model.class_names[t] for t in targets]
    paths = []
    for stem, columns, what in (("pullback", maps, "input-space vector field"),
                                (f"ascent_alpha_{alpha:g}_steps_{steps}", [a - images for a in ascents],
                                 f"perturbation after {steps} ascent steps")):
        cells = [[as_image(images[r])] + [as_signed_map(col[r]) for col in columns] for r in range(len(images))]
        path = folder / f"{model.name}_{stem}.jpg"
        fig = image_grid(cells, titles, row_titles=[f"target: {n}" for n in names], path=path,
                         title=f"{model.name}: {what} across temperatures")
        plt.close(fig)
        paths.append(path)
    return paths


# The paper's figures that ascent_figures writes: (figure, method, kind, steps, what it shows).
PAPER_FIGURES = (("Figure 1", "pullback", "diff", 5, "5-step perturbations along the excitation pullback"),
                 ("Figure 2", "gradient", "diff", 1, "one-step perturbations along the vanilla gradient"),
                 ("Figure 2", "pullback", "diff", 1, "one-step perturbations along the excitation pullback"),
                 ("Figure 3", "pullback", "image", 10, "images after 10 steps of ascent along the excitation pullback"),
                 ("Figure 4", "gradient", "image", 10, "images after 10 steps of ascent along the vanilla gradient"))
PAPER_MODEL_NOTE = {"Figure 1": "ResNet50"}  # the other figures show all three of the paper's models


def paper_figures(out_dir, model_name: str, steps=(1, 5, 10), alpha: float = 20.0,
                  temperature: float = PAPER_TEMPERATURE) -> list[tuple[str, Path]]:
    """``(caption, path)`` of each figure of the paper among those :func:`ascent_figures` wrote for one model.

    A figure whose step count is not in ``steps`` is left out. The caption names the paper's figure, what
    it shows and the paper's models; the weights in use belong in the caller's caption (they depend on
    the loaded model, see :func:`utils.figures.show.weights_note`).
    """
    figures = []
    for figure, method, kind, k, what in PAPER_FIGURES:
        if k in steps:
            models = PAPER_MODEL_NOTE.get(figure, "ResNet50, VGG11_BN, DenseNet121")
            caption = f"{figure} of the paper ({models} there): {what}" + (
                f", T = {temperature:g}" if method == "pullback" else "")
            figures.append((caption, figure_path(out_dir, method, kind, model_name, alpha, k, temperature)))
    return figures
