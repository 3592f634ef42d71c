"""GMIC's pooling and patch retrieval (docs/method.md §9), as functions of tensors.

Coordinates: saliency-grid *cells* ``(row, col)`` index the network's h×w output grid;
*input pixels* ``(row, col)`` index the N×1×H×W input tensor. A patch is given by its
upper-left corner; rows come first everywhere.

Everything here takes any (N, C, h, w) map, so the map that picks the patches can be
GMIC's own saliency or a map from another CAM method on the same grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "cells_to_pixels",
    "crop_patches",
    "empty_class_maps",
    "retrieve_windows",
    "top_t_count",
    "top_t_pool",
    "window_cells",
]


def top_t_count(h: int, w: int, percent_t: float) -> int:
    """How many of the h·w values top-t pooling averages: ``round(h·w·t)`` (Python's
    rounding, halves to even), at least 1."""
    return max(1, round(h * w * percent_t))


def top_t_pool(saliency: torch.Tensor, percent_t: float) -> torch.Tensor:
    """Top-t% pooling: per image and class, the mean of the :func:`top_t_count` largest
    values of the (N, C, h, w) map; returns (N, C)."""
    n, c, h, w = saliency.shape
    k = top_t_count(h, w, percent_t)
    return saliency.reshape(n, c, h * w).topk(k, dim=2).values.mean(dim=2)


def window_cells(
    crop_shape: tuple[int, int], input_size: tuple[int, int], grid_size: tuple[int, int]
) -> tuple[int, int]:
    """The patch size in grid cells: ``round(crop · h / H)`` per axis (halves to even),
    kept between 1 and the grid size (4×4 cells for 256×256 px at 2944×1920 → 46×30)."""
    cells = []
    for crop, size, grid in zip(crop_shape, input_size, grid_size):
        cells.append(min(max(1, round(crop * grid / size)), grid))
    return cells[0], cells[1]


def _unit_class_sum(values: torch.Tensor) -> torch.Tensor:
    """Each (N, C, h, w) class map min–max normalised over its cells (a constant map
    counts 0, where the official code divides by zero), summed over classes: (N, 1, h, w)."""
    import torch

    flat = values.reshape(values.shape[0], values.shape[1], -1)
    low = flat.amin(dim=2)[..., None, None]
    span = flat.amax(dim=2)[..., None, None] - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    normalised = torch.where(span > 0, (values - low) / safe, torch.zeros_like(values))
    return normalised.sum(dim=1, keepdim=True)


def empty_class_maps(score_map: torch.Tensor) -> torch.Tensor:
    """(N, C) bool: which class maps of an (N, C, h, w) map are flat (all cells equal,
    zero included), so that they cannot rank any window above another."""
    flat = score_map.detach().reshape(score_map.shape[0], score_map.shape[1], -1)
    return flat.amax(dim=2) <= flat.amin(dim=2)


def retrieve_windows(score_map: torch.Tensor, window: tuple[int, int], k: int,
                     fallback: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy retrieval of ``k`` distinct windows of ``window`` cells from an (N, C, h, w) map.

    Each class map is min–max normalised over its cells once (a constant map counts 0),
    the classes are summed, and ``k`` times the window with the largest mean is taken
    (windows lie fully inside the map; on ties the first in row-major order) and its
    cells are set to 0 before the next pick. Up to here this is the official rule.

    A map can run out of information before ``k`` picks: a gradient CAM of a class whose
    saliency logits are all negative is zero everywhere, LayerCAM is non-zero only on the
    top-t cells (docs/method.md §9), and the official rule would then return the top-left
    window again and again. So each pick is ranked lexicographically: first by the map's
    window mean; where every remaining window of the map is 0, by the ``fallback`` map's
    (same grid, normalised and zeroed the same way; GMIC's own saliency in training); and
    where that is exhausted too, by the share of the window's cells not yet picked. The
    picks are therefore distinct whenever ``k`` windows fit, non-zero windows of the map
    come first in their official order, and a map with information left at every pick
    gives exactly the official windows.

    Returns the upper-left cells (N, k, 2) as int64 ``(row, col)``, in retrieval order.
    The maps are not differentiated through.
    """
    import torch
    import torch.nn.functional as F

    h, w = score_map.shape[2:]
    wh, ww = window
    values = score_map.detach().float()
    tiers = [_unit_class_sum(values)]
    if fallback is not None and tuple(fallback.shape[2:]) == (h, w):
        tiers.append(_unit_class_sum(fallback.detach().float().to(values.device)))
    tiers.append(torch.ones_like(tiers[0]))  # cells not yet picked
    pooled_w = w - ww + 1
    rows = torch.arange(h, device=values.device)[None, :, None]
    cols = torch.arange(w, device=values.device)[None, None, :]
    picks = []
    for _ in range(k):
        best = _lexicographic_best([F.avg_pool2d(t, (wh, ww), stride=1) for t in tiers])
        top, left = best // pooled_w, best % pooled_w
        picks.append(torch.stack([top, left], dim=-1))
        inside = ((rows >= top[:, None, None]) & (rows < top[:, None, None] + wh)
                  & (cols >= left[:, None, None]) & (cols < left[:, None, None] + ww))
        keep = (~inside)[:, None].to(values.dtype)
        tiers = [t * keep for t in tiers]
    return torch.stack(picks, dim=1)


def _lexicographic_best(pooled: list[torch.Tensor]) -> torch.Tensor:
    """Per image, the flat index of the best window of the first map in ``pooled``
    (each (N, 1, h', w')) whose largest window mean is positive; the last map decides
    where none is."""
    import torch

    n = pooled[0].shape[0]
    best = pooled[-1].reshape(n, -1).argmax(dim=1)
    for level in reversed(pooled[:-1]):
        flat = level.reshape(n, -1)
        best = torch.where(flat.amax(dim=1) > 0, flat.argmax(dim=1), best)
    return best


def cells_to_pixels(
    cells: torch.Tensor, grid_size: tuple[int, int], input_size: tuple[int, int]
) -> torch.Tensor:
    """Upper-left grid cells (…, 2) → upper-left input pixels (…, 2), int64.

    ``round(cell / h · H)`` per axis in float64 with halves to even, as the official
    code computes it; exactly ``cell · 64`` at 2944×1920 → 46×30.
    """
    import torch

    grid = torch.tensor([float(v) for v in grid_size], dtype=torch.float64, device=cells.device)
    size = torch.tensor([float(v) for v in input_size], dtype=torch.float64, device=cells.device)
    return torch.round(cells.double() / grid * size).long()


def crop_patches(
    images: torch.Tensor, corners: torch.Tensor, crop_shape: tuple[int, int]
) -> torch.Tensor:
    """Cut (N, K) patches of ``crop_shape`` px from (N, H, W) images at upper-left
    ``corners`` (N, K, 2) in input pixels; returns (N, K, rows, cols).

    The official border rule: the part of the window inside the image is written into
    the **bottom-right** of the patch and the rest is filled with the image's minimum;
    so a patch reaching past the bottom (right) edge has its fill at the top (left).
    """
    import torch

    n, height, width = images.shape
    ch, cw = crop_shape
    device = images.device

    def axis(start: torch.Tensor, size: int, extent: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = start.clamp(0, extent)
        stop = (start + size).clamp(0, extent)
        origin = size - (stop - first)  # patch index where the image content begins
        offsets = torch.arange(size, device=device)
        source = first[..., None] + offsets - origin[..., None]
        return source.clamp(0, extent - 1), offsets >= origin[..., None]

    src_r, ok_r = axis(corners[..., 0], ch, height)
    src_c, ok_c = axis(corners[..., 1], cw, width)
    batch = torch.arange(n, device=device)[:, None, None, None]
    patches = images[batch, src_r[..., :, None], src_c[..., None, :]]
    fill = images.reshape(n, -1).amin(dim=1)[:, None, None, None]
    valid = ok_r[..., :, None] & ok_c[..., None, :]
    return torch.where(valid, patches, fill.to(patches.dtype))
