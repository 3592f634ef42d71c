"""A phantom as an uncompressed DICOM mammogram: :func:`write_dicom` (docs/method.md §1, §11)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from .phantom import Phantom

__all__ = ["write_dicom"]

_MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image
#: SNOMED CT codes of the anatomy and the views (DICOM CID 4031, CID 4014).
_BREAST = ("76752008", "SCT", "Breast")
_VIEW_CODES = {"CC": ("399162004", "SCT", "cranio-caudal"),
               "MLO": ("399368009", "SCT", "medio-lateral oblique")}
#: A fixed study date and time: the phantoms are reproducible byte for byte.
_STUDY_DATE, _STUDY_TIME = "20240101", "120000"


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix="2.25.", entropy_srcs=[str(p) for p in parts]))


def write_dicom(path: str | PathLike[str], phantom: Phantom, *,
                photometric: str = "MONOCHROME2", bits_stored: int = 16,
                study_id: str = "study", series_id: str = "series",
                image_id: str = "image") -> Path:
    """Write ``phantom`` as an uncompressed DICOM mammogram (explicit VR little endian).

    Stored values are ``round(pixels · (2**bits_stored − 1))``; for MONOCHROME1 they are
    ``(2**bits_stored − 1) − that``, so a reader that inverts MONOCHROME1 gets the
    phantom back within one quantisation step. The file carries a DICM preamble,
    ImagerPixelSpacing (mm, row then column), ImageLaterality, ViewPosition and its code,
    PatientOrientation, a window covering the full range, rescale 1/0, UIDs derived from
    the ids (the Frame of Reference too: one per image, as a projection image has no
    patient coordinates to share) and the other attributes the Digital Mammography X-Ray
    Image IOD requires (``dciodvfy`` reports no error), so objects derived from it
    (Parametric Maps, SR) are complete. Written atomically (docs/method.md §1, §11).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from ..files import atomic_write

    photometric = photometric.upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, not {photometric!r}")
    if not 8 < bits_stored <= 16:
        raise ValueError(f"bits_stored must be 9..16, not {bits_stored}")
    top = (1 << bits_stored) - 1
    stored = np.rint(np.clip(phantom.pixels, 0.0, 1.0) * top).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)

    sop_uid = _uid("sop", study_id, series_id, image_id)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid("study", study_id)
    ds.SeriesInstanceUID = _uid("series", study_id, series_id)
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "napari-correlax synthetic phantom"
    ds.PatientID = study_id[:64]
    ds.PatientName = "Phantom^Synthetic"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.StudyID = study_id[:16]
    ds.StudyDate = ds.ContentDate = _STUDY_DATE
    ds.StudyTime = ds.ContentTime = _STUDY_TIME
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = _uid("frame", study_id, series_id, image_id)
    ds.PositionReferenceIndicator = ""
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = phantom.laterality
    ds.ViewPosition = phantom.view
    ds.AnatomicRegionSequence = [_code(*_BREAST)]
    view = _code(*_VIEW_CODES.get(phantom.view, _VIEW_CODES["CC"]))
    view.ViewModifierCodeSequence = []
    ds.ViewCodeSequence = [view]
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.PixelIntensityRelationship = "LIN"
    # -1: higher stored values stand for less X-ray intensity (denser tissue).
    ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME2" else 1
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "DIRECT"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.AcquisitionContextSequence = []
    # Rows run nipple-ward for L (anterior) and chest-ward for R (posterior); columns run
    # from the lateral side towards the other breast, and feet-ward in MLO.
    medial = "R" if phantom.laterality == "L" else "L"
    ds.PatientOrientation = ["A" if phantom.laterality == "L" else "P",
                             "F" + medial if phantom.view == "MLO" else medial]
    ds.ImagerPixelSpacing = [f"{phantom.spacing_mm[0]:g}", f"{phantom.spacing_mm[1]:g}"]
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = f"{(top + 1) / 2:g}"
    ds.WindowWidth = f"{top + 1:g}"
    ds.PixelData = stored.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"

    def write(fh) -> None:
        pydicom.dcmwrite(fh, ds, enforce_file_format=True)

    return atomic_write(path, write)


def _code(value: str, scheme: str, meaning: str):
    """A code sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item
