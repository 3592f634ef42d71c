"""The one error type users see.

Every failure caused by user input (an unreadable file, a broken checkpoint, a
data set missing a column) raises :class:`CorrelaxError` with a message that
names the file and the reason. The CLI prints it on one line and exits
non-zero; the napari widgets turn it into a notification. A job that runs in a worker
thread returns a :class:`JobFailure` instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike


class CorrelaxError(Exception):
    """A user-facing error: ``"<file>: <reason>"``."""

    def __init__(self, reason: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(reason if path is None else f"{path}: {reason}")


@dataclass(frozen=True)
class JobFailure:
    """What a job run in a worker thread returns instead of raising: napari would show a
    raised exception with its traceback, a failure is shown as one message.

    ``message``: one line for the user; ``image_id``: the image the job was for (``""``
    when none); ``bad_image``: the image file itself is at fault (the test-set reader
    marks it bad and goes on), otherwise the model, the settings or the machine are, and
    running the job again unchanged would fail again.
    """

    message: str
    image_id: str = ""
    bad_image: bool = False
