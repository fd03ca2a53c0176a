"""The explorer's panels: arrays, PNG bytes and matplotlib figures of an :class:`Exploration`."""
from __future__ import annotations

import io

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from ..heatmaps import HEAT_CMAP, as_heat, pixel_relevance
from ..plot import as_image, as_signed_map
from .path import METHOD_LABELS, Exploration


def panel_arrays(result: Exploration, k: int) -> dict:
    """What the explorer shows after ``k`` steps, as arrays.

    ``field`` (C, H, W) the direction at the image and ``heat`` its channel sum scaled to [-1, 1]
    (:func:`utils.figures.heatmaps.as_heat`); ``perturbation`` (C, H, W) ``x_k - x`` and ``perturbation_rgb``
    its display (:func:`as_signed_map`); ``perturbed`` (C, H, W) ``x_k`` and ``perturbed_rgb``;
    ``probabilities`` (k + 1,) the target's probability along the path; ``prediction`` the top class at k.
    """
    perturbation = result.perturbation(k)
    heat = as_heat(pixel_relevance(result.field))
    return {"field": result.field, "heat": heat, "heat_rgb": heat_rgb(heat),
            "perturbation": perturbation, "perturbation_rgb": as_signed_map(perturbation),
            "perturbed": result.trajectory[k], "perturbed_rgb": as_image(result.trajectory[k]),
            "original_rgb": as_image(result.trajectory[0]),
            "probabilities": result.probabilities[:k + 1].numpy(), "all_probabilities": result.probabilities.numpy(),
            "prediction": int(result.predictions[k])}


def panel_figure(arrays: dict, target_name: str, predicted_name: str, method: str, temperature: float | None,
                 k: int, dpi: int = 80):
    """The explorer's panel: image, field heat map, perturbation, perturbed image, probability curve."""
    with matplotlib.rc_context({"font.size": 9}):
        fig, axes = plt.subplots(1, 5, figsize=(14, 3.6), dpi=dpi, gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.25]})
        what = METHOD_LABELS[method] + (f", T={temperature:g}" if method == "pullback" else "")
        axes[0].imshow(arrays["original_rgb"])
        axes[0].set_title("image")
        axes[1].imshow(arrays["heat"], cmap=HEAT_CMAP, vmin=-1, vmax=1)
        axes[1].set_title(f"{what}\n(channel sum, red = toward target)")
        axes[2].imshow(arrays["perturbation_rgb"])
        axes[2].set_title(f"perturbation after {k} step{'s' * (k != 1)}")
        axes[3].imshow(arrays["perturbed_rgb"])
        axes[3].set_title(f"perturbed image\nmodel says: {predicted_name}")
        for ax in axes[:4]:
            ax.set_xticks([]), ax.set_yticks([])
        _probability_axes(axes[4], arrays, target_name, k)
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.14, top=0.83, wspace=0.12)
    return fig


def heat_rgb(heat: np.ndarray) -> np.ndarray:
    """A heat map in [-1, 1] (H, W) as RGB (H, W, 3) in [0, 1] with :data:`HEAT_CMAP`."""
    return matplotlib.colormaps[HEAT_CMAP]((heat + 1) / 2)[..., :3]


def array_png(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) array in [0, 1] as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="png")
    return buffer.getvalue()


def probability_figure(arrays: dict, target_name: str, k: int, dpi: int = 80):
    """The target's probability along the path (grey: the whole computed path; red: up to step k)."""
    with matplotlib.rc_context({"font.size": 9}):
        fig, ax = plt.subplots(figsize=(3.4, 2.8), dpi=dpi)
        _probability_axes(ax, arrays, target_name, k)
        fig.tight_layout(pad=0.4)
    return fig


def _probability_axes(ax, arrays: dict, target_name: str, k: int) -> None:
    everything = arrays["all_probabilities"]
    ax.plot(range(len(everything)), everything, "-", color="0.75")
    ax.plot(range(k + 1), arrays["probabilities"], "-o", color="tab:red", ms=3)
    ax.axvline(k, color="0.5", lw=0.8, ls="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.3, max(len(everything) - 1, 1) + 0.3)
    ax.set_xlabel("ascent step")
    ax.set_title(f"p({target_name}) along the path")
    ax.grid(alpha=0.3)


def figure_png(fig) -> bytes:
    """A figure as PNG bytes (and closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    plt.close(fig)
    return buffer.getvalue()
