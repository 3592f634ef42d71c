"""Reading one mammogram from disk (docs/method.md §1).

:func:`read_mammogram` turns a DICOM, PNG, TIFF or PGM file into a
:class:`Mammogram`: a float32 H×W array in [0, 1] (min–max over the image),
tissue bright on a dark background, in the pixel grid *as stored in the file*
(no flips or rotations, so boxes given in stored pixel coordinates, such as
VinDr-Mammo's, stay valid), plus the pixel spacing in mm and a metadata dict.

The format is decided by the file's first bytes, not its name: a DICOM file is
recognised by the ``DICM`` marker at byte 128 whatever its name; a file named
``*.dcm``/``*.dicom`` without the marker is tried as a preamble-less DICOM
data set. Everything that goes wrong with a user's file (missing, not an
image, truncated, an undecodable transfer syntax, 3-D or colour, empty) raises
:class:`~napari_correlax.errors.CorrelaxError` naming the file and the reason;
no other exception type leaves :func:`read_mammogram`.

Choices the method reference (docs/method.md) leaves open, written down here:

* DICOM window centre/width (first value if several) become
  ``meta["contrast_limits"]`` as the interval ``centre ± width / 2`` of
  modality-LUT values, mapped through the same min–max scaling (and inversion
  for MONOCHROME1) as the pixels and clipped to [0, 1]; ``None`` when the
  window is absent, non-positive, or lies wholly outside the image's values.
* ``voi_lut=True`` applies the DICOM VOI LUT (the first *VOI LUT Sequence* item,
  else the first window, with its *VOI LUT Function*) as pydicom's
  ``apply_voi_lut`` does, before inversion and min–max scaling: how the paper
  authors' code reads DICOM files. It is applied to the modality-LUT output, as
  the DICOM standard orders the two; for files with rescale slope 1 and
  intercept 0 (VinDr-Mammo) those are the stored values the authors' code uses.
  A VOI LUT or window pydicom rejects (a width below 1, say) is not applied.
  The window is then part of the pixels, so ``contrast_limits`` is ``None``.
* (2050,0020) *Presentation LUT Shape* is ignored: in the mammography IODs
  ``INVERSE`` only accompanies MONOCHROME1, which is already inverted.
* A colour file is accepted only when its colour channels are identical
  (a grey image saved as RGB); an alpha channel is ignored.
* Images with non-finite values (float TIFF/DICOM with NaN or infinity) and
  images above :data:`MAX_PIXELS` pixels are rejected.
* TIFF resolution tags (inch or centimetre units) give ``spacing_mm``; PNG and
  PGM have no spacing (``None``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorrelaxError

SUPPORTED_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".png", ".tif", ".tiff", ".pgm")
"""File name endings the reader claims (lower case; matching ignores case)."""

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")

MAX_PIXELS = 2**28
"""Largest image accepted (268 M pixels, 1 GiB as float32); larger is rejected."""

META_KEYS: tuple[str, ...] = (
    "laterality",
    "view_position",
    "patient_id",
    "study_description",
    "series_description",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "photometric",
    "bits_stored",
    "transfer_syntax",
    "source_range",
    "contrast_limits",
    "format",
    "voi_lut_applied",
)
"""Keys of :attr:`Mammogram.meta`; each is present, with ``None`` when unknown."""

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OTHER_MAGICS = (
    (b"\xff\xd8\xff", "a JPEG file"),
    (b"GIF8", "a GIF file"),
    (b"BM", "a BMP file"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
)

# Transfer syntaxes pydicom 3.0 cannot decode at all, with a readable name.
_UNDECODABLE_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}

_CONVERT_ADVICE = (
    "convert the file to an uncompressed or JPEG 2000 transfer syntax first "
    "(for example with `gdcmconv --raw` or dcmtk's dcmdjpeg)"
)

# The pip packages that give pydicom a decoder, by transfer syntax family.
_PLUGIN_HINTS = (
    ("1.2.840.10008.1.2.4.9", "pylibjpeg and pylibjpeg-openjpeg"),  # JPEG 2000
    ("1.2.840.10008.1.2.4.20", "pylibjpeg and pylibjpeg-openjpeg"),  # HTJ2K
    ("1.2.840.10008.1.2.4.8", "pyjpegls (or pylibjpeg and pylibjpeg-libjpeg)"),  # JPEG-LS
    ("1.2.840.10008.1.2.4.", "pylibjpeg and pylibjpeg-libjpeg"),  # JPEG 1992
    ("1.2.840.10008.1.2.5", "pylibjpeg and pylibjpeg-rle"),  # RLE
)


@dataclass
class Mammogram:
    """One grey-scale mammogram as the rest of the plugin uses it (docs/method.md §1, §12).

    Attributes
    ----------
    pixels
        float32 array of shape (H, W), values in [0, 1] by min–max scaling over
        the image (a constant image is all zeros), tissue bright. Row/column
        order is the file's stored order.
    spacing_mm
        (row, col) millimetres per pixel, or ``None`` when the file does not say.
    meta
        Dict with the keys in :data:`META_KEYS` (``None`` where unknown):
        ``laterality`` ("L"/"R"), ``view_position`` ("CC", "MLO", ...), the DICOM
        ``patient_id``, ``study_description`` and ``series_description``, the SOP,
        study and series instance UIDs, ``photometric`` (DICOM photometric
        interpretation), ``bits_stored``, ``transfer_syntax`` (UID string),
        ``source_range`` ((min, max) of the values before scaling: modality-LUT
        output for DICOM, raw sample values otherwise), ``contrast_limits``
        ((lo, hi) in the [0, 1] pixel scale, from the DICOM window),
        ``format`` ("dicom", "png", "tiff" or "pgm") and ``voi_lut_applied``
        (True when the DICOM VOI LUT or window was applied to the pixels).
    path
        The file it came from, if any.
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    meta: dict
    path: str | None = None

    @property
    def name(self) -> str:
        """File name without its extension ("" when there is no path)."""
        return Path(self.path).stem if self.path else ""

    @property
    def display_name(self) -> str:
        """A name a reader recognises: the DICOM's case (``PatientID``, else
        ``StudyDescription``, else ``SeriesDescription``) and view, ``"P_00001 · L CC"``;
        the file name (:attr:`name`) when the file has no case description."""
        case = next((self.meta.get(k) for k in ("patient_id", "study_description",
                                                  "series_description") if self.meta.get(k)),
                    None)
        if not case:
            return self.name
        view = " ".join(str(self.meta[k]) for k in ("laterality", "view_position")
                        if self.meta.get(k))
        return " · ".join(p for p in (str(case), view) if p)


def has_dicom_preamble(path: str | os.PathLike[str]) -> bool:
    """True if the file holds ``DICM`` at byte offset 128 (a DICOM Part 10 file).

    Never raises: unreadable or missing files give False.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except (OSError, ValueError, TypeError):
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_mammogram(path: str | os.PathLike[str], *, voi_lut: bool = False) -> Mammogram:
    """Read a DICOM, PNG, TIFF or PGM mammogram (docs/method.md §1).

    Parameters
    ----------
    path
        File to read. The format comes from the file's content (see the module
        docstring); the name only matters for preamble-less DICOM.
    voi_lut
        Apply a DICOM file's VOI LUT or window before inversion and min–max
        scaling (see the module docstring); ``meta["voi_lut_applied"]`` says
        whether it was. No effect on other formats or on a DICOM file without
        a VOI LUT or window.

    Returns
    -------
    Mammogram
        Pixels float32 H×W in [0, 1] in stored orientation, tissue bright;
        spacing in mm per pixel (row, col) or ``None``; metadata.

    Raises
    ------
    CorrelaxError
        For any file that cannot be read as one 2-D grey image; the message is
        ``"<path>: <reason>"``. No other exception type is raised.
    """
    label = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    try:
        fs_path = Path(path)
    except TypeError as exc:
        raise CorrelaxError(f"not a file path ({type(path).__name__})", label) from exc
    try:
        if not fs_path.exists():
            raise CorrelaxError("file not found", label)
        if fs_path.is_dir():
            raise CorrelaxError("is a folder, not an image file", label)
        with open(fs_path, "rb") as fh:
            head = fh.read(132)
        if not head:
            raise CorrelaxError("file is empty (0 bytes)", label)
        kind = _sniff(head, fs_path.suffix.lower(), label)
        with warnings.catch_warnings():
            # Library warnings about harmless oddities would otherwise reach the
            # user (or, under warnings-as-errors, abort a readable file).
            warnings.simplefilter("ignore")
            window = None
            applied = False
            if kind == "dicom":
                raw, spacing, meta, window, applied = _read_dicom(fs_path, label, voi_lut)
            elif kind == "tiff":
                raw, spacing, meta = _read_tiff(fs_path, label)
            else:
                raw, spacing, meta = _read_with_opencv(fs_path, label, kind)
            pixels, limits = _scale(raw, meta, window, label)
    except CorrelaxError:
        raise
    except MemoryError as exc:
        raise CorrelaxError("not enough memory to read the image", label) from exc
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        # BaseException: decoders written in Rust (pylibjpeg-rle) report corrupt
        # input as pyo3 PanicException, which is not an Exception subclass.
        raise CorrelaxError(f"could not read the image ({_describe(exc)})", label) from exc
    meta["contrast_limits"] = limits
    meta["voi_lut_applied"] = applied
    return Mammogram(pixels=pixels, spacing_mm=spacing, meta=meta, path=label)


def _sniff(head: bytes, suffix: str, label: str) -> str:
    """Name the format from the first bytes (and the suffix for raw DICOM)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if len(head) >= 3 and head[0:1] == b"P" and head[1] in b"123456" and head[2:3].isspace():
        return "pgm"
    if suffix in DICOM_SUFFIXES:
        # A DICOM data set without the Part 10 preamble starts with a tag of group 0002
        # (file meta) or 0008 (identification), little- or big-endian.
        if head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
            return "dicom"
        kind = "a text file" if _looks_like_text(head) else "its first bytes are no DICOM tag"
        raise CorrelaxError(
            f"not a DICOM file: no DICM marker at byte 128 and no DICOM header ({kind})", label)
    what = next((name for magic, name in _OTHER_MAGICS if head.startswith(magic)), None)
    if what is None:
        what = "its content matches none of them"
    raise CorrelaxError(f"not a supported image (DICOM, PNG, TIFF or PGM): {what}", label)


def _looks_like_text(head: bytes) -> bool:
    """True when the bytes decode as printable UTF-8 text (with line breaks and tabs)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _describe(exc: BaseException) -> str:
    """One-line description of a library exception."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _empty_meta(fmt: str) -> dict[str, Any]:
    meta: dict[str, Any] = dict.fromkeys(META_KEYS)
    meta["format"] = fmt
    return meta


def _check_size(shape: tuple[int, ...], label: str) -> None:
    n = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if n == 0:
        raise CorrelaxError(f"image is empty (shape {tuple(shape)}, 0 pixels)", label)
    if n > MAX_PIXELS:
        raise CorrelaxError(
            f"image too large ({'×'.join(map(str, shape))} = {n} values; "
            f"at most {MAX_PIXELS} are read)",
            label,
        )


def _as_grey(arr: np.ndarray, label: str) -> np.ndarray:
    """Return the 2-D grey image in ``arr`` or raise for 3-D / colour data.

    ``arr`` is (H, W) or (H, W, C) with C in 2..4 (grey+alpha, RGB/BGR, RGBA/BGRA):
    colour channels must be identical; the alpha channel is ignored.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] in (2, 3, 4):
        if arr.shape[2] == 2:
            return arr[:, :, 0]
        colour = arr[:, :, :3]
        if np.array_equal(colour[:, :, 0], colour[:, :, 1]) and np.array_equal(
            colour[:, :, 0], colour[:, :, 2]
        ):
            return colour[:, :, 0]
        raise CorrelaxError(
            f"colour image ({arr.shape[2]} channels that differ); a grey-scale image is needed",
            label,
        )
    raise CorrelaxError(
        f"{arr.ndim}-D image of shape {tuple(arr.shape)}; a single 2-D grey-scale image is needed",
        label,
    )


def _scale(
    raw: np.ndarray,
    meta: dict[str, Any],
    window: tuple[float, float] | None,
    label: str,
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Min–max scale ``raw`` to float32 [0, 1], inverting MONOCHROME1 (docs/method.md §1).

    Sets ``meta["source_range"]``; returns the pixels and the DICOM ``window``
    ((centre, width) in the units of ``raw``) mapped into the [0, 1] pixel scale.
    """
    raw = np.asarray(raw)
    if raw.dtype == np.bool_:
        raw = raw.astype(np.uint8)
    if raw.dtype.kind not in "uif":
        raise CorrelaxError(f"unsupported sample type {raw.dtype}", label)
    if raw.ndim != 2:
        raw = _as_grey(raw, label)
    _check_size(raw.shape, label)
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise CorrelaxError("image contains non-finite values (NaN or infinity)", label)
    lo, hi = float(raw.min()), float(raw.max())
    meta["source_range"] = (lo, hi)
    invert = meta.get("photometric") == "MONOCHROME1"
    if hi <= lo:
        return np.zeros(raw.shape, dtype=np.float32), None
    if raw.dtype.kind == "f":
        # In float64, halved first so that hi - lo cannot overflow for extreme
        # data (unless halving underflows a subnormal range to zero).
        work = raw.astype(np.float64)
        half_range = hi * 0.5 - lo * 0.5
        if half_range > 0:
            work *= 0.5
            work -= lo * 0.5
            work /= half_range
        else:
            work -= lo
            work /= hi - lo
        pixels = work.astype(np.float32)
    else:
        pixels = raw.astype(np.float32)
        pixels -= np.float32(lo)
        pixels *= np.float32(1.0 / (hi - lo))
    np.clip(pixels, 0.0, 1.0, out=pixels)
    if invert:
        np.subtract(np.float32(1.0), pixels, out=pixels)
    return pixels, _window_limits(window, lo, hi, invert)


def _window_limits(
    window: tuple[float, float] | None, lo: float, hi: float, invert: bool
) -> tuple[float, float] | None:
    """Map a window (centre, width) in source units into the [0, 1] pixel scale."""
    if window is None:
        return None
    centre, width = window
    if not (np.isfinite(centre) and np.isfinite(width)) or width <= 0:
        return None
    a = (centre - width / 2.0 - lo) / (hi - lo)
    b = (centre + width / 2.0 - lo) / (hi - lo)
    if invert:
        a, b = 1.0 - b, 1.0 - a
    a, b = min(max(a, 0.0), 1.0), min(max(b, 0.0), 1.0)
    if b <= a:
        return None
    return (float(a), float(b))


# --------------------------------------------------------------------------- DICOM


def _read_dicom(
    path: Path, label: str, voi_lut: bool = False
) -> tuple[
    np.ndarray, tuple[float, float] | None, dict[str, Any], tuple[float, float] | None, bool
]:
    """Decoded modality-LUT values (then VOI LUT values with ``voi_lut``), spacing,
    metadata, the window left for display (None once a VOI LUT is applied) and whether
    a VOI LUT was applied."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, force=not has_dicom_preamble(path))
    except InvalidDicomError as exc:
        raise CorrelaxError(f"not a valid DICOM file ({_describe(exc)})", label) from exc
    except Exception as exc:
        raise CorrelaxError(
            f"could not parse the DICOM header; the file may be truncated or corrupt "
            f"({_describe(exc)})",
            label,
        ) from exc

    keyword = next(
        (k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds), None
    )
    if keyword is None:
        sop = _text(ds, "SOPClassUID")
        what = f" (SOP class {pydicom.uid.UID(sop).name})" if sop else ""
        raise CorrelaxError(
            f"DICOM file has no pixel data{what}; it may be truncated or hold no image", label
        )

    meta = _dicom_meta(ds)
    frames = _int(ds, "NumberOfFrames") or 1
    if frames > 1:
        raise CorrelaxError(
            f"multi-frame DICOM ({frames} frames, e.g. tomosynthesis); "
            "a single 2-D image is needed",
            label,
        )
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or cols is None:
        raise CorrelaxError("DICOM file lacks Rows/Columns", label)
    _check_size((rows, cols), label)
    samples = _int(ds, "SamplesPerPixel") or 1
    photometric = meta["photometric"]
    if photometric == "PALETTE COLOR":
        raise CorrelaxError(
            "palette-colour DICOM (PALETTE COLOR); a grey-scale image is needed", label
        )

    syntax = _transfer_syntax(ds)
    meta["transfer_syntax"] = str(syntax)
    if keyword == "PixelData":
        _check_decoder(syntax, label)
    try:
        arr = ds.pixel_array
    except MemoryError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # includes pyo3 PanicException from Rust decoders
        raise CorrelaxError(
            f"could not decode the pixel data ({_syntax_name(syntax)}; the file may be "
            f"truncated or corrupt): {_describe(exc)}",
            label,
        ) from exc

    if samples > 1 or arr.ndim != 2:
        arr = _as_grey(arr, label)
    elif photometric not in (None, "MONOCHROME1", "MONOCHROME2"):
        raise CorrelaxError(f"unsupported photometric interpretation {photometric!r}", label)

    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(arr, ds)
    if voi_lut:
        voi_values = _apply_voi_lut(values, ds)
        if voi_values is not None:
            return voi_values, _dicom_spacing(ds), meta, None, True
    return values, _dicom_spacing(ds), meta, _window(ds), False


def _apply_voi_lut(values: np.ndarray, ds: Any) -> np.ndarray | None:
    """pydicom's VOI LUT / windowing of modality-LUT ``values``; None when the data set
    has neither, or has one pydicom rejects (then the image is used without it)."""
    from pydicom.pixels import apply_voi_lut

    sequence = ds.get("VOILUTSequence")
    has_lut = bool(sequence) and all(
        sequence[0].get(k) is not None for k in ("LUTDescriptor", "LUTData")
    )
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if not (has_lut or has_window):
        return None
    try:
        out = apply_voi_lut(values, ds)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError,
            NotImplementedError):
        return None
    return None if out is values else np.asarray(out)


def _transfer_syntax(ds: Any) -> Any:
    """The data set's transfer syntax UID; for a preamble-less data set without a
    file meta group, the little-endian encoding pydicom detected while reading,
    which is also recorded in ``ds.file_meta`` so that pixel decoding can work."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid:
        return UID(str(uid))
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if little is False:
        syntax = UID("1.2.840.10008.1.2.2")  # Explicit VR Big Endian
    else:
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    return syntax


def _syntax_name(uid: Any) -> str:
    text = str(uid)
    name = _UNDECODABLE_SYNTAX_NAMES.get(text) or getattr(uid, "name", text)
    return f"transfer syntax {name} ({text})" if name != text else f"transfer syntax {text}"


def _check_decoder(syntax: Any, label: str) -> None:
    """Raise a clear CorrelaxError when no installed plugin decodes ``syntax``."""
    from pydicom.pixels import get_decoder

    if not syntax.is_transfer_syntax:
        raise CorrelaxError(
            f"cannot decode {_syntax_name(syntax)}: pydicom does not know this transfer "
            f"syntax and has no decoder for it; {_CONVERT_ADVICE}",
            label,
        )
    if not syntax.is_compressed:
        return
    hint = next((pkgs for prefix, pkgs in _PLUGIN_HINTS if str(syntax).startswith(prefix)), None)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise CorrelaxError(
            f"cannot decode {_syntax_name(syntax)}: pydicom has no decoder for it; "
            f"{_CONVERT_ADVICE}",
            label,
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        advice = f"install {hint}" if hint else "install a pydicom decoder plugin"
        raise CorrelaxError(
            f"cannot decode {_syntax_name(syntax)}: no decoder plugin is installed; "
            f"{advice} ({missing})",
            label,
        )


def _text(ds: Any, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None:
        return None
    if not isinstance(value, str) and hasattr(value, "__len__") and not hasattr(value, "strip"):
        value = value[0] if len(value) else None
        if value is None:
            return None
    text = str(value).strip()
    return text or None


def _int(ds: Any, keyword: str) -> int | None:
    text = _text(ds, keyword)
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def _floats(ds: Any, keyword: str) -> list[float] | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None or value == "":
        return None
    items = list(value) if hasattr(value, "__iter__") and not isinstance(value, str) else [value]
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return None


def _dicom_meta(ds: Any) -> dict[str, Any]:
    meta = _empty_meta("dicom")
    laterality = (_text(ds, "ImageLaterality") or _text(ds, "Laterality") or "").upper()
    meta["laterality"] = laterality if laterality in ("L", "R") else None
    view = _text(ds, "ViewPosition")
    meta["view_position"] = view.upper() if view else None
    meta["patient_id"] = _text(ds, "PatientID")
    meta["study_description"] = _text(ds, "StudyDescription")
    meta["series_description"] = _text(ds, "SeriesDescription")
    meta["sop_instance_uid"] = _text(ds, "SOPInstanceUID")
    meta["study_instance_uid"] = _text(ds, "StudyInstanceUID")
    meta["series_instance_uid"] = _text(ds, "SeriesInstanceUID")
    photometric = _text(ds, "PhotometricInterpretation")
    meta["photometric"] = photometric.upper() if photometric else None
    meta["bits_stored"] = _int(ds, "BitsStored")
    return meta


def _dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, col) mm per pixel from ImagerPixelSpacing, else PixelSpacing."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        values = _floats(ds, keyword)
        if not values:
            continue
        if len(values) == 1:
            values = values * 2
        row, col = values[0], values[1]
        if np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0:
            return (row, col)
    return None


def _window(ds: Any) -> tuple[float, float] | None:
    centres, widths = _floats(ds, "WindowCenter"), _floats(ds, "WindowWidth")
    if not centres or not widths:
        return None
    return (centres[0], widths[0])


# --------------------------------------------------------------------------- raster


def _read_tiff(
    path: Path, label: str
) -> tuple[np.ndarray, tuple[float, float] | None, dict[str, Any]]:
    """Samples (grey, or colour to be checked), spacing and metadata of a TIFF file.

    Only the first series is read; tifffile decodes it, or OpenCV when tifffile
    lacks the codec (LZW, JPEG... without imagecodecs).
    """
    import tifffile

    meta = _empty_meta("tiff")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape = tuple(int(n) for n in series.shape)
            kept = [(a, n) for a, n in zip(str(series.axes), shape) if n != 1]
            kept_axes = "".join(a for a, _ in kept)
            spacing = _tiff_spacing(tif.pages[0])
            colour = len(kept) == 3 and "S" in kept_axes and dict(kept)["S"] in (2, 3, 4)
            if len(kept) > 2 and not colour:
                pages = len(tif.pages)
                what = f"{pages} pages" if pages > 1 else f"axes {series.axes}"
                raise CorrelaxError(
                    f"3-D TIFF of shape {shape} ({what}); a single 2-D image is needed", label
                )
            _check_size(shape, label)
            try:
                arr = series.asarray().reshape([n for _, n in kept])
                if colour:
                    arr = np.moveaxis(arr, kept_axes.index("S"), -1)
            except Exception as exc:
                # tifffile needs imagecodecs for LZW and friends; OpenCV has them.
                arr = _decode_with_opencv(path)
                if arr is None:
                    raise CorrelaxError(
                        f"could not decode the TIFF data ({_describe(exc)})", label
                    ) from exc
    except CorrelaxError:
        raise
    except Exception as exc:
        arr = _decode_with_opencv(path)
        if arr is None:
            raise CorrelaxError(
                f"not a readable TIFF file; it may be truncated or corrupt ({_describe(exc)})",
                label,
            ) from exc
        spacing = None
    meta["bits_stored"] = 1 if arr.dtype == np.bool_ else int(arr.dtype.itemsize * 8)
    return _as_grey(arr, label), spacing, meta


def _tiff_spacing(page: Any) -> tuple[float, float] | None:
    """(row, col) mm per pixel from the TIFF resolution tags, or None."""
    try:
        tags = page.tags
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        mm_per_unit = {2: 25.4, 3: 10.0}.get(unit)
        if mm_per_unit is None or "XResolution" not in tags or "YResolution" not in tags:
            return None
        per_unit = []
        for key in ("YResolution", "XResolution"):
            value = tags[key].value
            num, den = value if isinstance(value, tuple) else (value, 1)
            per_unit.append(float(num) / float(den))
        row, col = (mm_per_unit / r for r in per_unit)
        if all(np.isfinite(v) and v > 0 for v in (row, col)):
            return (row, col)
    except Exception:
        return None
    return None


def _decode_with_opencv(path: Path) -> np.ndarray | None:
    """Decode with OpenCV, channels as stored (BGR order for colour); None on failure."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        return None
    # OpenCV prints decoder complaints straight to stderr; the caller reports
    # the failure itself, so silence them for this call.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    finally:
        cv2.utils.logging.setLogLevel(level)
    return None if arr is None or arr.size == 0 else arr


def _read_with_opencv(path: Path, label: str, fmt: str) -> tuple[np.ndarray, None, dict[str, Any]]:
    """Grey samples and metadata of a PNG or PGM/PNM file (no spacing)."""
    arr = _decode_with_opencv(path)
    if arr is None:
        raise CorrelaxError(
            f"could not decode the {fmt.upper()} data; the file may be truncated or corrupt",
            label,
        )
    meta = _empty_meta(fmt)
    meta["bits_stored"] = int(arr.dtype.itemsize * 8)
    return _as_grey(arr, label), None, meta
