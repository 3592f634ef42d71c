"""The reader's verdicts of one image as a DICOM Comprehensive SR (TID 1500 Measurement Report).

Input: the rows of a verdict CSV (:mod:`napari_correlax.evaluate.verdicts`) of one image.
Output: one TID 1410 *Planar ROI Measurements and Qualitative Evaluations* group per
finding label and judged map kind, and one per false positive the reader marked, each
with

- Finding (121071, DCM): the label, coded in the private scheme :data:`SCHEME`;
- Measurement Method (370129005, SCT): the map kind judged (``prediction``,
  ``correlation``, …);
- the region: the map's maximum (a mark: the marked point) as an SCOORD ``POINT`` on the
  source image, in DICOM image coordinates ``(column + 0.5, row + 0.5)``: DICOM puts
  (0, 0) at the top-left corner of the first pixel, the project at its centre;
- qualitative evaluations (private codes): *Reader verdict* (hit, miss, unsure, not
  judged, false positive) and, for a finding, one *Automatic verdict (rule)* per
  pointing-game rule of that kind (hit or miss; docs/method.md §10);
- a measurement *Map maximum*: the map's value there (no units).

Which kinds: for each label, every kind the reader judged; a label the reader has not
judged yet gets one group for its first kind in reading order (reader verdict *not
judged*). The reader's free-text comments are not carried (TID 1410 has no place for
them). The report is marked complete when every finding row has a reader verdict.

The image library (TID 1600) describes the source image, pixel spacing included, so a
reader of the SR can place the points in millimetres.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import CorrelaxError
from ..maps.kinds import kind as map_kind

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..evaluate.verdicts import VerdictRow

__all__ = ["SCHEME", "VERDICT_CODES", "code_value", "image_rows", "verdict_report"]

#: Private coding scheme of the project's concepts (labels, kinds, verdicts).
SCHEME = "99CORRELAX"
#: Reader and automatic verdicts as ``(code value, meaning)``.
VERDICT_CODES = {
    "hit": ("HIT", "hit"),
    "miss": ("MISS", "miss"),
    "unsure": ("UNSURE", "unsure"),
    "": ("NOTJUDGED", "not judged"),
    "false positive": ("FALSEPOS", "false positive"),
}
_READER = ("READER", "Reader verdict")
_MAXIMUM = ("MAPMAX", "Map maximum")
_AUTO_PREFIX = "Automatic verdict"


def code_value(text: str) -> str:
    """A Code Value (at most 16 characters) for a label, kind or rule: the text in upper
    case without spaces, or, when longer, its first 11 characters and a 4-digit hash."""
    compact = "".join(ch for ch in text.upper() if ch.isalnum() or ch in "<>=.+-_")
    if len(compact) <= 16:
        return compact
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:4].upper()
    return f"{compact[:11]}_{digest}"


def _concept(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning[:64])


def image_rows(rows: Sequence[VerdictRow], image_id: str,
               settings: str | None = None) -> list[VerdictRow]:
    """The rows of ``image_id`` (of one ``settings`` key).

    Raises CorrelaxError when the image has no rows, or rows of several settings keys and
    ``settings`` is None (the message lists them).
    """
    mine = [r for r in rows if r.image_id == image_id]
    if settings is not None:
        mine = [r for r in mine if r.settings == settings]
    if not mine:
        raise CorrelaxError(f"no verdicts for image {image_id!r}"
                            + (f" with settings {settings!r}" if settings else ""))
    keys = sorted({r.settings for r in mine})
    if len(keys) > 1:
        raise CorrelaxError(f"image {image_id!r} has verdicts of several map settings "
                            f"({', '.join(keys)}): choose one")
    return mine


def _groups(rows: Sequence[VerdictRow]) -> list[list[VerdictRow]]:
    """Finding groups (module docstring), then one group per mark, in row order."""
    by_label: dict[str, dict[str, list[VerdictRow]]] = {}
    for row in rows:
        if not row.is_mark:
            by_label.setdefault(row.label, {}).setdefault(row.kind, []).append(row)
    out = []
    for kinds in by_label.values():
        judged = [group for group in kinds.values() if any(r.reader_verdict for r in group)]
        if not judged:
            first = min(kinds, key=lambda k: map_kind(k).read_order)
            judged = [kinds[first]]
        out += judged
    return out + [[row] for row in rows if row.is_mark]


def _group_content(source: Dataset, group: Sequence[VerdictRow]):
    import highdicom as hd
    import numpy as np
    from pydicom.uid import generate_uid

    first = group[0]
    kind = first.kind
    reader = next((r.reader_verdict for r in group if r.reader_verdict), "")
    evaluations = [hd.sr.QualitativeEvaluation(_concept(*_READER),
                                               _concept(*VERDICT_CODES[reader]))]
    if not first.is_mark:
        for row in group:
            if row.auto_verdict in ("hit", "miss"):
                evaluations.append(hd.sr.QualitativeEvaluation(
                    _concept(code_value(row.map), f"{_AUTO_PREFIX} ({row.map})"),
                    _concept(*VERDICT_CODES[row.auto_verdict])))
    measurements = []
    if math.isfinite(first.max_value):
        measurements.append(hd.sr.Measurement(
            name=_concept(*_MAXIMUM), value=float(first.max_value),
            unit=hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")))
    what = "false positive" if first.is_mark else kind
    tracking = hd.sr.TrackingIdentifier(uid=generate_uid(),
                                        identifier=f"{first.label} - {what}")
    common = {
        "tracking_identifier": tracking,
        "finding_type": _concept(code_value(first.label), first.label),
        "method": _concept(code_value(kind), kind),
        "qualitative_evaluations": evaluations,
        "measurements": measurements or None,
    }
    if not (math.isfinite(first.max_row) and math.isfinite(first.max_col)):
        return hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    point = np.array([[first.max_col + 0.5, first.max_row + 0.5]], dtype=float)
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POINT, graphic_data=point,
                               source_image=hd.sr.SourceImageForRegion.from_source_image(source))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region,
                                                                 **common)


def verdict_report(source: Dataset, rows: Sequence[VerdictRow], *, series_uid: str,
                   software: str, reader: str = "Reader^") -> Dataset:
    """A Comprehensive SR of ``rows`` (the verdicts of the image ``source``; module
    docstring), observed by the person ``reader`` (a DICOM person name,
    ``Family^Given``) with napari-correlax ``software``."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    if not rows:
        raise CorrelaxError("no verdicts to report")
    groups = [_group_content(source, group) for group in _groups(rows)]
    device_uid = generate_uid(prefix="2.25.", entropy_srcs=["napari-correlax", software])
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept(value="121006", scheme_designator="DCM",
                                             meaning="Person"),
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=reader)),
        observer_device_context=hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept(value="121007", scheme_designator="DCM",
                                             meaning="Device"),
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device_uid, name="napari-correlax", manufacturer_name="napari-correlax",
                model_name=(rows[0].model or "napari-correlax")[:64])),
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=hd.sr.CodedConcept(value="71651007", scheme_designator="SCT",
                                              meaning="Mammography"),
        imaging_measurements=groups, referenced_images=[source])
    complete = all(r.reader_verdict for r in rows if not r.is_mark)
    return hd.sr.ComprehensiveSR(
        evidence=[source], content=report, series_instance_uid=series_uid, series_number=901,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="napari-correlax",
        is_complete=complete, series_description="napari-correlax verdicts",
        software_versions=software, coding_schemes=[coding_scheme()])


def coding_scheme():
    """The Coding Scheme Identification item that names :data:`SCHEME`."""
    import highdicom as hd

    return hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=SCHEME, name="napari-correlax concepts",
        responsible_organization="napari-correlax developers")
