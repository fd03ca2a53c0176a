"""The explorer's panels: arrays, PNG bytes and matplotlib figures of an :class:`Exploration`."""
from __future__ import annotations

import base64
import html
import io

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import torch

from ..heatmaps import HEAT_CMAP, HEAT_QUANTILE, pixel_relevance
from ..plot import as_image, as_signed_map
from .path import METHOD_LABELS, Exploration

CURVE_COLORS = {"pullback": "tab:red", "gradient": "tab:blue"}


def field_heat(field: torch.Tensor, quantile: float = HEAT_QUANTILE) -> tuple[np.ndarray, float]:
    """The field's channel sum (H, W) divided by the ``quantile`` of its absolute values and clipped to
    [-1, 1] (as :func:`utils.figures.heatmaps.as_heat`), and that divisor: the colour bar's end value."""
    r = pixel_relevance(field)
    scale = torch.quantile(r.abs().flatten(), quantile).item()
    if scale <= 0:
        scale = max(r.abs().max().item(), 1e-30)
    return (r / scale).clamp(-1, 1).numpy(), scale


def panel_arrays(result: Exploration, k: int) -> dict:
    """What the explorer shows of one method after ``k`` steps, as arrays.

    ``field`` (C, H, W) the direction at the image, ``heat`` its channel sum scaled to [-1, 1] and
    ``heat_scale`` the value shown as +1 (:func:`field_heat`); ``perturbation`` (C, H, W) ``x_k - x`` and
    ``perturbation_rgb`` its display (:func:`as_signed_map`); ``perturbed`` (C, H, W) ``x_k`` and
    ``perturbed_rgb``; ``probabilities`` (k + 1,) the target's probability along the path;
    ``prediction`` the top class at k.
    """
    perturbation = result.perturbation(k)
    heat, scale = field_heat(result.field)
    return {"field": result.field, "heat": heat, "heat_scale": scale, "heat_rgb": heat_rgb(heat),
            "perturbation": perturbation, "perturbation_rgb": as_signed_map(perturbation),
            "perturbed": result.trajectory[k], "perturbed_rgb": as_image(result.trajectory[k]),
            "original_rgb": as_image(result.trajectory[0]),
            "probabilities": result.probabilities[:k + 1].numpy(), "all_probabilities": result.probabilities.numpy(),
            "prediction": int(result.predictions[k])}


def heat_rgb(heat: np.ndarray) -> np.ndarray:
    """A heat map in [-1, 1] (H, W) as RGB (H, W, 3) in [0, 1] with :data:`HEAT_CMAP`."""
    return matplotlib.colormaps[HEAT_CMAP]((heat + 1) / 2)[..., :3]


def array_png(rgb: np.ndarray, compress_level: int = 1) -> bytes:
    """An (H, W, 3) array in [0, 1] as PNG bytes (fast compression: the page redraws on every change)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(
        buffer, format="png", compress_level=compress_level)
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_html(png: bytes, alt: str, width: int) -> str:
    """An ``<img>`` of PNG bytes with alt text (the explorer's panels are HTML, so they carry it)."""
    return (f"<img src='{data_url(png)}' alt='{html.escape(alt, quote=True)}' title='{html.escape(alt, quote=True)}'"
            f" width='{width}' height='{width}' style='display:block;image-rendering:auto'>")


def colorbar_html(scale: float, height: int) -> str:
    """A vertical colour bar for a field's heat map: :data:`HEAT_CMAP` from -``scale`` to +``scale``."""
    cmap = matplotlib.colormaps[HEAT_CMAP]
    stops = ", ".join(matplotlib.colors.to_hex(cmap(v)) for v in np.linspace(1, 0, 11))
    label = "font-size:10px;line-height:1;color:#333"
    return (f"<div style='display:flex;gap:3px;height:{height}px' title='channel sum of the field'>"
            f"<div style='width:10px;background:linear-gradient({stops});border:1px solid #999'></div>"
            f"<div style='display:flex;flex-direction:column;justify-content:space-between;{label}'>"
            f"<span>+{scale:.2g}</span><span>0</span><span>&minus;{scale:.2g}</span></div></div>")


class CurvePlot:
    """The target's probability along both paths on one plot, in one reused figure: the axes are drawn once
    per target and path length, and each update draws only the curves over them (blitting)."""

    def __init__(self, dpi: int = 80):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        with matplotlib.rc_context({"font.size": 9}):
            self.fig = Figure(figsize=(3.7, 3.0), dpi=dpi)
            self.canvas = FigureCanvasAgg(self.fig)
            ax = self.ax = self.fig.add_subplot()
            self.lines = {m: ax.plot([], [], "-o", ms=3, color=CURVE_COLORS[m], label=METHOD_LABELS[m],
                                     animated=True)[0] for m in METHOD_LABELS}
            self.rest = {m: ax.plot([], [], "-", color=CURVE_COLORS[m], alpha=0.3, animated=True)[0]
                         for m in METHOD_LABELS}
            self.mark = ax.axvline(0, color="0.5", lw=0.8, ls="--", animated=True)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("ascent step")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_ylabel("probability")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
        self._axes_for = None
        self._background = None

    def png(self, arrays: dict, target_name: str, k: int) -> bytes:
        """PNG bytes of the curves of ``arrays`` ({method: :func:`panel_arrays`}) up to step ``k`` (the rest faded)."""
        longest = max([1, *(len(a["all_probabilities"]) - 1 for a in arrays.values())])
        if self._axes_for != (target_name, longest):
            with matplotlib.rc_context({"font.size": 9}):
                self.ax.set_xlim(-0.3, longest + 0.3)
                self.ax.set_title(f"p({target_name}) along the path", fontsize=9)
                self.fig.tight_layout(pad=0.4)
                self.canvas.draw()  # everything but the animated curves
            self._background, self._axes_for = self.canvas.copy_from_bbox(self.fig.bbox), (target_name, longest)
        else:
            self.canvas.restore_region(self._background)
        for method, line in self.lines.items():
            everything = arrays[method]["all_probabilities"] if method in arrays else np.zeros(0)
            line.set_data(np.arange(min(k + 1, len(everything))), everything[:k + 1])
            self.rest[method].set_data(np.arange(len(everything)), everything)
        self.mark.set_xdata([k, k])
        for artist in (*self.rest.values(), self.mark, *self.lines.values()):
            self.ax.draw_artist(artist)
        return array_png(np.asarray(self.canvas.buffer_rgba())[..., :3] / 255.0)


def composite_png(image_rgb: np.ndarray, rows: dict, curve_png: bytes, header: str, notes=()) -> bytes:
    """One PNG of the page's panels for download: ``header`` on top, then the image with ``notes`` (lines of
    text) under it, per method (``rows``: {label: [(title, rgb), ...]}) a row of panels, and the probability
    curve on the right."""
    from PIL import Image, ImageDraw, ImageFont

    side, pad, text = image_rgb.shape[0], 8, 18
    curve = Image.open(io.BytesIO(curve_png)).convert("RGB")
    columns = 1 + max(len(panels) for panels in rows.values())
    width = pad + columns * (side + pad) + curve.width + pad
    height = text + pad + len(rows) * (text + side + pad) + pad
    canvas = Image.new("RGB", (width, max(height, text + curve.height + 2 * pad)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    draw.text((pad, 4), header, fill="black", font=font)

    def paste(rgb, x, y, title):
        draw.text((x, y), title, fill="black", font=font)
        canvas.paste(Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)), (x, y + text))

    paste(image_rgb, pad, text + pad, "image")
    for i, line in enumerate(notes):
        draw.text((pad, 2 * text + side + 2 * pad + i * text), line, fill="black", font=font)
    for r, (label, panels) in enumerate(rows.items()):
        y = text + pad + r * (text + side + pad)
        for c, (title, rgb) in enumerate(panels, start=1):
            paste(rgb, pad + c * (side + pad), y, f"{label}: {title}" if c == 1 else title)
    canvas.paste(curve, (pad + columns * (side + pad), text + pad))
    buffer = io.BytesIO()
    canvas.save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def panel_figure(arrays: dict, target_name: str, class_names, temperature: float | None, k: int, dpi: int = 80):
    """The explorer's view as one figure: per method in ``arrays`` ({method: :func:`panel_arrays`}) the
    image, the field's heat map, the perturbation and the perturbed image; the probability curves on the right."""
    methods = list(arrays)
    with matplotlib.rc_context({"font.size": 9}):
        fig = plt.figure(figsize=(13, 3.1 * len(methods)), dpi=dpi)
        grid = fig.add_gridspec(len(methods), 5, width_ratios=[1, 1, 1, 1, 1.4])
        for r, method in enumerate(methods):
            a = arrays[method]
            what = METHOD_LABELS[method] + (f", T={temperature:g}" if method == "pullback" else "")
            for c, (rgb, title) in enumerate(((a["original_rgb"], "image"), (a["heat_rgb"], f"{what}: field"),
                                              (a["perturbation_rgb"], f"perturbation after {k} steps"),
                                              (a["perturbed_rgb"], f"prediction: {class_names[a['prediction']]}"))):
                ax = fig.add_subplot(grid[r, c])
                ax.imshow(rgb)
                ax.set_title(title)
                ax.set_xticks([]), ax.set_yticks([])
        ax = fig.add_subplot(grid[:, 4])
        for method in methods:
            p = arrays[method]["all_probabilities"]
            ax.plot(range(len(p)), p, "-o", ms=3, color=CURVE_COLORS[method], label=METHOD_LABELS[method])
        ax.axvline(k, color="0.5", lw=0.8, ls="--")
        ax.set_ylim(-0.02, 1.02), ax.set_xlabel("ascent step"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
        ax.set_title(f"p({target_name}) along the path")
        fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    """A figure as PNG bytes (and closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    plt.close(fig)
    return buffer.getvalue()
