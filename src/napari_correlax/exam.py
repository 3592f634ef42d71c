"""The exam view's hanging protocol: the four screening views of a study on one screen.

A screening exam is four views, hung as radiologists read them::

    R-CC  | L-CC
    ------+------
    R-MLO | L-MLO

the right breast on the left of the screen, each image mirrored where needed so that the
two chest walls meet in the middle and the nipples point outwards. :func:`hang` takes
the images of one study (:class:`ExamImage`, from the data set's table with
:meth:`ExamImage.from_record` or from DICOM tags with :meth:`ExamImage.from_dicom`) and
returns an :class:`Exam`: four :class:`Tile` s, each with the affine that puts its image
there, and missing views as empty tiles that keep their name. No pixels are read and
nothing here imports napari; the viewer only applies the affines.

Geometry (world coordinates ``(y, x)``, y down, x right; millimetres when every image of
the exam has a pixel spacing, otherwise pixels):

* Tiles are all ``tile_shape = (Th, Tw)``, the largest height and width among the
  images; tile ``(row, col)`` covers ``[row·Th, (row+1)·Th) × [col·Tw, (col+1)·Tw)``.
* Where the chest wall lies in a stored image comes from Patient Orientation: its first
  value is the direction of increasing column, ``A`` (towards the nipple: the chest wall
  at column 0, on the left) or ``P`` (the chest wall on the right). Without it, the
  VinDr-Mammo storage convention (also that of ``correlax synth``) is assumed: a left
  breast has its chest wall on the left, a right breast on the right.
* An image is mirrored left–right when its chest wall is not on the side facing the
  middle of the screen (the right side of a tile in the left column, the left side in
  the right column), and flipped upside down when Patient Orientation's second value
  starts with ``H`` (rows running towards the head).
* Each image touches its tile's edge at the middle of the screen (right-aligned in the
  left column, left-aligned in the right column) and the tile's top.
* The affine maps data coordinates ``(row, col)`` (pixel centres at integers, napari's
  convention; pixel ``c`` covers ``[c − ½, c + ½]``) to world: without mirroring
  ``x = x₀ + s_x·(c + ½)``, mirrored ``x = x₀ + s_x·(w − ½ − c)`` where ``x₀`` is the
  image's left edge in world units; rows alike with ``y₀`` and ``s_y``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .io.vindr import ImageRecord, VinDrIndex

__all__ = ["LAYOUT", "Exam", "ExamImage", "Tile", "hang", "study_images"]

#: View name → tile ``(row, col)``.
LAYOUT: dict[str, tuple[int, int]] = {
    "R-CC": (0, 0), "L-CC": (0, 1), "R-MLO": (1, 0), "L-MLO": (1, 1),
}


@dataclass(frozen=True)
class ExamImage:
    """What the hanging protocol needs of one image: its id, ``laterality`` (``"L"``/``"R"``),
    ``view`` (``"CC"``/``"MLO"``), ``shape`` ``(rows, cols)`` in pixels, ``spacing_mm``
    ``(row, col)`` or None, and the DICOM Patient Orientation (two strings) or None."""

    image_id: str
    laterality: str
    view: str
    shape: tuple[int, int]
    spacing_mm: tuple[float, float] | None = None
    patient_orientation: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        """``"R-CC"``, ``"L-MLO"``, …"""
        return f"{self.laterality.upper()}-{self.view.upper()}"

    @classmethod
    def from_record(cls, record: ImageRecord) -> ExamImage:
        """From a row of the data set's table (no orientation: the storage convention)."""
        return cls(record.image_id, record.laterality, record.view,
                   (int(record.height), int(record.width)))

    @classmethod
    def from_dicom(cls, path: str | os.PathLike[str], image_id: str | None = None) -> ExamImage:
        """From a DICOM file's tags (ImageLaterality or Laterality, ViewPosition, Rows,
        Columns, PixelSpacing or ImagerPixelSpacing, PatientOrientation); ``image_id``
        defaults to the file name without extension. Raises CorrelaxError for a file
        that is not DICOM or lacks laterality or view."""
        import pydicom

        from .dicom_out.source import image_spacing
        from .errors import CorrelaxError

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            raise CorrelaxError(f"not a readable DICOM file ({type(exc).__name__})",
                                path) from None
        laterality = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")
        view = str(ds.get("ViewPosition", "") or "")
        if laterality.upper() not in ("L", "R") or not view:
            raise CorrelaxError("no image laterality (L/R) or view position in its tags", path)
        orientation = [str(v) for v in (ds.get("PatientOrientation") or [])]
        return cls(image_id or os.path.splitext(os.path.basename(os.fspath(path)))[0],
                   laterality.upper(), view.upper(), (int(ds.Rows), int(ds.Columns)),
                   image_spacing(ds), tuple(orientation) if len(orientation) == 2 else None)

    def chest_wall_left(self) -> bool:
        """Whether the chest wall is at column 0 of the stored image (module docstring)."""
        if self.patient_orientation is not None:
            first = self.patient_orientation[0][:1].upper()
            if first in ("A", "P"):
                return first == "A"
        return self.laterality.upper() == "L"


@dataclass(frozen=True)
class Tile:
    """One of the four places: its view ``name``, ``(row, col)`` in the 2×2 grid, the
    world rectangle ``origin`` (top-left) and ``size``, the image hung there (None:
    the view is missing and the tile stays empty with its name), whether it is
    ``mirrored`` (left–right) and ``flipped`` (upside down), the 3×3 ``affine`` from
    data ``(row, col, 1)`` to world ``(y, x, 1)`` (identity for a missing view) and
    whether it is the ``current`` image."""

    name: str
    grid: tuple[int, int]
    origin: tuple[float, float]
    size: tuple[float, float]
    image: ExamImage | None
    mirrored: bool = False
    flipped: bool = False
    affine: np.ndarray | None = None
    current: bool = False

    @property
    def empty(self) -> bool:
        """True when the study has no image of this view."""
        return self.image is None


@dataclass(frozen=True)
class Exam:
    """The hung exam: ``tiles`` in :data:`LAYOUT` order, the ``tile_shape`` and ``units``
    (``"mm"`` or ``"pixels"``) of the world, and the ``unplaced`` images (a second image
    of a view already hung, or a view other than CC and MLO)."""

    tiles: list[Tile]
    tile_shape: tuple[float, float]
    units: str
    unplaced: list[ExamImage]

    def tile(self, name: str) -> Tile:
        """The tile of a view name (``"L-MLO"``)."""
        return next(t for t in self.tiles if t.name == name)


def _affine(image: ExamImage, origin: tuple[float, float], size: tuple[float, float],
            col: int, scale: tuple[float, float]) -> tuple[np.ndarray, bool, bool]:
    h, w = image.shape
    sy, sx = scale
    mirrored = image.chest_wall_left() == (col == 0)
    orientation = image.patient_orientation
    flipped = bool(orientation and orientation[1][:1].upper() == "H")
    x0 = origin[1] + size[1] - w * sx if col == 0 else origin[1]
    y0 = origin[0]
    matrix = np.eye(3)
    matrix[0, 0], matrix[0, 2] = (-sy, y0 + sy * (h - 0.5)) if flipped else (sy, y0 + sy * 0.5)
    matrix[1, 1], matrix[1, 2] = (-sx, x0 + sx * (w - 0.5)) if mirrored else (sx, x0 + sx * 0.5)
    return matrix, mirrored, flipped


def hang(images: Sequence[ExamImage], current: str | None = None) -> Exam:
    """The four views of ``images`` (one study) hung as the module docstring says;
    ``current`` is the image id to mark (it wins its view when the study has two)."""
    placed: dict[str, ExamImage] = {}
    unplaced = []
    ordered = sorted(images, key=lambda im: im.image_id != current)
    for image in ordered:
        if image.name in LAYOUT and image.name not in placed:
            placed[image.name] = image
        else:
            unplaced.append(image)
    in_mm = bool(placed) and all(im.spacing_mm is not None for im in placed.values())

    def scale(image: ExamImage) -> tuple[float, float]:
        return tuple(image.spacing_mm) if in_mm else (1.0, 1.0)  # type: ignore[return-value]

    extents = [(im.shape[0] * scale(im)[0], im.shape[1] * scale(im)[1])
               for im in placed.values()]
    size = (max((e[0] for e in extents), default=1.0), max((e[1] for e in extents), default=1.0))
    tiles = []
    for name, (row, col) in LAYOUT.items():
        origin = (row * size[0], col * size[1])
        image = placed.get(name)
        if image is None:
            tiles.append(Tile(name, (row, col), origin, size, None, affine=np.eye(3)))
            continue
        matrix, mirrored, flipped = _affine(image, origin, size, col, scale(image))
        tiles.append(Tile(name, (row, col), origin, size, image, mirrored, flipped, matrix,
                          current=image.image_id == current))
    return Exam(tiles, size, "mm" if in_mm else "pixels", unplaced)


def study_images(index: VinDrIndex, image_id: str) -> list[ExamImage]:
    """The images of ``image_id``'s study in a VinDr-layout data set, from its table."""
    study = index.by_id(image_id).study_id
    return [ExamImage.from_record(r) for r in index.images if r.study_id == study]
