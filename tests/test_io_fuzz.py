"""Fuzzing the image reader (docs/method.md §1): bad files give CorrelaxError, nothing else.

200 damaged or random files are generated with a seeded generator. Each must
either read to a valid Mammogram (2-D, float32, finite, in [0, 1]) or raise
CorrelaxError whose message names the file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from napari_correlax._napari._reader import napari_get_reader
from napari_correlax.errors import CorrelaxError
from napari_correlax.io import read_mammogram

N_FILES = 200
SUFFIXES = (".dcm", ".dicom", ".png", ".tif", ".tiff", ".pgm", "")


def _dicom_bytes(tmp: Path, rng: np.random.Generator, syntax, photometric: str) -> bytes:
    raw = rng.integers(0, 4096, size=(64, 64), dtype=np.uint16)
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.ImageLaterality = "L"
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = raw.tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    path = tmp / "template.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _raster_bytes(rng: np.random.Generator, ext: str) -> bytes:
    dtype = np.uint16 if rng.random() < 0.5 else np.uint8
    img = rng.integers(0, np.iinfo(dtype).max, size=(40, 30), dtype=dtype)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def _tiff_bytes(tmp: Path, rng: np.random.Generator) -> bytes:
    path = tmp / "template.tif"
    tifffile.imwrite(path, rng.integers(0, 65535, size=(40, 30), dtype=np.uint16))
    return path.read_bytes()


def _flip(data: bytes, rng: np.random.Generator, n: int, limit: int | None = None) -> bytes:
    out = bytearray(data)
    top = min(len(out), limit or len(out))
    for i in rng.integers(0, top, size=n):
        out[i] = int(rng.integers(0, 256))
    return bytes(out)


def _cases(tmp: Path, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """(file name, content) pairs: N_FILES damaged or random files."""
    templates = {
        "dicom": [
            _dicom_bytes(tmp, rng, ExplicitVRLittleEndian, "MONOCHROME2"),
            _dicom_bytes(tmp, rng, ExplicitVRLittleEndian, "MONOCHROME1"),
            _dicom_bytes(tmp, rng, RLELossless, "MONOCHROME2"),
            _dicom_bytes(tmp, rng, JPEG2000Lossless, "MONOCHROME1"),
            _dicom_bytes(tmp, rng, JPEGLSLossless, "MONOCHROME2"),
        ],
        "png": [_raster_bytes(rng, ".png")],
        "pgm": [_raster_bytes(rng, ".pgm")],
        "tif": [_tiff_bytes(tmp, rng), _raster_bytes(rng, ".tif")],
    }
    suffix_of = {"dicom": ".dcm", "png": ".png", "pgm": ".pgm", "tif": ".tif"}
    kinds = (
        "truncated",
        "flipped_header",
        "flipped_anywhere",
        "empty",
        "text",
        "random",
        "dicm_garbage",
        "magic_garbage",
    )
    cases = []
    for i in range(N_FILES):
        kind = kinds[i % len(kinds)]
        fmt = list(templates)[int(rng.integers(len(templates)))]
        pool = templates[fmt]
        template = pool[int(rng.integers(len(pool)))]
        suffix = suffix_of[fmt]
        if kind == "truncated":
            content = template[: int(rng.integers(1, len(template)))]
        elif kind == "flipped_header":
            content = _flip(template, rng, int(rng.integers(1, 12)), limit=400)
        elif kind == "flipped_anywhere":
            content = _flip(template, rng, int(rng.integers(1, 40)))
        elif kind == "empty":
            content, suffix = b"", SUFFIXES[i % len(SUFFIXES)]
        elif kind == "text":
            words = rng.choice(["mass", "BI-RADS", "1.2.840", "\n", "P5", "DICM", "é"], size=80)
            content = " ".join(words).encode()
            suffix = SUFFIXES[int(rng.integers(len(SUFFIXES)))]
        elif kind == "random":
            content = rng.bytes(int(rng.integers(1, 5000)))
            suffix = SUFFIXES[int(rng.integers(len(SUFFIXES)))]
        elif kind == "dicm_garbage":
            content = rng.bytes(128) + b"DICM" + rng.bytes(int(rng.integers(0, 3000)))
            suffix = SUFFIXES[int(rng.integers(len(SUFFIXES)))]
        else:
            magic = [b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"P5\n", b"P2\n64 64\n255\n"]
            content = magic[i % len(magic)] + rng.bytes(int(rng.integers(0, 3000)))
            suffix = SUFFIXES[int(rng.integers(len(SUFFIXES)))]
        cases.append((f"{i:03d}_{kind}{suffix}", content))
    return cases


def test_damaged_files_raise_only_correlax_error(tmp_path):
    rng = np.random.default_rng(20250101)
    template_dir = tmp_path / "templates"
    template_dir.mkdir()
    cases = _cases(template_dir, rng)
    assert len(cases) == N_FILES
    outcomes = {"read": 0, "rejected": 0}
    for name, content in cases:
        path = tmp_path / name
        path.write_bytes(content)
        try:
            m = read_mammogram(path)
        except CorrelaxError as exc:
            assert str(path) in str(exc), name
            outcomes["rejected"] += 1
            continue
        except Exception as exc:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{name}: {type(exc).__name__} escaped: {exc}")
        px = m.pixels
        assert px.ndim == 2 and px.dtype == np.float32 and px.size > 0, name
        assert np.isfinite(px).all() and px.min() >= 0.0 and px.max() <= 1.0, name
        limits = m.meta["contrast_limits"]
        assert limits is None or 0.0 <= limits[0] < limits[1] <= 1.0, name
        outcomes["read"] += 1
    # both branches are exercised: damaged files that still decode, and rejections
    assert outcomes["read"] > 5 and outcomes["rejected"] > 100, outcomes


def test_napari_get_reader_never_raises_on_damaged_files(tmp_path):
    rng = np.random.default_rng(7)
    for i in range(40):
        path = tmp_path / f"{i}{SUFFIXES[i % len(SUFFIXES)]}"
        path.write_bytes(rng.bytes(int(rng.integers(0, 400))))
        reader = napari_get_reader(str(path))
        if reader is None:
            continue
        try:
            reader(str(path))
        except CorrelaxError as exc:
            assert str(path) in str(exc)
    assert pydicom  # pydicom is what the DICOM cases exercise
