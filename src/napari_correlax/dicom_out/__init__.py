"""Results handed back as DICOM that a PACS accepts and viewers open (no napari here).

- :func:`write_parametric_maps`: the maps of a result (:class:`~napari_correlax.maps.MapResult`)
  as Parametric Maps over their DICOM source image (:mod:`.parametric`).
- :func:`write_verdict_report`: the reader's verdicts of that image as a Comprehensive SR
  following TID 1500 (:mod:`.report`).
- :func:`~.send.send`: C-STORE of the written files to a DICOM node (:mod:`.send`).
- :mod:`.read`: the objects back as arrays and points, for napari and scripts.

Files are written atomically, named ``<source stem>-<kind>[-<label>].dcm`` and
``<source stem>-verdicts.dcm``; each call starts a new series (maps and SR apart).
highdicom and pynetdicom are imported only when these functions run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CorrelaxError
from .parametric import map_images, parametric_map
from .report import image_rows, verdict_report
from .source import read_source

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..maps.result import MapResult

__all__ = ["write_dataset", "write_parametric_maps", "write_verdict_report"]


def _software() -> str:
    from .. import __version__

    return f"napari-correlax {__version__}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "map"


def write_dataset(path: str | os.PathLike[str], ds: Dataset) -> Path:
    """Write ``ds`` as a DICOM Part 10 file, atomically."""
    import pydicom

    from ..files import atomic_write

    return atomic_write(path, lambda fh: pydicom.dcmwrite(fh, ds, enforce_file_format=True))


def write_parametric_maps(result: MapResult, source: str | os.PathLike[str],
                          out: str | os.PathLike[str], *, kinds: Sequence[str] | None = None,
                          labels: Sequence[str] | None = None) -> list[Path]:
    """One Parametric Map per map kind and label of ``result`` (or of ``kinds`` and
    ``labels``) over the DICOM image ``source``, written into the folder ``out``.

    Raises CorrelaxError when ``source`` is not a DICOM image (:func:`.source.read_source`),
    is not the image the result was computed on (another SOP instance or pixel grid), or
    a kind or label is unknown.
    """
    header = read_source(source)
    computed_on = result.meta.get("sop_instance_uid")
    if computed_on and str(computed_on) != str(header.SOPInstanceUID):
        raise CorrelaxError(f"the result was computed on SOP instance {computed_on}, not this "
                            "image", source)
    if tuple(result.image_shape) != (int(header.Rows), int(header.Columns)):
        raise CorrelaxError(f"the result's image is {result.image_shape[0]}×"
                            f"{result.image_shape[1]} pixels, this one {header.Rows}×"
                            f"{header.Columns}: not the image the maps were computed on", source)
    from pydicom.uid import generate_uid

    series = generate_uid()
    stem = Path(source).stem
    paths = []
    for number, image in enumerate(map_images(result, kinds, labels), start=1):
        ds = parametric_map(header, image, series_uid=series, number=number,
                            software=_software())
        name = f"{stem}-{_slug(image.kind)}" + (f"-{_slug(image.label)}" if image.label else "")
        paths.append(write_dataset(Path(out) / f"{name}.dcm", ds))
    return paths


def write_verdict_report(verdicts: str | os.PathLike[str], source: str | os.PathLike[str],
                         out: str | os.PathLike[str], *, image_id: str | None = None,
                         settings: str | None = None, reader: str = "Reader^") -> Path:
    """The verdicts of the image ``source`` in the verdict CSV ``verdicts`` as a
    Comprehensive SR written into the folder ``out``.

    The image's rows are those whose ``image_id`` is ``image_id`` or, by default, the
    source's file name without extension (VinDr-Mammo names files by image id) or its SOP
    Instance UID. Raises CorrelaxError when ``source`` is not DICOM, the CSV is not a
    verdict file, or it holds no rows for the image.
    """
    from pydicom.uid import generate_uid

    from ..evaluate.verdicts import VerdictStore

    header = read_source(source)
    path = Path(verdicts)
    if not path.is_file():
        raise CorrelaxError("verdict file not found", path)
    rows = VerdictStore(path).rows()
    candidates = [image_id] if image_id else [Path(source).stem, str(header.SOPInstanceUID)]
    ids = {r.image_id for r in rows}
    chosen = next((c for c in candidates if c in ids), candidates[0])
    try:
        mine = image_rows(rows, chosen, settings)
    except CorrelaxError as exc:
        raise CorrelaxError(str(exc), path) from None
    ds = verdict_report(header, mine, series_uid=generate_uid(), software=_software(),
                        reader=reader)
    return write_dataset(Path(out) / f"{Path(source).stem}-verdicts.dcm", ds)
