"""napari layers of the DICOM objects the plugin writes (:mod:`napari_correlax.dicom_out`).

The reader (:mod:`._reader`) hands a DICOM file here first: a Parametric Map becomes an
image layer on its source image's pixel grid (the same ``scale`` in mm that the
mammogram's layer gets, no translate), coloured as the map kind is everywhere in the
plugin; a verdict SR becomes a Points layer, one point per finding label and judged map
kind at the map's maximum, plus the reader's marked false positives (cross symbols),
with label, kind and verdicts in its ``features``. Any other DICOM file returns None and
is read as a mammogram.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]

#: Point size in original image pixels.
POINT_SIZE_PX = 24.0


def derived_layers(path: str | os.PathLike[str]) -> list[LayerData] | None:
    """Layers of a Parametric Map or verdict SR at ``path``; None for any other file."""
    from napari_correlax.dicom_out.read import object_kind

    kind = object_kind(path)
    if kind == "parametric map":
        return [parametric_map_layer(path)]
    if kind == "sr":
        return [verdict_points_layer(path)]
    return None


def parametric_map_layer(path: str | os.PathLike[str]) -> LayerData:
    """Image layer of a Parametric Map (module docstring); NaN outside the analysed area."""
    from napari_correlax.dicom_out.read import read_parametric_map

    from ._layers import display_for, layer_name

    pm = read_parametric_map(path)
    kwargs = {
        "name": layer_name(Path(path).stem, pm.kind, pm.label),
        "scale": pm.spacing_mm or (1.0, 1.0),
        "blending": "translucent",
        "metadata": {"dicom_object": "parametric map", "kind": pm.kind, "label": pm.label,
                     "source_sop_instance_uid": pm.source, "path": os.fspath(path)},
        **display_for(pm.kind, pm.values),
    }
    return (pm.values, kwargs, "image")


def verdict_points_layer(path: str | os.PathLike[str]) -> LayerData:
    """Points layer of a verdict SR (module docstring), in mm when the SR gives the
    pixel spacing, otherwise in image pixels."""
    from napari_correlax.dicom_out.read import read_verdict_points

    from ._layers import label_colour

    points, spacing = read_verdict_points(path)
    sy, sx = spacing or (1.0, 1.0)
    data = np.array([[p.row, p.col] for p in points], dtype=float).reshape(-1, 2)
    features = {
        "label": [p.label for p in points],
        "kind": [p.kind for p in points],
        "reader": [p.reader or "not judged" for p in points],
        "automatic": ["; ".join(f"{rule}: {v}" for rule, v in p.automatic.items())
                      for p in points],
        "value": [p.value for p in points],
    }
    kwargs = {
        "name": f"verdicts · {Path(path).stem}",
        "scale": (sy, sx),
        "size": POINT_SIZE_PX,
        "symbol": ["cross" if p.is_mark else "disc" for p in points] or "disc",
        "face_color": [label_colour(p.label) for p in points] or "white",
        "features": features,
        "metadata": {"dicom_object": "sr", "path": os.fspath(path)},
    }
    return (data, kwargs, "points")
