"""The paper's figures: class-by-target ascent grids and temperature sweeps, written to ``media/``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from ..core.ascent import pullback_ascent
from ..models.zoo import Classifier, paper_targets
from .plot import as_image, as_signed_map, image_grid
from ..core.pullback import excitation_pullback, vanilla_gradient

# (method, kind) -> media subfolder, as the paper names them
FIGURE_DIRS = {("pullback", "diff"): "pullback_diff", ("pullback", "image"): "pullback",
               ("gradient", "diff"): "vanilla_grad_diff", ("gradient", "image"): "vanilla_grad"}
METHOD_NAMES = {"pullback": "excitation pullback", "gradient": "vanilla gradient"}


def figure_path(out_dir, method: str, kind: str, model_name: str, alpha: float, steps: int) -> Path:
    """``media/pullback_diff/resnet50_alpha_20_steps_5.jpg`` and the like."""
    return Path(out_dir) / FIGURE_DIRS[method, kind] / f"{model_name}_alpha_{alpha:g}_steps_{steps}.jpg"


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
                   eps=100.0, temperature=0.3, methods=("pullback", "gradient"), progress=True):
    """The paper's class-by-target grids for one model, as difference images and as perturbed images.

    Rows are ``images`` (the paper's five); columns the original and the six targets of
    :func:`utils.models.paper_targets`. Writes one JPEG per method, kind and step count (see
    :func:`figure_path`) and returns ``{(method, steps): hit rate}``: the fraction of the grid's cells
    that the model assigns to the column's target after that many steps.
    """
    targets, labels = paper_targets(model)
    titles = ["original"] + labels
    originals = [as_image(x) for x in images]
    hits = {}
    for method in methods:
        path = ascent_trajectories(model, images, targets, max(steps), method, alpha, eps, temperature, progress)
        for k in steps:
            diffs = path[k] - images.unsqueeze(1)
            for kind, show in (("diff", as_signed_map), ("image", as_image)):
                source = diffs if kind == "diff" else path[k]
                cells = [[originals[r]] + [show(source[r, c]) for c in range(len(targets))] for r in range(len(images))]
                what = "perturbation" if kind == "diff" else "perturbed image"
                title = (f"{model.name}: {what} after {k} step{'s' * (k > 1)} of {METHOD_NAMES[method]} ascent"
                         f" (alpha={alpha:g}, eps={eps:g}" + (f", T={temperature:g})" if method == "pullback" else ")"))
                fig = image_grid(cells, titles, path=figure_path(out_dir, method, kind, model.name, alpha, k), title=title)
                plt.close(fig)
            hits[method, k] = hit_rate(model, path[k], targets)
    return hits


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
