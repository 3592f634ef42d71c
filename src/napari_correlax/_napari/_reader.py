"""napari reader contribution for mammograms (docs/method.md §1).

``napari.yaml`` points at :func:`napari_get_reader`. It only decides, quickly
and without ever raising, whether the path(s) look like something
:func:`~napari_correlax.io.read_mammogram` reads; the returned reader does the
work and raises :class:`~napari_correlax.errors.CorrelaxError` (shown by
napari as an error notification) for a file that turns out unreadable. All
files are read before any layer data is returned, so a bad file in a list
never leaves half of the layers behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_correlax.io.image import (
    SUPPORTED_SUFFIXES,
    Mammogram,
    has_dicom_preamble,
    read_mammogram,
)

from ._layer_data import LayerData

PathOrPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def napari_get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """The reader for ``path`` (one file or a list), or None; never raises.

    Saved maps (a result or map-layer ``.npz`` of the plugin, or a map ``.tif`` the
    plugin wrote) get :func:`read_map_layers`; other files qualify for
    :func:`read_layers` by their suffix (:data:`~napari_correlax.io.SUPPORTED_SUFFIXES`,
    any case) or, whatever their name, by a DICOM ``DICM`` preamble. Folders never
    qualify.
    """
    try:
        paths = _as_list(path)
        if paths and all(_is_map_file(p) for p in paths):
            return read_map_layers
        if paths and all(_looks_supported(p) for p in paths):
            return read_layers
    except Exception:
        return None
    return None


def read_map_layers(path: PathOrPaths) -> list[LayerData]:
    """Saved maps back as layers, placed as over the image they were computed on.

    A result ``.npz`` (:meth:`~napari_correlax.maps.MapResult.save`) gives every map of
    every label, in millimetres when the result knows the pixel spacing, as the image
    opened by :func:`read_layers` is, with the outline of the analysed area; a saved
    map-layer file (``.npz`` or ``.tif``) gives
    its layers with their saved scale, translate and display.
    """
    from napari_correlax.errors import CorrelaxError
    from napari_correlax.export import read_maps
    from napari_correlax.maps import load_result

    from . import _layers

    out: list[LayerData] = []
    for p in _as_list(path):
        try:
            result = load_result(p)
        except CorrelaxError:
            out += _layers.layers_from_maps(read_maps(p))
            continue
        out += _layers.result_layers(result, result_image_name(result, p), outline=True)
    return out


def read_layers(path: PathOrPaths) -> list[LayerData]:
    """Read one file or a list of files into napari image layer data.

    Each layer is ``(pixels, kwargs, "image")`` with pixels float32 H×W in
    [0, 1], ``scale`` the (row, col) pixel spacing in mm (``(1, 1)`` when
    unknown, i.e. pixel units), ``contrast_limits`` from the DICOM window
    (``(0, 1)`` when absent) and the :class:`~napari_correlax.io.Mammogram`
    metadata under ``metadata["mammogram"]``.

    A Parametric Map or SR the plugin wrote (by SOP class) gives its own layers instead,
    over the image it was made from (:mod:`._dicom_objects`).

    Raises
    ------
    CorrelaxError
        If any file cannot be read; then no layer is returned.
    """
    from ._dicom_objects import derived_layers

    groups = [derived_layers(p) or [layer_data(read_mammogram(p))] for p in _as_list(path)]
    return [layer for group in groups for layer in group]


#: Added to the layer name of a DICOM that gives no pixel spacing.
PIXEL_UNITS = " (pixel units)"


def layer_name(mammogram: Mammogram) -> str:
    """The image layer's name: :attr:`~napari_correlax.io.Mammogram.display_name` (the
    DICOM's case and view), with :data:`PIXEL_UNITS` for a DICOM without pixel spacing."""
    name = mammogram.display_name or "mammogram"
    if mammogram.spacing_mm is None and mammogram.meta.get("format") == "dicom":
        name += PIXEL_UNITS
    return name


def result_image_name(result: Any, path: str) -> str:
    """The name :func:`read_layers` gives the image a saved result was computed on (from
    the image metadata and source file the result keeps), else ``path``'s stem."""
    source = result.meta.get("source")
    image = Mammogram(np.zeros((0, 0), np.float32), result.spacing_mm, dict(result.meta),
                      source or path)
    return layer_name(image)


def layer_data(mammogram: Mammogram) -> LayerData:
    """napari ``LayerData`` tuple for one :class:`~napari_correlax.io.Mammogram`."""
    spacing = mammogram.spacing_mm
    limits = mammogram.meta.get("contrast_limits")
    kwargs = {
        "name": layer_name(mammogram),
        "scale": tuple(spacing) if spacing is not None else (1.0, 1.0),
        "contrast_limits": tuple(limits) if limits is not None else (0.0, 1.0),
        "colormap": "gray",
        "metadata": {
            "mammogram": mammogram.meta,
            "path": mammogram.path,
            "spacing_mm": spacing,
        },
    }
    return (mammogram.pixels, kwargs, "image")


def _as_list(path: Any) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    if isinstance(path, (list, tuple)):
        return [os.fspath(p) for p in path]
    raise TypeError(f"not a path or list of paths: {type(path).__name__}")


def _is_map_file(path: str) -> bool:
    """A map file of the plugin: a result or map-layer ``.npz`` (by its members), or a
    ``.tif`` whose description says so; other ``.npz`` files are left to other readers."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        import numpy as np

        from napari_correlax.export import MAPS_INDEX_KEY

        try:
            with np.load(path, allow_pickle=False) as z:  # reads the member list only
                names = set(z.files)
        except Exception:
            return False
        return MAPS_INDEX_KEY in names or {"prediction", "window", "stride"} <= names
    if suffix not in (".tif", ".tiff"):
        return False
    from napari_correlax.export import MAPS_FORMAT

    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return MAPS_FORMAT in (tif.pages[0].description or "")
    except Exception:
        return False


def _looks_supported(path: str) -> bool:
    if not isinstance(path, str) or not path:
        return False
    candidate = Path(path)
    if candidate.is_dir():
        return False
    if candidate.suffix.lower() in SUPPORTED_SUFFIXES:
        return True
    return has_dicom_preamble(candidate)
