"""Index of a data set in the VinDr-Mammo layout (docs/method.md §3, §11).

:func:`load_vindr` reads ``finding_annotations.csv`` (and, when present,
``breast-level_annotations.csv``) into a :class:`VinDrIndex`: one
:class:`ImageRecord` per image with its boxes, grouped into the docs/method.md §3 labels.
No pixels are read; image files are only checked for existence.

Choices the method reference (docs/method.md) leaves open, written down here:

* Box coordinates are kept as written in the CSV, in pixels of the image as stored
  (x = column, y = row). A row is one finding per label: its categories are grouped
  (docs/method.md §3), and each label they name gives one :class:`Box`, so a row naming
  Nipple Retraction and Skin Retraction is one Retractions box whose ``category`` lists
  both (``"Nipple Retraction; Skin Retraction"``), while a row naming Mass and
  Suspicious Calcification gives two boxes with the same coordinates.
* Categories outside :data:`~napari_correlax.labels.VINDR_GROUPS` (VinDr's "Other"
  findings) are ignored and counted in ``problems``. A category with empty
  coordinates gives no box (noted in ``problems`` unless it is "No Finding"), so an
  image whose only boxes were unusable reads as No Finding.
* ``split`` spellings ``training``/``train`` become ``"training"``, ``test`` stays,
  ``val``/``valid``/``validation`` become ``"validation"``; anything else is kept
  lower-cased and noted.
* The image file is ``images/<study_id>/<image_id>.dicom``; a converted copy with
  the suffix ``.dcm``, ``.png`` or no suffix is used when the ``.dicom`` is absent.
* ``breast-level_annotations.csv`` is optional: it fills ``breast_birads`` where the
  finding table has none; images listed only there are not indexed (noted), since
  every VinDr-Mammo image has at least one row in the finding table.
"""

from __future__ import annotations

import ast
import csv
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from ..boxes import Box
from ..errors import CorrelaxError
from ..labels import LABELS, NO_FINDING, group_category

__all__ = [
    "BREAST_CSV",
    "CATEGORY_SEPARATOR",
    "FINDINGS_CSV",
    "REQUIRED_COLUMNS",
    "Box",
    "ImageRecord",
    "VinDrIndex",
    "boxes_for_image",
    "check_readable",
    "find_annotations",
    "load_vindr",
]

FINDINGS_CSV = "finding_annotations.csv"
BREAST_CSV = "breast-level_annotations.csv"
REQUIRED_COLUMNS: tuple[str, ...] = (
    "study_id", "image_id", "laterality", "view_position", "height", "width",
    "finding_categories", "xmin", "ymin", "xmax", "ymax", "split",
)
"""Columns ``finding_annotations.csv`` must have; the others are optional."""

_SPLITS = {"training": "training", "train": "training", "test": "test",
           "val": "validation", "valid": "validation", "validation": "validation"}
_IMAGE_SUFFIXES = (".dicom", ".dcm", "", ".png")
#: Joins the categories of one row that group into one label (``Box.category``).
CATEGORY_SEPARATOR = "; "


@dataclass
class ImageRecord:
    """One image of the data set; ``path`` is where its file is (or should be)."""

    study_id: str
    image_id: str
    path: Path
    laterality: str
    view: str
    split: str
    height: int
    width: int
    breast_birads: str | None = None
    boxes: list[Box] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Grouped labels of the boxes, in docs/method.md §3 order; ``["No Finding"]`` if none."""
        present = {b.label for b in self.boxes}
        return [lab for lab in LABELS if lab in present] or [NO_FINDING]


@dataclass
class VinDrIndex:
    """All images of a VinDr-layout data set, in the order of the finding table.

    ``missing`` lists image files that do not exist; ``problems`` lists rows or values
    that were skipped or doubtful, one readable line each.
    """

    root: Path
    images: list[ImageRecord]
    missing: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _ids: dict[str, ImageRecord] = field(default_factory=dict, init=False, repr=False,
                                         compare=False)

    def split(self, name: str) -> list[ImageRecord]:
        """Images of one split (``"training"``/``"train"``, ``"test"``, ...)."""
        key = _SPLITS.get(name.strip().lower(), name.strip().lower())
        return [r for r in self.images if r.split == key]

    def by_id(self, image_id: str) -> ImageRecord:
        """The image with this ``image_id``; CorrelaxError if there is none."""
        record = self._ids.get(image_id)
        if record is None or record.image_id != image_id:
            self._ids = {r.image_id: r for r in self.images}
            record = self._ids.get(image_id)
        if record is None:
            raise CorrelaxError(f"no image {image_id!r} in this data set", self.root / FINDINGS_CSV)
        return record


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, {column: stripped value}) for each non-blank data row.

    The header is checked first: a missing, empty or unreadable file, or an absent
    required column, raises CorrelaxError naming the file (and the columns).
    """
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise CorrelaxError("file not found (a VinDr-Mammo data set needs it)", path) from None
    except OSError as exc:
        raise CorrelaxError(f"cannot open: {exc.strerror or exc}", path) from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise CorrelaxError("empty file, no header row", path) from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise CorrelaxError(f"not a readable CSV file ({exc})", path) from None
        absent = [c for c in required if c not in header]
        if absent:
            names = ", ".join(repr(c) for c in absent)
            raise CorrelaxError(f"missing column{'s' if len(absent) > 1 else ''} {names}", path)
        width = len(header)
        try:
            for row in reader:
                if not any(v.strip() for v in row):
                    continue
                if len(row) < width:
                    row = row + [""] * (width - len(row))
                yield reader.line_num, {k: row[i].strip() for i, k in enumerate(header)}
        except (UnicodeDecodeError, csv.Error) as exc:
            raise CorrelaxError(f"line {reader.line_num}: not readable as CSV ({exc})",
                                path) from None


def _parse_categories(text: str, cache: dict[str, list[str] | None]) -> list[str] | None:
    """``"['Mass', 'Suspicious Calcification']"`` -> list; None when malformed."""
    if text in cache:
        return cache[text]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        parsed: list[str] | None = [v.strip() for v in value]
    else:
        parsed = None
    cache[text] = parsed
    return parsed


def _group_row(categories: list[str], unknown: Counter[str]) -> dict[str, list[str]]:
    """The lesion labels one row's categories name, each with its categories in row order
    (a category listed twice counts once). Categories outside the groups are counted in
    ``unknown``; "No Finding" names no label."""
    grouped: dict[str, list[str]] = {}
    for category in categories:
        label = group_category(category)
        if label is None:
            unknown[category] += 1
        elif label != NO_FINDING and category not in grouped.setdefault(label, []):
            grouped[label].append(category)
    return grouped


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _image_path(root: Path, study: str, image: str, listing: dict[str, set[str] | None],
                check: bool) -> tuple[Path, bool]:
    """(path of the image file, whether it exists); one directory listing per study."""
    folder = root / "images" / study
    default = folder / f"{image}.dicom"
    if not check:
        return default, True
    if study not in listing:
        try:
            listing[study] = {e.name for e in os.scandir(folder)}
        except OSError:
            listing[study] = None
    names = listing[study]
    if names:
        for suffix in _IMAGE_SUFFIXES:
            if image + suffix in names:
                return folder / (image + suffix), True
    return default, False


def load_vindr(root: str | PathLike[str], *, check_files: bool = True) -> VinDrIndex:
    """Index a data set in the VinDr-Mammo layout (docs/method.md §11).

    Args:
        root: the folder holding ``finding_annotations.csv`` and ``images/`` (the CSV
            file itself is accepted too).
        check_files: look up every image file (one directory listing per study) and
            list the absent ones in ``missing``.

    Returns:
        A :class:`VinDrIndex`. Rows of one image are merged into one
        :class:`ImageRecord`; malformed values are skipped and reported in
        ``problems``, never raised.

    Raises:
        CorrelaxError: the finding table is missing, empty, unreadable, or lacks one of
            :data:`REQUIRED_COLUMNS` (the message names the file and the columns).
    """
    root = Path(root)
    if root.is_file():
        findings_csv, root = root, root.parent
    else:
        findings_csv = root / FINDINGS_CSV
    problems: list[str] = []
    unknown: Counter[str] = Counter()
    records: dict[str, ImageRecord] = {}
    missing: list[Path] = []
    listing: dict[str, set[str] | None] = {}
    cache: dict[str, list[str] | None] = {}
    name = findings_csv.name

    for line, row in _rows(findings_csv, REQUIRED_COLUMNS):
        image_id, study_id = row["image_id"], row["study_id"]
        if not image_id or not study_id:
            problems.append(f"{name} line {line}: no image_id or study_id; row skipped")
            continue
        record = records.get(image_id)
        laterality = row["laterality"].upper()
        view = row["view_position"].upper()
        if record is None:
            raw_split = row["split"].lower()
            split = _SPLITS.get(raw_split, raw_split)
            if raw_split not in _SPLITS:
                problems.append(f"{name} line {line}: unknown split {row['split']!r}")
            size = [_number(row[k]) for k in ("height", "width")]
            if None in size:
                problems.append(f"{name} line {line}: height/width not numbers")
            path, exists = _image_path(root, study_id, image_id, listing, check_files)
            if not exists:
                missing.append(path)
            record = ImageRecord(
                study_id=study_id, image_id=image_id, path=path, laterality=laterality,
                view=view, split=split, height=int(size[0] or 0), width=int(size[1] or 0),
                breast_birads=row.get("breast_birads") or None)
            records[image_id] = record
        elif (record.study_id, record.laterality, record.view) != (study_id, laterality, view):
            problems.append(f"{name} line {line}: image {image_id} has rows that disagree on "
                            "study, laterality or view; the first row's values are kept")

        categories = _parse_categories(row["finding_categories"], cache)
        if categories is None:
            problems.append(f"{name} line {line}: finding_categories "
                            f"{row['finding_categories']!r} is not a list literal; row skipped")
            continue
        coords = [row[k] for k in ("xmin", "ymin", "xmax", "ymax")]
        birads = row.get("finding_birads") or None
        for label, names in _group_row(categories, unknown).items():
            category = CATEGORY_SEPARATOR.join(names)
            if not any(coords):
                problems.append(f"{name} line {line}: {category!r} has no box; skipped")
                continue
            xmin, ymin, xmax, ymax = (_number(c) for c in coords)
            if xmin is None or ymin is None or xmax is None or ymax is None:
                problems.append(f"{name} line {line}: box {coords} is not four numbers; skipped")
                continue
            if xmax <= xmin or ymax <= ymin:
                problems.append(f"{name} line {line}: box {coords} has no area; skipped")
                continue
            record.boxes.append(Box(label, category, xmin, ymin, xmax, ymax, birads))

    for category, count in sorted(unknown.items()):
        problems.append(f"{name}: category {category!r} is not one of the model labels; ignored "
                        f"({count} row{'s' if count > 1 else ''})")

    breast_csv = root / BREAST_CSV
    if breast_csv.is_file():
        only_here = 0
        for _, row in _rows(breast_csv, ("image_id",)):
            record = records.get(row["image_id"])
            if record is None:
                only_here += 1
            elif record.breast_birads is None and row.get("breast_birads"):
                record.breast_birads = row["breast_birads"]
        if only_here:
            problems.append(f"{BREAST_CSV}: {only_here} image(s) not in {name}; not indexed")

    return VinDrIndex(root=root, images=list(records.values()), missing=missing,
                      problems=problems)


def check_readable(records: list[ImageRecord], *, decode: bool = False
                   ) -> list[tuple[ImageRecord, str]]:
    """Find images that cannot be used, before any long run starts (docs/method.md §1, §11).

    The quick pass (default, about a millisecond per file) opens every file: it must
    exist and not be empty, its first bytes must name a supported format, and a DICOM
    file must parse up to its pixel data, hold one frame of pixel data whose transfer
    syntax an installed decoder reads, hold all of it (native data: Rows × Columns ×
    samples × bytes per sample; compressed data: the file ends its fragment sequence),
    and be as large (Rows × Columns) as the CSV's height × width says (boxes are in
    those pixels). ``decode=True`` also decodes every
    image with :func:`~napari_correlax.io.read_mammogram` and compares its shape, which
    finds truncated pixel data too, at the cost of a full read.

    Returns ``(record, reason)`` for each unusable image, in the given order; records
    whose height/width is 0 (unknown) are not size-checked.
    """
    from .image import (
        _check_decoder,
        _describe,
        _int,
        _sniff,
        _transfer_syntax,
        has_dicom_preamble,
        read_mammogram,
    )

    bad: list[tuple[ImageRecord, str]] = []
    for record in records:
        path = Path(record.path)
        try:
            with open(path, "rb") as fh:
                head = fh.read(132)
            if not head:
                raise CorrelaxError("file is empty (0 bytes)", path)
            shape: tuple[int | None, int | None] | None = None
            if decode:
                shape = read_mammogram(path).pixels.shape
            elif _sniff(head, path.suffix.lower(), str(path)) == "dicom":
                import pydicom

                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ds = pydicom.dcmread(path, defer_size=1024,
                                             force=not has_dicom_preamble(path))
                except Exception as exc:
                    raise CorrelaxError(f"could not parse the DICOM header ({_describe(exc)})",
                                        path) from None
                item = ds.get_item("PixelData") if "PixelData" in ds else None
                if item is None:
                    raise CorrelaxError("DICOM file has no pixel data (it may be truncated)",
                                        path)
                if (_int(ds, "NumberOfFrames") or 1) > 1:
                    raise CorrelaxError("multi-frame DICOM; a single 2-D image is needed", path)
                syntax = _transfer_syntax(ds)
                _check_decoder(syntax, str(path))
                shape = (_int(ds, "Rows"), _int(ds, "Columns"))
                _check_pixel_length(path, item, syntax, ds, shape)
        except FileNotFoundError:
            bad.append((record, f"{path}: file not found"))
            continue
        except OSError as exc:
            bad.append((record, f"{path}: cannot open ({exc.strerror or exc})"))
            continue
        except CorrelaxError as exc:
            bad.append((record, str(exc)))
            continue
        if shape is not None and record.height and record.width and \
                tuple(shape) != (record.height, record.width):
            bad.append((record, f"{path}: image is {shape[0]}×{shape[1]} pixels but "
                                f"{FINDINGS_CSV} says {record.height}×{record.width}"))
    return bad


_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _check_pixel_length(path: Path, item: object, syntax: object, ds: object,
                        shape: tuple[int | None, int | None]) -> None:
    """CorrelaxError when a DICOM file visibly lacks part of its pixel data (truncated)."""
    from .image import _int

    size = path.stat().st_size
    length = getattr(item, "length", None)
    tell = getattr(item, "value_tell", None)
    if getattr(syntax, "is_compressed", False):
        with open(path, "rb") as fh:
            fh.seek(max(size - 65536, 0))
            tail = fh.read()
        if _SEQUENCE_END not in tail:
            raise CorrelaxError("compressed pixel data is cut off (no end of its fragment "
                                "sequence); the file may be truncated", path)
        return
    if length is None or length == 0xFFFFFFFF:
        value = getattr(item, "value", None)
        available = len(value) if isinstance(value, (bytes, bytearray)) else None
    else:
        available = min(int(length), size - int(tell)) if tell is not None else int(length)
    rows, cols = shape
    bits = _int(ds, "BitsAllocated") or 16
    samples = _int(ds, "SamplesPerPixel") or 1
    if available is None or not rows or not cols:
        return
    expected = (rows * cols * samples * bits + 7) // 8
    if available < expected:
        raise CorrelaxError(f"pixel data is cut off ({available} of {expected} bytes); the "
                            "file may be truncated", path)


def find_annotations(image_path: str | Path) -> Path | None:
    """The VinDr ``finding_annotations.csv`` beside an image, if any.

    Looks in the image's folder and up to two folders above it (VinDr keeps images in
    ``<root>/images/<study_id>/``).
    """
    folder = Path(image_path).resolve().parent
    for candidate in (folder, *list(folder.parents)[:3]):
        csv_path = candidate / FINDINGS_CSV
        if csv_path.is_file():
            return csv_path
    return None


def boxes_for_image(image_path: str | Path, csv_path: str | Path | None = None) -> list[Box]:
    """Ground-truth boxes of one image from a VinDr CSV (found beside it when not given).

    The image is matched by ``image_id`` = its file name without extension. Returns an
    empty list when there is no CSV or no row for this image; a CSV that cannot be read
    raises :class:`~napari_correlax.errors.CorrelaxError`.
    """
    csv_file = Path(csv_path) if csv_path is not None else find_annotations(image_path)
    if csv_file is None:
        return []
    index = load_vindr(csv_file, check_files=False)
    try:
        record = index.by_id(Path(image_path).stem.split(".")[0])
    except CorrelaxError:
        return []
    return list(record.boxes)
