"""Maps of a result as DICOM Parametric Maps on the source image's pixel grid.

One Parametric Map per map kind and label (:func:`parametric_map`): float32 pixels
holding the map's values (:mod:`napari_correlax.maps.kinds`), with an identity
real-world value mapping (slope 1, intercept 0) whose unit is "no units" for
probabilities, correlations and similarities, a count for ``masks_used`` and an
arbitrary unit for CAM saliency; the mapped range is the kind's display range widened to
the values present.

Pixel grid: the source image's rows and columns, its pixel spacing and its Frame of
Reference; the map is resampled by :func:`map_on_image`. The display window (VOI LUT
function LINEAR_EXACT) spans the kind's fixed range (probabilities 0–1, correlations
−1–1) or, for kinds without one, the values present. A grid map (one value per
window, docs/method.md §6) is drawn as napari draws it: cell ``(i, j)`` fills the
``stride × stride`` square centred on window ``(i, j)``'s centre, nearest neighbour, no
smoothing. Pixel maps (saliency, relevance) are already on the image grid.

Outside the analysed area (pixels no cell covers, cells with no evaluated window, the
NaN pixels of a CAM map) the file holds :data:`OUTSIDE`, named in the Float Pixel
Padding Value attribute (0028,0122) and left out of the real-world value mapping's
range, so viewers leave those pixels blank;
:func:`napari_correlax.dicom_out.read.read_parametric_map` gives them back as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CorrelaxError
from ..maps.kinds import kind as map_kind
from .source import with_plane_geometry

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..maps.result import MapResult

__all__ = ["OUTSIDE", "MapImage", "map_images", "map_on_image", "parametric_map", "split_title"]

#: Value written where a map has no value (module docstring): below every map kind's range.
OUTSIDE = -1000.0

#: Between label and kind in a map's DICOM Content Description.
TITLE_SEPARATOR = " - "

#: UCUM units of the real-world values, by map kind name or scale (default: no units).
_UNITS = {
    "count": ("{masks}", "masks"),
    "saliency": ("[arb'U]", "arbitrary unit"),
}
_NO_UNITS = ("1", "no units")


@dataclass
class MapImage:
    """One map on the source image's pixel grid: ``values`` (H×W float32, NaN outside
    the analysed area) of ``kind`` for ``label`` (None for label-free kinds)."""

    kind: str
    label: str | None
    values: np.ndarray

    @property
    def title(self) -> str:
        """``"Mass - prediction"`` (label and kind name), or the kind name alone: plain
        ASCII, as DICOM's default character repertoire wants; :func:`split_title` parses it."""
        return f"{self.label}{TITLE_SEPARATOR}{self.kind}" if self.label else self.kind


def split_title(title: str) -> tuple[str | None, str]:
    """``(label, kind)`` of a :attr:`MapImage.title` (label None for label-free kinds)."""
    label, sep, name = title.rpartition(TITLE_SEPARATOR)
    return (label if sep else None), name


def map_on_image(result: MapResult, name: str, label: str | None = None) -> np.ndarray:
    """Map ``name`` (of ``label``) resampled to the original image's pixels, H×W float32.

    Grid maps: pixel ``(r, c)`` takes the value of cell
    ``(floor((r − t_r)/s + ½), floor((c − t_c)/s + ½))``, with ``s`` the stride and
    ``t = origin + (window − 1)/2`` the centre of window (0, 0) (original image pixels,
    pixel-centre convention); pixels whose cell lies outside the grid are NaN. Pixel
    maps are returned as they are. NaN values stay NaN.
    """
    values = np.asarray(result.values_of(name, label), dtype=np.float32)
    height, width = result.image_shape
    on_pixels = map_kind(name).resolution == "pixel" or (
        values.shape == (height, width) and values.shape != result.grid.shape)
    if on_pixels:
        if values.shape != (height, width):
            raise CorrelaxError(f"map {name!r} is {values.shape}, not the image's {height}×{width}")
        return values.copy()
    (s_r, s_c), (t_r, t_c) = result.grid.layer_transform(None)
    rows = np.floor((np.arange(height) - t_r) / s_r + 0.5).astype(np.int64)
    cols = np.floor((np.arange(width) - t_c) / s_c + 0.5).astype(np.int64)
    gy, gx = values.shape
    row_ok = (rows >= 0) & (rows < gy)
    col_ok = (cols >= 0) & (cols < gx)
    out = np.full((height, width), np.nan, dtype=np.float32)
    block = values[np.clip(rows, 0, gy - 1)][:, np.clip(cols, 0, gx - 1)]
    inside = row_ok[:, None] & col_ok[None, :]
    out[inside] = block[inside]
    return out


def map_images(result: MapResult, kinds: Sequence[str] | None = None,
               labels: Sequence[str] | None = None) -> list[MapImage]:
    """Every map of ``result`` (or of ``kinds``), per label (or ``labels``), on the image.

    Raises CorrelaxError for a kind the result lacks or an unknown label.
    """
    present = result.maps()
    names = list(present) if kinds is None else list(kinds)
    for name in names:
        if name not in present:
            raise CorrelaxError(f"this result has no {name!r} map (it has {', '.join(present)})")
    chosen = list(result.labels) if labels is None else list(labels)
    for label in chosen:
        result.label_index(label)
    out = []
    for name in names:
        if present[name].ndim == 3:
            out += [MapImage(name, label, map_on_image(result, name, label)) for label in chosen]
        else:
            out.append(MapImage(name, None, map_on_image(result, name)))
    return out


def _value_range(image: MapImage) -> tuple[float, float]:
    finite = image.values[np.isfinite(image.values)]
    limits = map_kind(image.kind).limits
    lo, hi = limits if limits is not None else (math.inf, -math.inf)
    if finite.size:
        lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if not math.isfinite(lo):
        lo, hi = 0.0, 1.0
    if lo <= OUTSIDE:
        raise CorrelaxError(f"{image.title}: values down to {lo:g} reach the padding value "
                            f"{OUTSIDE:g}")
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _unit(name: str):
    from highdicom.sr import CodedConcept

    scale = map_kind(name).scale
    value, meaning = _UNITS.get(name, _UNITS.get(scale, _NO_UNITS))
    return CodedConcept(value=value, scheme_designator="UCUM", meaning=meaning)


def parametric_map(source: Dataset, image: MapImage, *, series_uid: str, number: int,
                   software: str) -> Dataset:
    """A highdicom ``ParametricMap`` of one :class:`MapImage` over ``source`` (module
    docstring): instance ``number`` of series ``series_uid``. ``image`` must be on the
    source's pixel grid (ValueError otherwise)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    if image.values.shape != (int(source.Rows), int(source.Columns)):
        raise ValueError("the map is not on the source image's pixel grid")
    lo, hi = _value_range(image)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=image.kind.upper()[:16],
        lut_explanation=f"napari-correlax {image.title}"[:64],
        unit=_unit(image.kind), value_range=(lo, hi), slope=1.0, intercept=0.0)
    limits = map_kind(image.kind).limits or (lo, hi)
    # LINEAR_EXACT: the window maps exactly [lo, hi] to the display range, and may be
    # narrower than 1 (real-world values such as correlation half-widths are).
    window = hd.VOILUTTransformation(window_center=(limits[0] + limits[1]) / 2,
                                     window_width=max(limits[1] - limits[0], 1e-6),
                                     window_explanation=map_kind(image.kind).name,
                                     voi_lut_function="LINEAR_EXACT")
    pixels = np.where(np.isfinite(image.values), image.values, OUTSIDE).astype(np.float32)
    pm = hd.pm.ParametricMap(
        source_images=[with_plane_geometry(source)], pixel_array=pixels,
        series_instance_uid=series_uid,
        series_number=900, sop_instance_uid=generate_uid(), instance_number=number,
        manufacturer="napari-correlax", manufacturer_model_name="napari-correlax",
        software_versions=software, device_serial_number="none",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[window],
        content_label=image.kind.upper().replace("_", "")[:16],
        content_description=image.title[:64], series_description="napari-correlax maps",
    )
    pm.FloatPixelPaddingValue = pm.FloatPixelPaddingRangeLimit = OUTSIDE
    laterality = str(source.get("ImageLaterality", source.get("Laterality", "")) or "")
    if laterality in ("L", "R"):
        pm.Laterality = laterality
    return pm

