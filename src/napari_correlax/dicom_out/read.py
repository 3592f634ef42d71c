"""Reading back the DICOM objects :mod:`napari_correlax.dicom_out` writes (no napari here).

:func:`object_kind` tells a Parametric Map or an SR from other DICOM files by its SOP
class; :func:`read_parametric_map` gives a map's real-world values on the source image's
pixel grid (NaN where the file holds its padding value) and :func:`read_verdict_points`
the points of a verdict SR, in original image pixels (pixel-centre convention, as the
rest of the project), with the pixel spacing its image library records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorrelaxError
from .parametric import split_title
from .report import SCHEME

__all__ = [
    "PARAMETRIC_MAP",
    "SR_CLASSES",
    "MapFile",
    "ReportedPoint",
    "object_kind",
    "read_parametric_map",
    "read_verdict_points",
]

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
#: Basic, Enhanced and Comprehensive SR.
SR_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
              "1.2.840.10008.5.1.4.1.1.88.33")

_IMAGING_MEASUREMENTS, _GROUP = "126010", "125007"
_TRACKING, _FINDING, _METHOD, _REGION = "112039", "121071", "370129005", "111030"
_H_SPACING, _V_SPACING = "111026", "111066"


@dataclass
class MapFile:
    """A Parametric Map read back: ``values`` H×W float32 (real-world values, NaN outside
    the analysed area), its ``kind`` and ``label`` (None for label-free kinds), the
    ``spacing_mm`` (row, col) or None and the SOP Instance UID of its ``source`` image."""

    values: np.ndarray
    kind: str
    label: str | None
    spacing_mm: tuple[float, float] | None
    source: str | None


@dataclass
class ReportedPoint:
    """One measurement group of a verdict SR: a finding label judged on a map kind (or a
    marked false positive), the reader's verdict, the automatic verdicts by rule, the
    point ``(row, col)`` in original image pixels and the map's value there."""

    label: str
    kind: str
    reader: str
    row: float
    col: float
    value: float = float("nan")
    automatic: dict[str, str] = field(default_factory=dict)

    @property
    def is_mark(self) -> bool:
        """True for a false positive the reader marked."""
        return self.reader == "false positive"


def object_kind(path: str | os.PathLike[str]) -> str | None:
    """``"parametric map"``, ``"sr"`` or None (not DICOM, or another SOP class); never raises."""
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        uid = str(ds.get("SOPClassUID", ""))
    except Exception:
        return None
    if uid == PARAMETRIC_MAP:
        return "parametric map"
    return "sr" if uid in SR_CLASSES else None


def _code(item: Any, name: str) -> str:
    seq = item.get(name)
    return str(seq[0].CodeValue) if seq else ""


def _meaning(item: Any, name: str) -> str:
    seq = item.get(name)
    return str(seq[0].CodeMeaning) if seq else ""


def read_parametric_map(path: str | os.PathLike[str]) -> MapFile:
    """The single-frame Parametric Map at ``path`` (module docstring)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        stored = np.asarray(ds.pixel_array, dtype=np.float64)
        shared = ds.SharedFunctionalGroupsSequence[0]
        frame = ds.PerFrameFunctionalGroupsSequence[0] if "PerFrameFunctionalGroupsSequence" in ds \
            else shared
        mapping = (frame.get("RealWorldValueMappingSequence")
                   or shared.RealWorldValueMappingSequence)[0]
    except Exception as exc:
        raise CorrelaxError(f"not a readable Parametric Map ({type(exc).__name__}: {exc})",
                            path) from None
    if stored.ndim != 2:
        raise CorrelaxError("only single-frame Parametric Maps are read", path)
    values = stored * float(mapping.RealWorldValueSlope) + float(mapping.RealWorldValueIntercept)
    padding = ds.get("FloatPixelPaddingValue")
    if padding is not None:
        limit = float(ds.get("FloatPixelPaddingRangeLimit", padding))
        lo, hi = sorted((float(padding), limit))
        values[(stored >= lo) & (stored <= hi)] = np.nan
    measures = shared.get("PixelMeasuresSequence")
    spacing = None
    if measures and "PixelSpacing" in measures[0]:
        spacing = (float(measures[0].PixelSpacing[0]), float(measures[0].PixelSpacing[1]))
    label, kind = split_title(str(ds.get("ContentDescription", "") or Path(path).stem))
    sources = ds.get("ReferencedSeriesSequence")
    source = None
    if sources and sources[0].get("ReferencedInstanceSequence"):
        source = str(sources[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)
    return MapFile(values.astype(np.float32), kind, label, spacing, source)


def _group_point(group: Any) -> ReportedPoint | None:
    fields: dict[str, Any] = {"label": "", "kind": "", "reader": "", "automatic": {}}
    point = None
    for item in group.get("ContentSequence", []):
        name = _code(item, "ConceptNameCodeSequence")
        scheme = item.ConceptNameCodeSequence[0].CodingSchemeDesignator \
            if item.get("ConceptNameCodeSequence") else ""
        if name == _FINDING:
            fields["label"] = _meaning(item, "ConceptCodeSequence")
        elif name == _METHOD:
            fields["kind"] = _meaning(item, "ConceptCodeSequence")
        elif scheme == SCHEME and name == "READER":
            fields["reader"] = _meaning(item, "ConceptCodeSequence")
            if fields["reader"] == "not judged":
                fields["reader"] = ""
        elif scheme == SCHEME and item.ValueType == "CODE":
            rule = _meaning(item, "ConceptNameCodeSequence").partition("(")[2].rstrip(")")
            fields["automatic"][rule] = _meaning(item, "ConceptCodeSequence")
        elif scheme == SCHEME and item.ValueType == "NUM":
            fields["value"] = float(item.MeasuredValueSequence[0].NumericValue)
        elif name == _REGION and item.ValueType == "SCOORD":
            x, y = (float(v) for v in item.GraphicData[:2])
            point = (y - 0.5, x - 0.5)
    if point is None:
        return None
    return ReportedPoint(row=point[0], col=point[1], **fields)


def read_verdict_points(path: str | os.PathLike[str]
                        ) -> tuple[list[ReportedPoint], tuple[float, float] | None]:
    """The measurement groups with a point of the verdict SR at ``path`` and the
    ``(row, col)`` pixel spacing in mm its image library gives (None if it gives none)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        root = list(ds.ContentSequence)
    except Exception as exc:
        raise CorrelaxError(f"not a readable SR ({type(exc).__name__}: {exc})", path) from None
    points, spacing = [], {}
    stack = root
    while stack:
        item = stack.pop(0)
        name = _code(item, "ConceptNameCodeSequence")
        if name in (_H_SPACING, _V_SPACING) and item.get("MeasuredValueSequence"):
            spacing[name] = float(item.MeasuredValueSequence[0].NumericValue)
        if name == _GROUP:
            point = _group_point(item)
            if point is not None:
                points.append(point)
            continue
        stack.extend(item.get("ContentSequence", []))
    pixel = (spacing[_V_SPACING], spacing[_H_SPACING]) if len(spacing) == 2 else None
    return points, pixel
