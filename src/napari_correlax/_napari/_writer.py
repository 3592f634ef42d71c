"""napari writer contribution: save map layers as ``.npz`` or ``.tif`` (docs/method.md §12).

``napari.yaml`` points at :func:`write_maps` for image layers. Each layer becomes a
:class:`~napari_correlax.export.MapArray` (its data, ``scale`` and ``translate`` in world
units — mm when the image has a pixel spacing — and its CorRELAX metadata plus display
settings), written by :func:`~napari_correlax.export.write_maps_npz` (all layers in one
file) or :func:`~napari_correlax.export.write_maps_tiff` (one TIFF per layer). The
analysis dock's "Open…" reads both back as the same layers without recomputing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorrelaxError
from ..export import MapArray, write_maps_npz, write_maps_tiff
from ._layer_data import LayerData


def layer_to_map(data: Any, meta: dict[str, Any]) -> MapArray:
    """A :class:`MapArray` from one image layer's data and its napari attributes."""
    arr = np.asarray(data)
    name = str(meta.get("name", "map"))
    if arr.ndim != 2:
        raise CorrelaxError(f"layer {name!r} is not a 2-D map (shape {arr.shape})")
    attrs = dict((meta.get("metadata") or {}).get("correlax") or {})
    display: dict[str, Any] = {}
    if meta.get("contrast_limits") is not None:
        display["contrast_limits"] = [float(v) for v in meta["contrast_limits"]]
    if meta.get("opacity") is not None:
        display["opacity"] = float(meta["opacity"])
    if meta.get("visible") is not None:
        display["visible"] = bool(meta["visible"])
    colormap = meta.get("colormap")
    colormap_name = (
        colormap.get("name") if isinstance(colormap, dict) else getattr(colormap, "name", colormap)
    )
    if isinstance(colormap_name, str):
        display["colormap"] = colormap_name
    attrs["display"] = display
    scale = tuple(float(v) for v in (meta.get("scale") or (1.0, 1.0))[-2:])
    translate = tuple(float(v) for v in (meta.get("translate") or (0.0, 0.0))[-2:])
    return MapArray(name, arr, scale, translate, attrs)  # type: ignore[arg-type]


def write_maps(path: str, layer_data: list[LayerData]) -> list[str]:
    """Write image layers to ``path`` (``.npz``: one file; ``.tif``/``.tiff``: one per layer).

    Returns the paths written. Non-image or non-2-D layers raise
    :class:`~napari_correlax.errors.CorrelaxError`; files are written atomically.
    """
    maps = []
    for data, meta, layer_type in layer_data:
        if layer_type != "image":
            raise CorrelaxError(f"only image layers can be saved as maps, not {layer_type}", path)
        maps.append(layer_to_map(data, meta))
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return [str(write_maps_npz(path, maps))]
    if suffix in (".tif", ".tiff"):
        return [str(p) for p in write_maps_tiff(path, maps)]
    raise CorrelaxError("maps are saved as .npz, .tif or .tiff", path)
