"""Static figures (PNG) of maps over the mammogram, for the CLI and exports.

Matplotlib with the Agg backend; no GUI. Grid maps are drawn with an ``extent`` that
puts cell ``(i, j)`` on its window centre, exactly as the napari layers do.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .boxes import as_boxes
from .files import atomic_write_bytes
from .maps.kinds import kind as map_kind

if TYPE_CHECKING:
    from .maps.result import MapResult

__all__ = ["BOX_COLOUR", "PHANTOM_WARNING", "grid_extent", "save_overlay"]

#: Under the title of a figure made with a model trained on synthetic phantoms only.
PHANTOM_WARNING = ("Model trained on synthetic phantoms only (such as the demo model): "
                   "these maps say nothing about real mammograms.")

#: Edge colour of ground-truth boxes in figures.
BOX_COLOUR = "#00ff00"


def grid_extent(result: MapResult) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` of a grid map in image pixels (matplotlib ``extent``)."""
    (sy, sx), (ty, tx) = result.grid.layer_transform(None)
    gy, gx = result.grid.shape
    return (tx - sx / 2, tx + sx * (gx - 0.5), ty + sy * (gy - 0.5), ty - sy / 2)


def save_overlay(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    result: MapResult,
    *,
    maps: Sequence[str] = ("prediction",),
    labels: Sequence[str] | None = None,
    boxes: Sequence[Any] = (),
    alpha: float = 0.45,
    panel_inches: float = 3.0,
    title: str = "",
    warning: str = "",
) -> Path:
    """One panel per (map, label) of ``result`` over ``pixels`` (H×W, [0, 1]); PNG, atomic.

    ``boxes`` (:class:`~napari_correlax.boxes.Box`, or ``(label, xmin, ymin, xmax, ymax)``
    in image pixels) are drawn in :data:`BOX_COLOUR` on the panels of their label.
    Label-free maps (``distance``) get one panel. ``title`` (the image and the model) heads
    the figure; ``warning`` (a demo model's) is written in red under it.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = list(labels) if labels is not None else list(result.labels)
    panels: list[tuple[str, str | None]] = []
    for name in maps:
        values = result.get(name)
        if values is None:
            continue
        if values.ndim == 3:
            panels += [(name, lab) for lab in labels]
        else:
            panels.append((name, None))
    n = max(len(panels), 1)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    h, w = pixels.shape
    aspect = h / max(w, 1)
    head = 0.3 * (bool(title) + bool(warning))
    fig, axes = plt.subplots(
        rows, cols, figsize=(panel_inches * cols, panel_inches * aspect * rows + 0.4 + head),
        squeeze=False,
    )
    extent = grid_extent(result)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, lab) in zip(axes.ravel(), panels):
        values = result.get(name)
        data = values[result.label_index(lab)] if lab is not None else values
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=1, interpolation="antialiased")
        spec = map_kind(name)
        # the kind's fixed range when it has one (as in the viewer), else the map's own
        if spec.limits is not None:
            vmin, vmax = spec.limits
        elif spec.scale == "diverging":
            vmax = float(np.nanmax(np.abs(data))) or 1.0
            vmin = -vmax
        else:
            vmin, vmax = float(np.nanmin(data)), float(np.nanmax(data))
            vmax = vmax if vmax > vmin else vmin + 1.0
        place = {"extent": extent} if spec.resolution == "grid" else {}
        im = ax.imshow(data, cmap=spec.colormap, vmin=vmin, vmax=vmax, alpha=alpha, **place)
        for b in as_boxes(boxes):
            if lab is None or b.label == lab:
                ax.add_patch(plt.Rectangle((b.xmin, b.ymin), b.xmax - b.xmin, b.ymax - b.ymin,
                                           fill=False, ec=BOX_COLOUR, lw=1.5))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(f"{lab} · {spec.title}" if lab else spec.title, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if title or warning:
        text = title + ("\n" if title and warning else "")
        fig.suptitle(text, fontsize=9)
        if warning:
            fig.text(0.5, 1.0 - 0.3 / fig.get_figheight() * (1 + bool(title)), warning,
                     ha="center", va="top", color="#d00000", fontsize=8)
        fig.tight_layout(rect=(0, 0, 1, 1 - head / fig.get_figheight()))
    else:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
