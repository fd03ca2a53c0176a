"""Attribution heat maps: one map per method for each image, side by side, in one colour scheme.

Every map is reduced to one signed relevance per pixel by summing over channels (the convention of
the faithfulness evaluation, :mod:`utils.analysis.faithfulness`), scaled on its own so that the 99.5th
percentile of |relevance| reaches the ends of the colour scale, and drawn with a diverging map:
red for relevance toward the row's class, blue against, white for none.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .plot import as_image

HEAT_CMAP = "RdBu_r"  # diverging: blue < 0 < red, white at 0
HEAT_QUANTILE = 0.995
GALLERY_METHODS = ("pullback", "pullback_x_input", "gradient", "gradient_x_input", "integrated_gradients", "gradcam")
METHOD_TITLES = {"pullback": "excitation pullback", "pullback_x_input": "pullback \u00d7 input",
                 "gradient": "vanilla gradient", "gradient_x_input": "gradient \u00d7 input",
                 "integrated_gradients": "Integrated Gradients", "gradcam": "Grad-CAM",
                 "smoothgrad": "SmoothGrad", "guided_backprop": "Guided Backprop", "guided_gradcam": "Guided Grad-CAM",
                 "pullback_ascent_5": "5-step pullback ascent"}
# As in the faithfulness evaluation: pullbacks at T = 0.3, Integrated Gradients with 8 steps from mid-grey.
GALLERY_OPTIONS = {"integrated_gradients": {"steps": 8}}


def pixel_relevance(attribution: torch.Tensor) -> torch.Tensor:
    """One signed relevance per pixel: the channel sum of an attribution (..., C, H, W) -> (..., H, W)."""
    return attribution.detach().double().cpu().sum(-3)


def as_heat(relevance: torch.Tensor, quantile: float = HEAT_QUANTILE) -> np.ndarray:
    """A per-pixel relevance (H, W) scaled into [-1, 1] for display with :data:`HEAT_CMAP` at vmin=-1, vmax=1.

    Divided by the ``quantile`` of |relevance| (larger values clip), so one outlier does not wash out
    the map; an all-zero map stays zero.
    """
    r = relevance.detach().double().cpu()
    scale = torch.quantile(r.abs().flatten(), quantile).item()
    if scale <= 0:
        scale = max(r.abs().max().item(), 1e-30)
    return (r / scale).clamp(-1, 1).numpy()


def gallery_maps(model, images: torch.Tensor, targets: Sequence[int], methods: Sequence[str] = GALLERY_METHODS,
                 options: dict | None = None) -> dict[str, torch.Tensor]:
    """``{method: per-pixel relevance (N, H, W)}`` of each image toward its target, one image at a time.

    Computed with :func:`utils.analysis.attribution.attribute` (``options[method]`` as its keyword
    arguments; default :data:`GALLERY_OPTIONS`) and reduced by :func:`pixel_relevance`.
    """
    from ..analysis.attribution import attribute  # Captum: imported only when a gallery is drawn

    options = GALLERY_OPTIONS if options is None else options
    maps = {m: [] for m in methods}
    for image, target in zip(images, targets):
        x = image.unsqueeze(0)
        for method in methods:
            maps[method].append(pixel_relevance(attribute(model, x, int(target), method, **options.get(method, {})))[0])
    return {m: torch.stack(v) for m, v in maps.items()}


def gallery_figure(images: torch.Tensor, maps: dict[str, torch.Tensor], row_titles: Sequence[str], title: str = "",
                   cell_inches: float = 2.2, dpi: int = 100):
    """Rows = images, columns = the original and each method's heat map; returns the figure."""
    methods = list(maps)
    rows, cols = len(images), len(methods) + 1
    header, footer = 0.75, 0.8  # inches: title and column titles above, colour bar below
    height = rows * cell_inches + header + footer
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell_inches + 0.35, height), squeeze=False, dpi=dpi,
                             gridspec_kw=dict(wspace=0.03, hspace=0.03))
    shown = None
    for r in range(rows):
        axes[r][0].imshow(as_image(images[r]), interpolation="nearest")
        axes[r][0].set_ylabel(row_titles[r], fontsize=10)
        for c, method in enumerate(methods, start=1):
            shown = axes[r][c].imshow(as_heat(maps[method][r]), cmap=HEAT_CMAP, vmin=-1, vmax=1,
                                      interpolation="nearest")
        for c in range(cols):
            axes[r][c].set_xticks([]), axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title("image" if c == 0 else METHOD_TITLES.get(methods[c - 1], methods[c - 1]),
                                     fontsize=11)
    fig.subplots_adjust(left=0.35 / (cols * cell_inches + 0.35), right=0.998, bottom=footer / height,
                        top=1 - header / height)
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 0.06 / height, va="top")
    bar = fig.add_axes([0.3, 0.4 / height, 0.3, 0.14 / height])
    colorbar = fig.colorbar(shown, cax=bar, orientation="horizontal", ticks=[-1, 0, 1])
    colorbar.ax.set_xticklabels(["against the class", "0", "toward the class"], fontsize=8)
    fig.text(0.62, 0.47 / height, "each map: channel sum, scaled to its own 99.5th percentile of |value|",
             fontsize=8, va="center")
    return fig


def heatmap_gallery(model, images: torch.Tensor, targets: Sequence[int], out_dir="media",
                    methods: Sequence[str] = GALLERY_METHODS, options: dict | None = None,
                    row_titles: Sequence[str] | None = None) -> Path:
    """Attribution heat maps of ``images`` toward ``targets`` by each method, written to
    ``out_dir/heatmaps/<model.name>.jpg``.

    Args:
        model: classifier on images in [-1, 1] with ``name`` and ``class_names`` (see :mod:`utils.models.zoo`).
        images: (N, 3, H, W) in [-1, 1], one row each.
        targets: one logit index per image (e.g. each image's own class).
        out_dir: the media folder; the gallery goes to its ``heatmaps/`` subfolder.
        methods: keys of :data:`utils.analysis.attribution.METHODS`, one column each.
        options: per-method keyword arguments for ``attribute`` (default :data:`GALLERY_OPTIONS`).
        row_titles: default ``"<class name>"`` of each target.

    Returns:
        The path of the JPEG.
    """
    maps = gallery_maps(model, images, targets, methods, options)
    names = getattr(model, "class_names", None)
    if row_titles is None:
        row_titles = [names[int(t)] if names else f"class {int(t)}" for t in targets]
    fig = gallery_figure(images.detach().cpu(), maps, row_titles,
                         title=f"{getattr(model, 'name', 'model')}: attribution maps toward each image's class "
                               "(pullbacks at T=0.3)")
    path = Path(out_dir) / "heatmaps" / f"{getattr(model, 'name', 'model')}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, pil_kwargs={"quality": 85, "optimize": True})
    plt.close(fig)
    return path
