"""The one error type users see.

Every failure caused by user input (an unreadable file, a broken checkpoint, a
data set missing a column) raises :class:`CorrelaxError` with a message that
names the file and the reason. The CLI prints it on one line and exits
non-zero; the napari widgets turn it into a notification.
"""

from __future__ import annotations

from os import PathLike


class CorrelaxError(Exception):
    """A user-facing error: ``"<file>: <reason>"``."""

    def __init__(self, reason: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(reason if path is None else f"{path}: {reason}")
