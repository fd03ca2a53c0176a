"""Focus on 2x2 mosaics (Arias-Duart et al., 2022; Quantus 0.6's ``Focus``), as the Semantic Pullbacks paper sets
it up: the target image in two random quadrants and an image of another class in each of the other two, so a
map that ignores the image scores 0.5 by chance."""
from __future__ import annotations

from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F

QUADRANTS = ("top left", "top right", "bottom left", "bottom right")


def quadrant_masks(quadrants: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(M, H, W) bool: the pixels of the flagged quadrants, for flags (M, 4) in the order of ``QUADRANTS``
    (the split at H // 2 and W // 2, as Quantus splits)."""
    rows = torch.arange(height, device=quadrants.device) >= height // 2
    cols = torch.arange(width, device=quadrants.device) >= width // 2
    which = rows[:, None].long() * 2 + cols[None, :].long()  # (H, W) quadrant number
    return quadrants.bool()[:, which]


def focus(attributions: Union[torch.Tensor, Mapping[str, torch.Tensor]], images: Optional[torch.Tensor],
          quadrants: torch.Tensor, *, times_input: bool = True) -> Union[torch.Tensor, dict[str, torch.Tensor]]:
    """Focus: the share of the positive relevance that falls in the target's quadrants (higher is better).

    Relevance is ``images * attribution`` (``times_input=True``, the paper's input x attribution; with
    ``times_input=False`` the maps are taken as relevance and ``images`` may be None); its positive part is
    summed over all channels, and the score is ``sum over target quadrants / (sum over the image + 1e-9)``
    (Quantus' formula, with ``abs=False, normalise=False`` as the paper calls it).

    Args:
        attributions: (M, C, H, W), or name -> (M, C, H, W); images: (M, C, H, W) mosaics or None.
        quadrants: (M, 4) bool, True where the target image lies (``QUADRANTS`` order).

    Returns:
        (M,) float64 on the CPU, or name -> (M,) for a mapping.
    """
    if isinstance(attributions, Mapping):
        return {name: focus(a, images, quadrants, times_input=times_input) for name, a in attributions.items()}
    if attributions.dim() != 4:
        raise ValueError(f"attributions must be (M, C, H, W), got shape {tuple(attributions.shape)}")
    m, _, h, w = attributions.shape
    if quadrants.shape != (m, 4):
        raise ValueError(f"quadrants must be (M, 4) = ({m}, 4), got {tuple(quadrants.shape)}")
    relevance = attributions
    if times_input:
        if images is None or images.shape != attributions.shape:
            raise ValueError("times_input=True needs images shaped like the attributions")
        relevance = images * attributions
    positive = relevance.clamp(min=0).sum(1).double()
    inside = positive * quadrant_masks(quadrants.to(positive.device), h, w)
    return (inside.flatten(1).sum(1) / (positive.flatten(1).sum(1) + 1e-9)).cpu()


def make_mosaics(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, count: int,
                 tile: int = 112) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` Focus mosaics from a pool of labelled images, as the paper's ``evaluate_focus.py`` draws them.

    Per mosaic: a target class uniformly among the pool's classes and an image of it; two other classes uniformly
    (with replacement) among the rest, an image of each; two of the four quadrants, uniformly, for the target
    image, the other two for the other images in draw order. Images are resized to ``tile`` px (bilinear,
    antialiased) where they are not that size already.

    Args:
        images: (N, C, h, w) pool; labels: (N,) its classes (at least two distinct).
        generator: CPU generator of every choice.

    Returns:
        mosaics (count, C, 2 tile, 2 tile) on the images' device, targets (count,) on the labels' device,
        target quadrants (count, 4) bool on the CPU (``QUADRANTS`` order; exactly two True per row).
    """
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"images must be (N, C, h, w) with labels (N,), got {tuple(images.shape)} "
                         f"and {tuple(labels.shape)}")
    classes = labels.cpu().unique()
    if len(classes) < 2:
        raise ValueError("Focus mosaics need images of at least two classes")
    members = labels.cpu()[None, :] == classes[:, None]  # (classes, N)

    def pick(class_index):  # an image of each given class, uniformly
        return torch.multinomial(members[class_index].double(), 1, generator=generator)[:, 0]

    target_class = torch.randint(len(classes), (count,), generator=generator)
    others = torch.randint(len(classes) - 1, (count, 2), generator=generator)
    others = others + (others >= target_class[:, None]).long()
    chosen = torch.stack([pick(target_class), pick(others[:, 0]), pick(others[:, 1])], 1)  # (count, 3)
    target_quadrants = torch.zeros(count, 4, dtype=torch.bool)
    target_quadrants.scatter_(1, torch.rand(count, 4, generator=generator).argsort(1)[:, :2], True)
    tiles = images[chosen.flatten().to(images.device)]
    if tiles.shape[-2:] != (tile, tile):
        tiles = F.interpolate(tiles, size=(tile, tile), mode="bilinear", align_corners=False, antialias=True)
    tiles = tiles.view(count, 3, *tiles.shape[1:])
    # Quadrant q shows the target where flagged, else the next other image in order.
    source = torch.where(target_quadrants, 0, (~target_quadrants).long().cumsum(1)).to(images.device)
    quads = tiles[torch.arange(count, device=images.device)[:, None], source]  # (count, 4, C, tile, tile)
    top = torch.cat([quads[:, 0], quads[:, 1]], 3)
    bottom = torch.cat([quads[:, 2], quads[:, 3]], 3)
    return torch.cat([top, bottom], 2), classes[target_class].to(labels.device), target_quadrants
