"""A reader going through a test split, without Qt (docs/method.md §10): state and rules.

A :class:`Review` holds what the napari "Test-set reader" dock shows and every rule it
follows: the data set and the split, the filter, the list of images, the position and
navigation, each image's status, which images to compute next, the automatic
pointing-game verdicts of an image whose maps are loaded, the reader's own verdicts and
comments, the saved reader state and the cache key. The dock only builds controls,
forwards clicks and keys to a :class:`Review` and draws what it says; everything here
runs (and is tested) without a viewer.

Files, under the *work folder* (default :func:`default_work_folder`):

``verdicts.csv``
    A :class:`~.verdicts.VerdictStore`, rewritten atomically after every change, so
    there is nothing to save and nothing is lost when the process is killed.
``reader-state.json``
    A :class:`~.verdicts.ReaderState`: data folder, split, filter, model, settings and
    image, so opening the folder again resumes there.
``cache/<key>/``
    Each image's maps, as ``correlax evaluate --out <work folder>`` writes them
    (:mod:`napari_correlax.maps.cache`), so a batch run beforehand makes reading instant.

Verdicts (:meth:`Review.findings`): one line per finding label of the image, judged on
the map kind being viewed (:attr:`Review.view`: prediction or correlation, switched with
the dock's P / C keys), with the automatic verdicts of that kind's pointing rules beside
the reader's; the reader's answer is stored on each of those rules' rows, so the report
compares it with every rule. An image without findings has one line, "No Finding": a hit
when the map raises no alarm (:func:`~.pointing.normal_verdicts`). False positives the
reader marks on the map (:meth:`Review.mark_false_positive`) are lines of their own.

Status of an image (:meth:`Review.status`) and the symbol the list shows
(:data:`SYMBOLS`): ``bad`` ✗ (file missing or unreadable), ``none`` ○ (no verdict rows
under this key yet; ``normal`` · for an image without findings), ``open`` ○ (rows, none
judged), ``partial`` ◐ (some judged), ``done`` ● (every line of one map kind judged: the
lines the reader saw, whichever kind that was).

Verdict rows belong to one cache key (:func:`~napari_correlax.maps.cache.settings_key`
of the checkpoint and the :class:`~napari_correlax.maps.settings.MapSettings`): another
model or map setting shows other maps and other rows; the rows of the old key stay in
the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorrelaxError, JobFailure
from ..labels import LABELS
from ..maps.cache import settings_key
from ..maps.methods import get_method
from ..maps.runtime import Progress
from ..maps.settings import MapSettings
from .pointing import (
    GROW_PX,
    Verdict,
    lesion_labels,
    normal_verdicts,
    pointing_verdicts,
    rules_for,
)
from .runner import LoadedImage, Preview, load_image_steps
from .verdicts import (
    FALSE_POSITIVE,
    STATE_FILE,
    VERDICTS_FILE,
    ReaderState,
    VerdictRow,
    VerdictStore,
)

__all__ = [
    "ALL",
    "FILTERS",
    "SYMBOLS",
    "TO_REVIEW",
    "WITH_FINDINGS",
    "Finding",
    "Review",
    "check_steps",
    "default_work_folder",
    "load_steps",
    "read_preview",
    "saved_settings",
]

log = logging.getLogger(__name__)

#: Filters of the list: every image, images with a finding, or one lesion label.
ALL, WITH_FINDINGS = "All images", "Images with findings"
FILTERS: tuple[str, ...] = (ALL, WITH_FINDINGS, *lesion_labels(LABELS))
#: What the image list shows for each status (module docstring).
SYMBOLS = {"bad": "✗", "normal": "·", "none": "○", "open": "○", "partial": "◐", "done": "●"}
#: Statuses of an image that still waits for the reader.
TO_REVIEW = ("none", "open", "partial")


@dataclass
class Finding:
    """One line of the verdict table: a finding label of the current image judged on the
    viewed map kind (``rows``: that kind's pointing-rule rows, one per rule), or a false
    positive the reader marked (``rows``: its one mark row)."""

    label: str
    kind: str
    rows: list[VerdictRow]

    @property
    def is_mark(self) -> bool:
        """True for a marked false positive."""
        return self.rows[0].is_mark

    @property
    def boxes(self) -> int:
        """Ground-truth boxes of the label in the image."""
        return self.rows[0].boxes

    @property
    def reader_verdict(self) -> str:
        """The reader's verdict ("" until given; ``false positive`` for a mark)."""
        return self.rows[0].reader_verdict

    @property
    def comment(self) -> str:
        """The reader's comment."""
        return self.rows[0].comment

    @property
    def max_value(self) -> float:
        """The map's maximum (a mark: the map's value there)."""
        return self.rows[0].max_value

    @property
    def location(self) -> tuple[float, float]:
        """``(row, col)`` of the maximum (or mark), original image pixels."""
        return (self.rows[0].max_row, self.rows[0].max_col)

    def automatic(self) -> str:
        """The automatic verdicts of the kind's rules: ``"hit ≥0.25 · miss ≥0.50"``
        (one rule: just the verdict; a mark: empty)."""
        if self.is_mark:
            return ""
        if len(self.rows) == 1:
            return self.rows[0].auto_verdict
        return " · ".join(f"{r.auto_verdict} {r.map[len(self.kind):]}" for r in self.rows)


def load_steps(
    record: Any,
    checkpoint: str | None,
    settings: MapSettings,
    cache_root: str | os.PathLike[str],
) -> Generator[Progress | Preview, None, LoadedImage | JobFailure]:
    """An image and its maps (:func:`~.runner.load_image_steps`), or why not; never raises.

    Yields the map computation's progress and its :class:`~.runner.Preview` events (the
    image at once, then its prediction maps); returns the
    :class:`~.runner.LoadedImage` or a :class:`~napari_correlax.errors.JobFailure` (what a
    worker thread hands back to :meth:`Review.accept`).
    """
    try:
        return (yield from load_image_steps(record, checkpoint, settings, cache_root))
    except CorrelaxError as exc:
        return JobFailure(str(exc), record.image_id, exc.path == str(record.path))
    except MemoryError:
        return JobFailure("out of memory: lower the batch size or raise the stride",
                          record.image_id, False)
    except Exception as exc:
        log.exception("test-set reader: loading %s failed", record.image_id)
        return JobFailure(f"{type(exc).__name__}: {exc}", record.image_id, False)


def read_preview(record: Any) -> LoadedImage | JobFailure:
    """The image of ``record`` alone (no maps, ``final`` False), read as :func:`load_steps`
    reads it, or why it cannot be: what the reader shows at once when it moves to an
    image whose maps are not ready. Never raises; loads no model."""
    steps = load_steps(record, None, MapSettings(), ".")
    try:
        event = next(steps)
    except StopIteration as stop:  # the file could not be read
        return stop.value
    finally:
        steps.close()
    return event.image


def check_steps(records: list[Any], chunk: int = 64) -> Generator[tuple[str, str], None, None]:
    """Quick readability check (:func:`~napari_correlax.io.vindr.check_readable`) in
    chunks, yielding ``(image_id, reason)`` for each file that cannot be used."""
    from ..io.vindr import check_readable

    for start in range(0, len(records), chunk):
        for record, reason in check_readable(records[start : start + chunk]):
            yield (record.image_id, reason)


def default_work_folder(data: Path) -> Path:
    """``<data>/correlax`` when the data folder is writable, else a per-data-set user folder."""
    if os.access(data, os.W_OK):
        return data / "correlax"
    slug = "_".join(p for p in data.resolve().parts[-2:] if p.strip("/"))
    return Path.home() / ".cache" / "napari-correlax" / "review" / slug


def saved_settings(state: ReaderState, current: MapSettings) -> MapSettings:
    """``current`` with the map-changing fields a saved state holds.

    Runtime fields (device, batch sizes, threads) stay as in ``current``: they never
    change a map and the machine may have changed. Settings that are not valid give
    ``current`` unchanged (the state is only a hint).
    """
    try:
        return current.with_(**MapSettings.from_dict(state.settings or {}).map_fields())
    except (CorrelaxError, KeyError, TypeError, ValueError):
        return current


class Review:
    """One reader's pass over a split of a VinDr-layout data set (module docstring).

    Typical use: :meth:`open` a data folder, :meth:`configure` the model and settings,
    :meth:`list_images` of a split and filter, :meth:`go` to the returned position;
    compute the images :meth:`wanted` returns with :func:`load_steps` and hand the
    outcome to :meth:`accept`; :meth:`automatic_verdicts` of a loaded image adds its
    rows, :meth:`set_verdict` / :meth:`set_comment` record the reader's answers.

    Attributes: ``index`` (:class:`~napari_correlax.io.vindr.VinDrIndex`), ``work``
    (work folder), ``store`` (verdicts), ``split`` and ``filter`` (of the list),
    ``records`` (the list), ``position`` (index in ``records``; -1: none), ``checkpoint``
    and ``settings`` (how maps are made), ``key`` (their cache key; "" when unknown),
    ``bad`` (image id → why its file cannot be used), ``loaded`` (image id →
    :class:`~.runner.LoadedImage`, the current image and its neighbours only),
    ``previews`` (image id → what a load showed before its maps were done: the image,
    then its prediction maps; same images kept) and ``halted`` (why computing stopped;
    "" while it runs).
    """

    def __init__(self) -> None:
        self.index: Any = None
        self.work: Path | None = None
        self.store: VerdictStore | None = None
        self.split = ""
        self.filter = ALL
        self.records: list[Any] = []
        self.position = -1
        self.checkpoint: str | None = None
        self.settings = MapSettings()
        self.key = ""
        self.bad: dict[str, str] = {}
        self.loaded: dict[str, LoadedImage] = {}
        self.previews: dict[str, LoadedImage] = {}
        self.halted = ""
        #: The map kind the reader judges (:meth:`findings`).
        self.view = "correlation"

    # -- data set ----------------------------------------------------------------------
    def open(self, data: str | os.PathLike[str], work: str | os.PathLike[str] | None = None
             ) -> ReaderState | None:
        """Open a VinDr-layout folder, verdicts in ``work`` (default :func:`default_work_folder`).

        Files the index lists as missing are bad at once. The list is empty until
        :meth:`list_images`. Returns the state saved in the work folder when it is this
        data folder's (None otherwise). Raises CorrelaxError, changing nothing, when the
        data set or the verdict file cannot be read.
        """
        from ..io.vindr import load_vindr

        data = Path(data).expanduser()
        index = load_vindr(data)
        work_dir = Path(work).expanduser() if work else default_work_folder(data)
        store = VerdictStore(work_dir / VERDICTS_FILE)
        missing = set(index.missing)
        self.index, self.work, self.store = index, work_dir, store
        self.bad = {r.image_id: f"{r.path}: file not found" for r in index.images
                    if r.path in missing}
        self.records, self.position, self.key, self.halted = [], -1, "", ""
        self.loaded.clear()
        self.previews.clear()
        state = ReaderState.load(work_dir / STATE_FILE)
        if state is None or not state.data or Path(state.data).resolve() != data.resolve():
            return None
        return state

    def splits(self) -> list[str]:
        """The splits of the data set, sorted."""
        return sorted({r.split for r in self.index.images}) if self.index is not None else []

    @property
    def cache_root(self) -> Path | None:
        """Where maps are cached (``<work folder>/cache``)."""
        return None if self.work is None else self.work / "cache"

    def configure(self, checkpoint: str | None, settings: MapSettings) -> bool:
        """Make maps with this checkpoint (None: the demo model) and these settings.

        Returns True when the maps change (another cache key, or a halted review that may
        start again): loaded maps are dropped and the list should be drawn again. Raises
        CorrelaxError when the checkpoint cannot be read; the key is then unchanged but
        the next load uses the new checkpoint (and halts with the reason).
        """
        self.checkpoint, self.settings = checkpoint, settings
        key = settings_key(checkpoint, settings)
        if key == self.key and not self.halted:
            return False
        self.key, self.halted = key, ""
        self.loaded.clear()
        self.previews.clear()
        return True

    # -- list and navigation -----------------------------------------------------------
    def filtered(self, split: str, choice: str) -> list[Any]:
        """Images of ``split`` the filter ``choice`` (one of :data:`FILTERS`) keeps."""
        if self.index is None or not split:
            return []
        records = self.index.split(split)
        if choice == WITH_FINDINGS:
            return [r for r in records if lesion_labels(r.labels)]
        if choice != ALL:
            return [r for r in records if choice in r.labels]
        return records

    def list_images(self, split: str, choice: str, keep: str = "") -> int:
        """List the images of ``split`` and filter ``choice``; the position to start at.

        Start at image ``keep`` (default: the current image) when listed, else at the
        first image with a finding that still waits for the reader, else at the first;
        -1 when the list is empty. The position itself is unset until :meth:`go`.
        """
        keep = keep or (self.current.image_id if self.current is not None else "")
        self.split, self.filter = split, choice
        self.records = self.filtered(split, choice)
        self.position = -1
        ids = [r.image_id for r in self.records]
        if not ids:
            return -1
        if keep in ids:
            return ids.index(keep)
        return next((k for k, r in enumerate(self.records) if self.status(r) in TO_REVIEW), 0)

    @property
    def current(self) -> Any:
        """The image record at the position (None when there is none)."""
        return self.records[self.position] if 0 <= self.position < len(self.records) else None

    def neighbour(self, step: int) -> Any:
        """The record ``step`` places from the current one (None past either end)."""
        k = self.position + step
        return self.records[k] if 0 <= k < len(self.records) else None

    def clip(self, position: int) -> int:
        """``position`` moved into the list (the list stops at both ends; -1 when empty)."""
        return min(max(int(position), 0), len(self.records) - 1) if self.records else -1

    def go(self, position: int) -> Any:
        """Move to ``position`` (clipped), save the reader state; the record there."""
        self.position = self.clip(position)
        self.save_state()
        return self.current

    def find(self, text: str) -> int | None:
        """Position of list number ``text`` (1-based) or of the first image whose image or
        study id starts with ``text``; None when no image matches."""
        text = text.strip()
        if text.isdigit():
            return int(text) - 1
        for k, record in enumerate(self.records):
            if record.image_id.startswith(text) or record.study_id.startswith(text):
                return k
        return None

    def position_of(self, image_id: str) -> int:
        """Index of an image in the list (-1 when not listed)."""
        return next((k for k, r in enumerate(self.records) if r.image_id == image_id), -1)

    # -- status ------------------------------------------------------------------------
    def hides_verdicts(self, checkpoint: str | None, settings: MapSettings) -> str:
        """The question to ask before changing to this model and these settings, or "":
        the reader's verdicts belong to the current maps' key and a new key shows the
        verdicts of the new maps (none yet). The old ones stay saved."""
        if self.store is None or settings_key(checkpoint, settings) == self.key:
            return ""
        if checkpoint == self.checkpoint and settings.with_(
                method=self.settings.method, options=self.settings.options) == self.settings:
            return ""  # another method: verdicts are kept per method, switching back shows them
        judged = sum(bool(r.reader_verdict) for r in self.store.rows() if r.settings == self.key)
        if not judged:
            return ""
        return (f"Your {judged} verdict{'s' * (judged != 1)} "
                f"{'were' if judged != 1 else 'was'} given on maps made with the current "
                "model and settings. They stay saved, but the reader will show the verdicts "
                "of the new maps (none yet). Change the settings?")

    def export_report(self, stem: str | os.PathLike[str]) -> list[Path]:
        """Write ``<stem>.csv`` and ``<stem>.md``: per label and map rule, the reader's hit
        rate beside the automatic one, over this review's verdicts with the current
        model and settings (:func:`~napari_correlax.evaluate.report.reader_report`)."""
        from .report import reader_report, write_table

        if self.store is None:
            raise CorrelaxError("open a data set first: there are no verdicts to report")
        rows = [r for r in self.store.rows() if r.settings == self.key]
        if not rows:
            raise CorrelaxError("no verdicts with the current model and settings yet")
        return write_table(reader_report(rows), Path(stem).with_suffix(""))

    def status(self, record: Any) -> str:
        """``bad``, ``normal``, ``none``, ``open``, ``partial`` or ``done`` (module docstring)."""
        if record.image_id in self.bad:
            return "bad"
        rows = [r for r in self.store.for_image(record.image_id, self.key) if not r.is_mark] \
            if self.store is not None else []
        if not rows:
            return "none" if lesion_labels(record.labels) else "normal"
        if any(all(r.reader_verdict for r in rows if r.kind == kind)
               for kind in {r.kind for r in rows}):
            return "done"  # every line of a map kind the reader judged on
        return "partial" if any(r.reader_verdict for r in rows) else "open"

    def describe(self, k: int) -> tuple[str, str]:
        """List line and tooltip of the image at index ``k``."""
        record = self.records[k]
        labels = ", ".join(lesion_labels(record.labels)) or "no finding"
        text = (f"{SYMBOLS[self.status(record)]} {k + 1}. {record.image_id[:12]} "
                f"{record.laterality} {record.view} · {labels}")
        tip = self.bad.get(record.image_id, f"study {record.study_id}\nimage {record.image_id}")
        return text, tip

    def summary(self, checking: bool = False) -> str:
        """One line: how many listed images are reviewed, to review, missing or unreadable."""
        status = [self.status(r) for r in self.records]
        done = status.count("done")
        todo = sum(status.count(s) for s in TO_REVIEW)
        bad = status.count("bad")
        more = " (checking files…)" if checking else ""
        return (f"{len(self.records)} images: {done} reviewed, {todo} to review, "
                f"{bad} missing or unreadable{more}.")

    def to_check(self) -> list[Any]:
        """Images of the data set whose files are not known to be bad yet."""
        images = self.index.images if self.index is not None else []
        return [r for r in images if r.image_id not in self.bad]

    def mark_bad(self, image_id: str, reason: str) -> int:
        """Mark an image's file unusable; its list index (-1 when not listed)."""
        self.bad[image_id] = reason
        return self.position_of(image_id)

    # -- computing ---------------------------------------------------------------------
    def wanted(self) -> list[Any]:
        """Images to compute, most urgent first: the current one, then the next one
        (prefetched while the reader looks at the current one). Loaded and bad images
        are left out; nothing while the review is halted."""
        if self.halted:
            return []
        return [r for r in (self.current, self.neighbour(1)) if r is not None
                and r.image_id not in self.loaded and r.image_id not in self.bad]

    def accept(self, outcome: LoadedImage | JobFailure) -> str:
        """Take a finished load; the id of the image whose status changed ("" if none).

        A failure of the image file marks it bad; any other failure halts the review
        (:attr:`halted`) until :meth:`configure` changes something. Maps made under
        another key than the current one are dropped. Loaded maps are kept for the
        current image and its two neighbours only.
        """
        if isinstance(outcome, JobFailure):
            if not outcome.bad_image:
                self.halted = outcome.message
                return ""
            image_id = outcome.image_id
            self.bad[image_id] = outcome.message
        else:
            image_id = outcome.record.image_id
            if self.key and outcome.key != self.key:
                return ""
            self.loaded[image_id] = outcome
            self.previews.pop(image_id, None)
            self.key = outcome.key
        self._forget_far()
        return image_id

    def remember_preview(self, shown: LoadedImage) -> bool:
        """Keep what a load showed before its maps were done (the image, then its
        prediction maps); True when it is kept: not once the maps are loaded, not
        prediction maps made under another key, never the image alone over its
        prediction maps."""
        image_id = shown.record.image_id
        earlier = self.previews.get(image_id)
        if image_id in self.loaded or (shown.result is not None and self.key
                                       and shown.key != self.key):
            return False
        if shown.result is None and earlier is not None and earlier.result is not None:
            return False
        self.previews[image_id] = shown
        self._forget_far()
        return True

    def _forget_far(self) -> None:
        """Drop maps and previews of images other than the current one and its neighbours."""
        keep = {r.image_id for r in (self.current, self.neighbour(1), self.neighbour(-1)) if r}
        for store in (self.loaded, self.previews):
            for old in [i for i in store if i not in keep]:
                del store[old]

    # -- verdicts ----------------------------------------------------------------------
    def automatic_verdicts(self, loaded: LoadedImage) -> list[Verdict]:
        """The pointing-game verdicts of a loaded image (an image without findings: its
        :func:`~.pointing.normal_verdicts`), added to (or refreshed in) the verdict file
        under the image's key; the reader's answers are kept. The peak flags come from
        the second mask draw a ``correlax evaluate`` run stored in the cache (empty when
        the maps were made without it)."""
        from ..maps.cache import ResultCache
        from .image_work import stored_redraw

        record = loaded.record
        rules = rules_for(get_method(self.settings.method).kinds)
        if lesion_labels(record.labels):
            root = self.cache_root
            info = None if root is None else ResultCache(root, loaded.key).load_info(
                record.image_id)
            verdicts = pointing_verdicts(loaded.result, record.boxes, record.image_id,
                                         rules=rules, redraw=stored_redraw(info))
        else:
            verdicts = normal_verdicts(loaded.result, record.image_id, rules=rules)
        if self.store is not None:
            self.store.add_automatic(verdicts, study_id=record.study_id, split=record.split,
                                     model=loaded.model_name, settings=loaded.key)
        return verdicts

    def set_view(self, kind: str) -> None:
        """Judge the maps of ``kind`` (``prediction``, ``correlation``, …) from now on."""
        self.view = kind

    def _image_rows(self) -> list[VerdictRow]:
        record = self.current
        if record is None or self.store is None:
            return []
        return self.store.for_image(record.image_id, self.key)

    def viewed_kind(self) -> str:
        """:attr:`view` when the current image has verdicts on that kind, else the first
        kind it has verdicts on (a prediction-only run has no correlation rows)."""
        kinds = [r.kind for r in self._image_rows() if not r.is_mark]
        return self.view if self.view in kinds or not kinds else kinds[0]

    def findings(self) -> list[Finding]:
        """The verdict table of the current image under the current key: one
        :class:`Finding` per label judged on :meth:`viewed_kind`, then the false positives
        marked on that kind's maps."""
        kind = self.viewed_kind()
        rows = self._image_rows()
        by_label: dict[str, list[VerdictRow]] = {}
        for row in rows:
            if not row.is_mark and row.kind == kind:
                by_label.setdefault(row.label, []).append(row)
        out = [Finding(label, kind, members) for label, members in by_label.items()]
        out += [Finding(r.label, kind, [r]) for r in rows if r.is_mark and r.kind == kind]
        return out

    def rows(self) -> list[Finding]:
        """The lines of the verdict table (:meth:`findings`)."""
        return self.findings()

    def first_open_row(self) -> int:
        """The first line without a reader verdict (0 when all have one)."""
        return next((k for k, r in enumerate(self.findings()) if not r.reader_verdict), 0)

    def _finding(self, row: int) -> Finding:
        lines = self.findings()
        if self.store is None or not 0 <= row < len(lines):
            raise CorrelaxError("select a finding row first (maps must be ready)")
        return lines[row]

    def set_verdict(self, row: int, verdict: str) -> int:
        """Set the reader's verdict of line ``row`` (``""`` clears), saved at once.

        The verdict is stored on every pointing rule of the viewed kind. On a marked
        false positive, ``""`` takes the mark back (it is deleted). Returns the line to go
        on with: the next line without a verdict after this one, else this one. Raises
        CorrelaxError when there is no such line.
        """
        finding = self._finding(row)
        if finding.is_mark:
            if verdict:
                raise CorrelaxError("a marked false positive has no hit or miss: "
                                    "clear it to take the mark back")
            self.store.remove(finding.rows[0].key)
        else:
            for member in finding.rows:
                self.store.set_reader(member.key, verdict)
        lines = self.findings()
        row = min(row, max(len(lines) - 1, 0))
        return next((j for j in range(row + 1, len(lines)) if not lines[j].reader_verdict), row)

    def set_comment(self, row: int, text: str) -> bool:
        """Set the comment of line ``row`` (saved at once); True when it changed."""
        lines = self.findings()
        if self.store is None or not 0 <= row < len(lines) or lines[row].comment == text:
            return False
        for member in lines[row].rows:
            self.store.set_reader(member.key, None, text)
        return True

    def mark_false_positive(self, label: str, row: float, col: float) -> Finding:
        """Mark a false positive on the viewed map of ``label`` near ``(row, col)``
        (original image pixels, pixel centres), saved at once.

        The mark goes to the map's highest window within :data:`~.pointing.GROW_PX` of the
        point (a click lands near a peak, rarely on it). Raises CorrelaxError when the
        image's maps are not loaded, the map kind has no map of ``label``, or the map is not
        positive there (it passes none of the kind's pointing rules: a prediction below
        25 %, a correlation ≤ 0): a false positive is where a map points, not anywhere.
        """
        record = self.current
        loaded = self.loaded.get(record.image_id) if record is not None else None
        if loaded is None or loaded.result is None or self.store is None:
            raise CorrelaxError("the maps of this image are not ready yet")
        kind = self.viewed_kind()
        result = loaded.result
        values = result.get(kind)
        if values is None or values.ndim != 3 or label not in result.labels:
            raise CorrelaxError(f"this image has no {kind} map of {label!r}")
        values = values[result.label_index(label)]
        centres = result.grid.centres()
        near = (np.hypot(centres[..., 0] - row, centres[..., 1] - col) <= GROW_PX) \
            & result.window_mask
        if not near.any():
            raise CorrelaxError("no evaluated window near that point: click on the map")
        i, j = np.unravel_index(int(np.argmax(np.where(near, values, -np.inf))), near.shape)
        value = float(values[i, j])
        rules = rules_for([kind])
        if rules and not any(rule.passes(value) for rule in rules):
            bound = min(rules, key=lambda rule: rule.threshold)
            raise CorrelaxError(
                f"not marked: the {label} {kind} map is {value:.2f} there, not positive "
                f"({'>' if bound.strict else '≥'} {bound.threshold:g}): a false positive is "
                "marked where the shown map points")
        mark = self.store.add_mark(record.image_id, label, kind, float(centres[i, j, 0]),
                                   float(centres[i, j, 1]), value,
                                   study_id=record.study_id, split=record.split,
                                   model=loaded.model_name, settings=self.key)
        return Finding(label, kind, [mark])

    def marks(self) -> list[VerdictRow]:
        """Every false positive marked on the current image (all map kinds)."""
        return [r for r in self._image_rows() if r.reader_verdict == FALSE_POSITIVE]

    # -- reader state ------------------------------------------------------------------
    def state(self) -> ReaderState | None:
        """Where the reader is (None before an image is shown)."""
        if self.index is None or self.current is None:
            return None
        return ReaderState(data=str(self.index.root), split=self.split, filter=self.filter,
                           model=self.checkpoint or "", settings=self.settings.as_dict(),
                           image_id=self.current.image_id)

    def save_state(self) -> None:
        """Write :meth:`state` to the work folder (a failure is only logged: it is a hint)."""
        state = self.state()
        if state is None or self.work is None:
            return
        try:
            state.save(self.work / STATE_FILE)
        except OSError as exc:
            log.warning("could not save the reader state: %s", exc)
