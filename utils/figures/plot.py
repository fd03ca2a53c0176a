"""Turning tensors into readable figures: image grids in the paper's layout, gate curves, matrices."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def as_image(x: torch.Tensor) -> np.ndarray:
    """An image in [-1, 1], shape (3, H, W), as an (H, W, 3) array in [0, 1]."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def as_signed_map(d: torch.Tensor, quantile: float = 0.995) -> np.ndarray:
    """A signed map (perturbation or attribution), shape (3, H, W), scaled on its own for display.

    Zero maps to mid-grey; the ``quantile`` of |d| maps to the ends of [0, 1] (larger values are
    clipped), so one outlier pixel does not wash out the cell.
    """
    d = d.detach().double().cpu()
    scale = torch.quantile(d.abs().flatten(), quantile).item()
    if scale <= 0:
        scale = max(d.abs().max().item(), 1e-30)
    return (0.5 + 0.5 * (d / scale)).clamp(0, 1).permute(1, 2, 0).numpy()


def image_grid(cells: Sequence[Sequence[np.ndarray]], column_titles: Sequence[str] | None = None,
               row_titles: Sequence[str] | None = None, path: str | Path | None = None, cell_inches: float = 2.2,
               title: str | None = None, dpi: int = 100):
    """A grid of (H, W, 3) images in [0, 1] with column titles (and optional row titles), saved to ``path``.

    The file type follows the suffix (the paper's figures are ``.jpg``). Returns the figure.
    """
    rows, cols = len(cells), len(cells[0])
    header = 0.65 if title else 0.3  # inches above the grid for the title and the column titles
    height = rows * cell_inches + header
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell_inches, height),
                             squeeze=False, gridspec_kw=dict(wspace=0.02, hspace=0.02))
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(cells[r][c], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0 and column_titles:
                ax.set_title(column_titles[c], fontsize=10)
            if c == 0 and row_titles:
                ax.set_ylabel(row_titles[r], fontsize=10)
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 0.05 / height, va="top")
    fig.subplots_adjust(left=0.03 if row_titles else 0.005, right=0.995, bottom=0.005, top=1 - header / height)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        jpeg = str(path).lower().endswith((".jpg", ".jpeg"))
        fig.savefig(path, dpi=dpi, pil_kwargs={"quality": 80, "optimize": True} if jpeg else None)
    return fig


def plot_gates(gates: dict, temperatures: Sequence[float] = (0.15, 0.3, 0.5), z_range: float = 2.0):
    """Hard gate ``1[z > 0]`` against ``gate(z / T)``: sigmoid at several T, and every gate at T = 0.3."""
    z = torch.linspace(-z_range, z_range, 801, dtype=torch.float64)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax in (left, right):
        ax.step(z, (z > 0).double(), where="post", color="black", lw=2, label="hard gate 1[z > 0]")
        ax.set_xlabel("pre-activation z")
        ax.grid(alpha=0.3)
    for t in temperatures:
        left.plot(z, gates["sigmoid"](z / t), label=f"sigmoid(z / {t})")
    left.set_title("sigmoid gate across temperatures")
    for name, fn in gates.items():
        right.plot(z, fn(z / 0.3), label=f"{name}(z / 0.3)")
    right.set_title("gate shapes at T = 0.3")
    left.legend(fontsize=8), right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def heatmap(ax, matrix, rows: Sequence[str], columns: Sequence[str], title: str, xlabel: str = "", ylabel: str = "",
            vmin=None, vmax=None, cmap: str = "viridis", fmt="{:.2f}", rotate: bool = False):
    """A labelled heatmap on ``ax`` with each finite value written in its cell and a colour bar.

    ``fmt`` is a format string or a callable ``value -> str``; cell text is white on the darker half of
    the colour scale. ``rotate`` slants the column labels (for long names).
    """
    m = np.asarray(matrix.detach().double().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=float)
    image = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, fontsize=8, **({"rotation": 60, "ha": "right"} if rotate else {}))
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    low, high = image.get_clim()
    text = fmt if callable(fmt) else fmt.format
    for (i, j), v in np.ndenumerate(m):
        if np.isfinite(v):
            ax.text(j, i, text(v), ha="center", va="center", fontsize=6,
                    color="white" if v < (low + high) / 2 else "black")
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    return ax


def plot_matrix(matrix: torch.Tensor, labels: Sequence[str], title: str, ax=None, fmt: str = "{:.2f}"):
    """A square labelled heatmap (same labels on both axes) with values written in each cell."""
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * len(labels) + 2, 0.6 * len(labels) + 1.5))
    return heatmap(ax, matrix, labels, labels, title, fmt=fmt, rotate=True)


def savefig(fig, path, dpi: int = 110) -> Path:
    """Lay out, save (creating the folder) and close a figure; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
