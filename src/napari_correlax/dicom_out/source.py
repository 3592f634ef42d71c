"""The source image of DICOM objects: its header, checked for what derived objects need.

A Parametric Map or an SR made from a result refers to the image the result was computed
on: they share its patient, study, Frame of Reference and pixel grid, and name its SOP
instance. Only a DICOM file carries those, so a PNG, TIFF or PGM source is refused with
one line that says what is missing.

Choices, for projection images (mammograms have no patient coordinates), because the
Parametric Map IOD requires a Frame of Reference and a plane position and orientation:

* A source without a Frame of Reference UID (optional in the mammography IODs) gets one
  derived from its SOP Instance UID, the same for every object made from that image.
* :func:`with_plane_geometry` gives the maps the plane of the source's pixel grid: the
  top-left pixel at the frame's origin (0, 0, 0), the row and column directions from
  Patient Orientation (``A``/``P``, ``R``/``L``, ``H``/``F`` as unit vectors of the
  patient axes, a pair such as ``FR`` as their normalised sum; rows along +x and columns
  along +y when it is absent or its two directions are not perpendicular) and the pixel
  spacing. Only the pixel grid, the same as the source's, carries meaning.

The source file itself is never changed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CorrelaxError
from ..io.image import has_dicom_preamble

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["REQUIRED", "image_spacing", "plane_orientation", "read_source",
           "with_plane_geometry"]

#: Attributes a source image must have for objects to refer to it.
REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
            "Rows", "Columns")

_WHAT_DERIVED_NEEDS = ("patient, study, Frame of Reference and SOP instance to refer to; "
                       "give the DICOM file the result was computed on")
_MAGICS = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
           (b"P5", "PGM"), (b"P2", "PGM"), (b"\xff\xd8\xff", "JPEG"))


def read_source(path: str | os.PathLike[str]) -> Dataset:
    """The header of the DICOM image at ``path`` (pixel data not read).

    Raises CorrelaxError naming the file when it is missing, is not DICOM (a PNG, TIFF or
    PGM: the message says which and what a DICOM source would give), lacks one of
    :data:`REQUIRED`, or is not a 2-D single-frame image.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise CorrelaxError("source image not found", path)
    if not has_dicom_preamble(path):
        head = path.read_bytes()[:8]
        kind = next((name for magic, name in _MAGICS if head.startswith(magic)), None)
        if kind is not None:
            raise CorrelaxError(f"a {kind} image is not DICOM: it has no {_WHAT_DERIVED_NEEDS}",
                                path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise CorrelaxError(f"not a DICOM file ({type(exc).__name__}): it has no "
                            f"{_WHAT_DERIVED_NEEDS}", path) from None
    missing = [name for name in REQUIRED if name not in ds]
    if missing:
        raise CorrelaxError(f"DICOM source lacks {', '.join(missing)}", path)
    if int(ds.get("NumberOfFrames", 1) or 1) != 1 or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise CorrelaxError("DICOM source is not a single-frame grey image", path)
    if "FrameOfReferenceUID" not in ds:
        from pydicom.uid import generate_uid

        ds.FrameOfReferenceUID = generate_uid(
            prefix="2.25.", entropy_srcs=["frame", str(ds.SOPInstanceUID)])
        ds.PositionReferenceIndicator = ""
    return ds


#: Patient Orientation letters as unit vectors of the patient axes (LPS: +x left,
#: +y posterior, +z head).
_DIRECTIONS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0),
               "H": (0, 0, 1), "F": (0, 0, -1)}


def _direction(letters: str) -> np.ndarray | None:
    vectors = [_DIRECTIONS.get(ch) for ch in letters.upper()]
    if not vectors or any(v is None for v in vectors):
        return None
    total = np.sum(np.asarray(vectors, dtype=float), axis=0)
    norm = float(np.linalg.norm(total))
    return total / norm if norm > 0 else None


def plane_orientation(ds: Dataset) -> list[float]:
    """Image Orientation (row direction, then column direction) from Patient Orientation
    (module docstring); ``[1, 0, 0, 0, 1, 0]`` when it says nothing usable."""
    values = [str(v) for v in (ds.get("PatientOrientation") or [])]
    if len(values) == 2:
        row, col = _direction(values[0]), _direction(values[1])
        if row is not None and col is not None and abs(float(row @ col)) < 1e-6:
            return [float(v) for v in (*row, *col)]
    return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def with_plane_geometry(ds: Dataset) -> Dataset:
    """A copy of ``ds`` with Image Position/Orientation (Patient) and Pixel Spacing for
    objects that need a plane (module docstring); ``ds`` is unchanged. A source that has
    a plane already is returned as a plain copy."""
    import copy

    out = copy.deepcopy(ds)
    if "ImagePositionPatient" in out and "ImageOrientationPatient" in out:
        return out
    out.ImagePositionPatient = [0.0, 0.0, 0.0]
    out.ImageOrientationPatient = plane_orientation(ds)
    spacing = image_spacing(ds) or (1.0, 1.0)
    out.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    if "SliceThickness" not in out:
        out.SliceThickness = None
    return out


def image_spacing(ds: Dataset) -> tuple[float, float] | None:
    """``(row, col)`` pixel spacing in mm: PixelSpacing, else ImagerPixelSpacing, else None."""
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(name)
        if value is not None and len(value) == 2:
            return float(value[0]), float(value[1])
    return None
