"""*Save as DICOM…* for the analysis dock and the test-set reader.

Both call the core writers of :mod:`napari_correlax.dicom_out`: every map of the image's
result as a Parametric Map over its DICOM source and, in the reader, the image's verdicts
as a Comprehensive SR (TID 1500). Each returns the files written and one line for the
dock's status; a refusal (a PNG source, maps not computed yet) writes nothing, since the
writers check the source before writing and write each file atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CorrelaxError

__all__ = ["save_analysis", "save_reader_image"]


def _line(written: list[Path], folder: str | os.PathLike[str]) -> str:
    return f"saved {len(written)} DICOM file(s) in {Path(folder).name}: " + \
        ", ".join(p.name for p in written)


def save_analysis(results: list[Any], source: str | os.PathLike[str] | None,
                  folder: str | os.PathLike[str]) -> tuple[list[Path], str]:
    """Parametric Maps of each result (one per map kind and label) over the image file
    ``source``, into ``folder``; ``(files, status line)``."""
    from ..dicom_out import write_parametric_maps

    if not source:
        return [], "not saved as DICOM: the image layer has no source file"
    if not results:
        return [], "not saved as DICOM: no maps of this image yet (run or open them first)"
    written: list[Path] = []
    try:
        for result in results:
            written += write_parametric_maps(result, source, folder)
    except CorrelaxError as exc:
        return written, f"not saved as DICOM: {exc}"
    return written, _line(written, folder)


def save_reader_image(review: Any, loaded: Any, folder: str | os.PathLike[str]
                      ) -> tuple[list[Path], str]:
    """The reader's current image ``loaded`` (a LoadedImage; None: not computed): its maps
    as Parametric Maps and, when it has verdicts, those as an SR, into ``folder``."""
    from ..dicom_out import write_verdict_report

    if loaded is None or loaded.result is None:
        return [], "not saved as DICOM: this image's maps are not computed yet"
    source = str(loaded.record.path)
    written, line = save_analysis([loaded.result], source, folder)
    if not written or review.store is None or not review.store.path.is_file():
        return written, line
    try:
        written.append(write_verdict_report(review.store.path, source, folder,
                                            image_id=loaded.record.image_id,
                                            settings=review.key))
    except CorrelaxError as exc:
        return written, f"{_line(written, folder)}; no report: {exc}"
    return written, _line(written, folder)
