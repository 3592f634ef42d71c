"""The reader's verdicts: one CSV row per image × finding label × map rule (docs/method.md §10).

The test-set reader (and anyone scripting a review) keeps its verdicts in a
:class:`VerdictStore`, a CSV file with the columns :data:`COLUMNS`:

``image_id, study_id, split, label, map`` identify the row (``map`` is a pointing-game
rule name, e.g. ``prediction>=0.25``); ``boxes`` is how many boxes the label has in the
image; ``auto_verdict`` is the pointing game's ``hit``/``miss``; ``reader_verdict`` is the
reader's ``hit``/``miss``/``unsure`` (empty until set) and ``comment`` free text;
``max_value``, ``max_row``, ``max_col`` are the map's maximum and its location (window
centre, original image pixels, pixel-centre convention); ``inside`` whether that point
lies in a grown box; ``model`` the checkpoint's name; ``settings`` the key of the model
and map settings the maps came from (rows of different settings are different rows);
``time`` when the reader last changed the row (ISO 8601, UTC). For maps with confidence
intervals (the correlation map) ``ci``, ``nonzero``, ``runner_up``, ``runner_up_ci`` and
``separated`` say whether the maximum stands out from 0 and from the best other place
(:class:`~.pointing.Verdict`; the two flags from a second, independent mask draw at the
two windows, empty without one); they are empty for other maps, and files written before
these columns existed read with them empty.

Images without findings get rows labelled "No Finding" (a hit when the map raises no
alarm: :func:`~napari_correlax.evaluate.pointing.normal_verdicts`). A false positive the
reader marks on a map is a row of its own: ``map`` is ``<kind>@<row>,<col>`` (the map
kind and the marked maximum, original image pixels), ``reader_verdict`` is
``false positive``, ``auto_verdict`` is empty and ``max_value`` the map's value there
(:meth:`VerdictStore.add_mark`).

Safety: every change rewrites the whole file atomically (temp file + rename, fsync'd),
so a killed process leaves the file as it was after the last completed change, never a
half-written one. A file that exists but cannot be read is never overwritten: opening
it raises :class:`~napari_correlax.errors.CorrelaxError`.

:class:`ReaderState` is the small JSON beside it that remembers where the reader was
(data folder, split, filter, model, settings and the current image), so reopening
resumes there.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorrelaxError
from ..files import atomic_write_text

if TYPE_CHECKING:
    from .pointing import Verdict

__all__ = [
    "COLUMNS",
    "FALSE_POSITIVE",
    "READER_VERDICTS",
    "STATE_FILE",
    "VERDICTS_FILE",
    "ReaderState",
    "VerdictRow",
    "VerdictStore",
]

VERDICTS_FILE = "verdicts.csv"
STATE_FILE = "reader-state.json"
#: What a reader can answer (empty string: not judged yet).
READER_VERDICTS = ("hit", "miss", "unsure")
#: The reader verdict of a marked false positive (rows made by :meth:`VerdictStore.add_mark`).
FALSE_POSITIVE = "false positive"


@dataclass
class VerdictRow:
    """One row of the verdict CSV (see the module docstring for the columns)."""

    image_id: str
    study_id: str
    split: str
    label: str
    map: str
    boxes: int
    auto_verdict: str
    reader_verdict: str = ""
    comment: str = ""
    max_value: float = float("nan")
    max_row: float = float("nan")
    max_col: float = float("nan")
    inside: bool = False
    model: str = ""
    settings: str = ""
    time: str = ""
    ci: float = float("nan")
    nonzero: bool | None = None
    runner_up: float = float("nan")
    runner_up_ci: float = float("nan")
    separated: bool | None = None

    @property
    def is_mark(self) -> bool:
        """True for a false positive the reader marked (not a pointing-game row)."""
        return "@" in self.map

    @property
    def kind(self) -> str:
        """The map kind the row is about (``prediction`` for ``prediction>=0.25``)."""
        return self.map.split("@")[0].split(">")[0].split("<")[0]

    @property
    def key(self) -> tuple[str, str, str, str]:
        """``(image_id, label, map, settings)``: what makes a row unique."""
        return (self.image_id, self.label, self.map, self.settings)

    def as_csv(self) -> list[str]:
        """Cells in :data:`COLUMNS` order."""
        out = []
        for name in COLUMNS:
            value = getattr(self, name)
            if value is None:
                out.append("")
            elif isinstance(value, bool):
                out.append("true" if value else "false")
            elif isinstance(value, float):
                out.append("" if value != value else repr(round(value, 6)))
            else:
                out.append(str(value))
        return out


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(VerdictRow))
_REQUIRED = ("image_id", "label", "map", "auto_verdict", "reader_verdict")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _parse_row(values: dict[str, str], line: int, path: Path) -> VerdictRow:
    def number(name: str) -> float:
        text = values.get(name, "").strip()
        if not text:
            return float("nan")
        try:
            return float(text)
        except ValueError:
            raise CorrelaxError(f"line {line}: {name} {text!r} is not a number", path) from None

    def flag(name: str) -> bool | None:
        text = values.get(name, "").strip().lower()
        return None if not text else text == "true"

    verdict = values.get("reader_verdict", "").strip()
    if verdict and verdict not in (*READER_VERDICTS, FALSE_POSITIVE):
        raise CorrelaxError(f"line {line}: reader_verdict {verdict!r} is not one of "
                            f"{', '.join(READER_VERDICTS)}", path)
    try:
        boxes = int(values.get("boxes", "0") or 0)
    except ValueError:
        raise CorrelaxError(f"line {line}: boxes {values.get('boxes')!r} is not a whole number",
                            path) from None
    return VerdictRow(
        image_id=values["image_id"], study_id=values.get("study_id", ""),
        split=values.get("split", ""), label=values["label"], map=values["map"], boxes=boxes,
        auto_verdict=values.get("auto_verdict", ""), reader_verdict=verdict,
        comment=values.get("comment", ""), max_value=number("max_value"),
        max_row=number("max_row"), max_col=number("max_col"),
        inside=values.get("inside", "").strip().lower() == "true",
        model=values.get("model", ""), settings=values.get("settings", ""),
        time=values.get("time", ""), ci=number("ci"), nonzero=flag("nonzero"),
        runner_up=number("runner_up"), runner_up_ci=number("runner_up_ci"),
        separated=flag("separated"),
    )


class VerdictStore:
    """Verdict rows kept in a CSV file, rewritten atomically after every change.

    Args:
        path: the CSV file (created on the first change if it does not exist).
        load: read the rows already in the file (False: start empty; the first save
            replaces the file).

    Raises:
        CorrelaxError: the file exists but is not a verdict CSV (it is left untouched).
    """

    def __init__(self, path: str | os.PathLike[str], *, load: bool = True) -> None:
        self.path = Path(path)
        self._rows: dict[tuple[str, str, str, str], VerdictRow] = {}
        if load and self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CorrelaxError(f"cannot read the verdict file ({exc})", self.path) from None
        if not text.strip():
            return
        reader = csv.DictReader(io.StringIO(text))
        absent = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if absent:
            raise CorrelaxError("not a verdict file: missing column(s) " + ", ".join(absent),
                                self.path)
        try:
            for values in reader:
                row = _parse_row({k: (v or "") for k, v in values.items() if k}, reader.line_num,
                                 self.path)
                self._rows[row.key] = row
        except csv.Error as exc:
            raise CorrelaxError(f"line {reader.line_num}: not readable as CSV ({exc})",
                                self.path) from None

    # -- reading -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[VerdictRow]:
        """All rows, in the order they were first added."""
        return list(self._rows.values())

    def get(self, key: tuple[str, str, str, str]) -> VerdictRow | None:
        """The row with this :attr:`VerdictRow.key`, if any."""
        return self._rows.get(key)

    def for_image(self, image_id: str, settings: str | None = None) -> list[VerdictRow]:
        """Rows of one image (of one settings key when given), in insertion order."""
        return [r for r in self._rows.values()
                if r.image_id == image_id and (settings is None or r.settings == settings)]

    def status(self, image_id: str, settings: str | None = None) -> str:
        """``"none"`` (no rows yet), ``"open"``, ``"partial"`` or ``"done"`` (all judged)."""
        rows = [r for r in self.for_image(image_id, settings) if not r.is_mark]
        judged = sum(1 for r in rows if r.reader_verdict)
        if not rows:
            return "none"
        if judged == 0:
            return "open"
        return "done" if judged == len(rows) else "partial"

    # -- changing ----------------------------------------------------------------------
    def add_automatic(
        self,
        verdicts: Iterable[Verdict],
        *,
        study_id: str = "",
        split: str = "",
        model: str = "",
        settings: str = "",
        save: bool = True,
    ) -> list[VerdictRow]:
        """Add or refresh rows from pointing-game :class:`~.pointing.Verdict` s.

        A row that already exists keeps its reader verdict, comment and time; only the
        automatic columns are refreshed. The file is rewritten when something changed
        (unless ``save`` is False: batch use, call :meth:`save` at the end). Returns the
        rows of these verdicts.
        """
        out = []
        changed = False
        for v in verdicts:
            key = (v.image_id, v.label, v.rule, settings)
            row = self._rows.get(key)
            auto = {"study_id": study_id, "split": split, "boxes": int(v.boxes),
                    "auto_verdict": "hit" if v.hit else "miss", "max_value": float(v.value),
                    "max_row": float(v.row), "max_col": float(v.col), "inside": bool(v.inside),
                    "model": model, "ci": float(v.ci), "nonzero": v.nonzero,
                    "runner_up": float(v.runner_up), "runner_up_ci": float(v.runner_up_ci),
                    "separated": v.separated}
            if row is None:
                row = VerdictRow(image_id=v.image_id, label=v.label, map=v.rule,
                                 settings=settings, **auto)
                self._rows[key] = row
                changed = True
            else:
                for name, value in auto.items():
                    if _differs(getattr(row, name), value):
                        setattr(row, name, value)
                        changed = True
            out.append(row)
        if changed and save:
            self.save()
        return out

    def set_reader(
        self, key: tuple[str, str, str, str], verdict: str | None = None,
        comment: str | None = None,
    ) -> VerdictRow:
        """Set the reader's verdict (``hit``/``miss``/``unsure``, ``""`` to clear) and/or comment.

        Saves at once; if the file cannot be written the row keeps its old values and the
        error propagates. Raises CorrelaxError for an unknown row or verdict.
        """
        row = self._rows.get(key)
        if row is None:
            raise CorrelaxError(f"no verdict row {key}", self.path)
        if verdict is not None and verdict not in (*READER_VERDICTS, ""):
            raise CorrelaxError(f"verdict must be one of {', '.join(READER_VERDICTS)}, "
                                f"not {verdict!r}")
        new_verdict = row.reader_verdict if verdict is None else verdict
        new_comment = row.comment if comment is None else comment
        if (new_verdict, new_comment) != (row.reader_verdict, row.comment):
            before = (row.reader_verdict, row.comment, row.time)
            row.reader_verdict, row.comment, row.time = new_verdict, new_comment, _now()
            try:
                self.save()
            except BaseException:
                row.reader_verdict, row.comment, row.time = before
                raise
        return row

    def add_mark(self, image_id: str, label: str, kind: str, row: float, col: float,
                 value: float, *, study_id: str = "", split: str = "", model: str = "",
                 settings: str = "") -> VerdictRow:
        """Record a false positive the reader marked on a ``kind`` map of ``label`` at
        ``(row, col)`` (original image pixels), saved at once. Marking the same place
        twice keeps one row."""
        mark = VerdictRow(image_id=image_id, study_id=study_id, split=split, label=label,
                          map=f"{kind}@{row:.0f},{col:.0f}", boxes=0, auto_verdict="",
                          reader_verdict=FALSE_POSITIVE, max_value=float(value),
                          max_row=float(row), max_col=float(col), model=model,
                          settings=settings, time=_now())
        if mark.key not in self._rows:
            self._rows[mark.key] = mark
            try:
                self.save()
            except BaseException:
                del self._rows[mark.key]
                raise
        return self._rows[mark.key]

    def remove(self, key: tuple[str, str, str, str]) -> None:
        """Delete a row (a mark the reader takes back), saved at once."""
        row = self._rows.pop(key, None)
        if row is None:
            return
        try:
            self.save()
        except BaseException:
            self._rows[key] = row
            raise

    def save(self) -> Path:
        """Rewrite the CSV atomically with all rows."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self._rows.values():
            writer.writerow(row.as_csv())
        return atomic_write_text(self.path, buf.getvalue())


def _differs(old: Any, new: Any) -> bool:
    """Whether a stored value and a new one differ (floats as written: 6 decimals)."""
    if isinstance(new, float):
        a, b = float(old), float(new)
        if a != a or b != b:
            return (a == a) != (b == b)
        return round(a, 6) != round(b, 6)
    return old != new


@dataclass
class ReaderState:
    """Where a reader was: enough to reopen the same list at the same image."""

    data: str = ""
    split: str = "test"
    filter: str = ""
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    image_id: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReaderState | None:
        """The state saved at ``path``; None when absent or unreadable (it is only a hint)."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in doc.items() if k in known})
        except TypeError:
            return None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the state as JSON, atomically."""
        return atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")
