"""The test-set reader's background work: maps of the images a review wants, file checks.

Maps are computed in a napari worker, one image at a time, in the order
:meth:`~napari_correlax.evaluate.review.Review.wanted` gives (the current image, then
the next one); a job for an image the review no longer wants is quit between two
progress events. A second worker checks every file of the data set once. An image the
reader moves to is read on its own short thread (:meth:`ReviewJobs.read`), so it is on
screen at once, whatever the map worker is busy with (Qt's pool may hold only as many
threads as there are cores, all busy). :meth:`ReviewJobs.shutdown` stops everything
before the window closes.
"""

from __future__ import annotations

import threading
from typing import Any

from qtpy.QtCore import QObject, Signal

from ..evaluate.review import Review, check_steps, load_steps, read_preview
from ..evaluate.runner import Preview
from ._closing import stop_worker


class ReviewJobs(QObject):
    """Runs a :class:`Review`'s loads and its file check in napari workers.

    Signals: ``progress(event)`` while the current image is computed, ``preview(image)``
    for what a load shows before its maps are done (any image it computes: the
    prefetched one is kept for when the reader gets there), ``loaded(outcome)``
    (a :class:`~napari_correlax.evaluate.runner.LoadedImage` or
    :class:`~napari_correlax.errors.JobFailure`, not yet accepted), ``idle()``
    when a job ended, ``bad_file(image_id, reason)`` per unusable file, ``checked()``
    when the check is over and ``image_read(outcome)`` when :meth:`read` is done.
    """

    progress = Signal(object)
    preview = Signal(object)
    loaded = Signal(object)
    idle = Signal()
    bad_file = Signal(str, str)
    checked = Signal()
    image_read = Signal(object)

    def __init__(self, review: Review, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.review = review
        self.worker: Any = None
        self.worker_id = ""
        self.worker_key = ""
        self.checker: Any = None
        self._stopped = False
        self._closed = False
        self._readers: dict[str, threading.Thread] = {}

    @property
    def busy(self) -> bool:
        """True while maps are being computed or files checked."""
        return self.worker is not None or self.checker is not None

    def schedule(self) -> None:
        """Start the next job the review wants, or quit one it no longer wants: an image
        it moved away from, or maps made with settings it no longer uses (a changed
        stride or model cancels the running job at its next batch instead of finishing)."""
        if self._closed:
            return
        self._stopped = False
        wanted = self.review.wanted()
        if self.worker is not None:
            stale = self.worker_key != self.review.key
            if stale or self.worker_id not in {r.image_id for r in wanted}:
                self.worker.quit()
            return
        if not wanted:
            return
        from napari.qt.threading import create_worker

        record = wanted[0]
        review = self.review
        worker = create_worker(load_steps, record, review.checkpoint, review.settings,
                               review.cache_root, _start_thread=False)
        worker.yielded.connect(self._progress)
        worker.returned.connect(self.loaded.emit)
        worker.finished.connect(self._finished)
        self.worker, self.worker_id, self.worker_key = worker, record.image_id, review.key
        worker.start()

    def _progress(self, event: Any) -> None:
        if isinstance(event, Preview):
            if self.worker_key == self.review.key or event.image.result is None:
                self.preview.emit(event.image)
            return
        current = self.review.current
        if current is not None and self.worker_id == current.image_id:
            self.progress.emit(event)

    def read(self, record: Any) -> None:
        """Read the image of ``record`` alone on a short thread of its own; the outcome
        (:func:`~napari_correlax.evaluate.review.read_preview`) comes as ``image_read``.
        Nothing to do when the map worker has just started on this image: its first
        yield is the same image (a film read twice would cost seconds of CPU)."""
        if self._closed or record.image_id in self._readers or (
                self.worker_id == record.image_id and not self.worker.abort_requested):
            return
        thread = threading.Thread(target=self._read, args=(record,), daemon=True,
                                  name=f"read {record.image_id}")
        self._readers[record.image_id] = thread
        thread.start()

    def _read(self, record: Any) -> None:
        outcome = read_preview(record)
        if not self._closed:
            try:
                self.image_read.emit(outcome)
            except RuntimeError:  # the dock went away meanwhile
                pass

    def read_done(self, image_id: str) -> None:
        """Forget the reading thread of an image (its outcome arrived)."""
        self._readers.pop(image_id, None)

    def _finished(self) -> None:
        self.worker, self.worker_id, self.worker_key = None, "", ""
        self.idle.emit()
        if self.review.index is not None and not self._stopped:
            self.schedule()

    def check(self) -> None:
        """Check the files not known to be bad (quick pass), in the background."""
        from napari.qt.threading import create_worker

        worker = create_worker(check_steps, self.review.to_check(), _start_thread=False)
        worker.yielded.connect(lambda found, w=worker: self._bad_file(found, w))
        worker.finished.connect(lambda w=worker: self._check_done(w))
        self.checker = worker
        worker.start()

    def _bad_file(self, found: tuple[str, str], worker: Any) -> None:
        if worker is self.checker:
            self.bad_file.emit(*found)

    def _check_done(self, worker: Any) -> None:
        if worker is self.checker:
            self.checker = None
            self.checked.emit()

    def stop(self) -> None:
        """Ask both workers to quit (between two of their yields); nothing new starts
        until the next :meth:`schedule`."""
        self._stopped = True
        for worker in (self.worker, self.checker):
            if worker is not None:
                worker.quit()

    def shutdown(self) -> None:
        """Stop for good (the window closes): nothing reaches the dock any more, the
        workers are quit and awaited (the map worker ends at its next batch), and no
        new job starts."""
        self._closed = self._stopped = True
        for worker in (self.worker, self.checker):
            stop_worker(worker)
        self.worker = self.checker = None
        for thread in list(self._readers.values()):
            thread.join(timeout=10.0)
        self._readers.clear()
