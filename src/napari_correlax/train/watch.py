"""Watching a ``correlax train`` run from another process, without Qt.

The napari training dock starts ``python -m napari_correlax.cli train ... --progress
json`` as a child process (:func:`train_command` of the classifier's
:class:`~.settings.TrainConfig`; for GMIC's :class:`~napari_correlax.gmic.config.
GMICTrainConfig`, ``correlax gmic train``, whose events have the same kinds and fields),
reads its standard output one JSON object per line (:class:`EventLines`; the objects are
:meth:`~napari_correlax.train.TrainEvent.as_json`) and shows what :class:`TrainWatch`
makes of them: the per-epoch history (losses and validation F1 to plot), warnings, the
epoch and file of the chosen checkpoint, the status line and how the run ended, in the
dock's own words (:func:`in_dock_terms`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..labels import HEADLINE_LABELS
from .settings import command_line

__all__ = [
    "CHECKPOINT_FILES",
    "DOCK_TERMS",
    "PLOTTED_LABELS",
    "SELECTIONS",
    "EventLines",
    "RunEnd",
    "TrainWatch",
    "in_dock_terms",
    "progress_of",
    "read_history",
    "train_command",
]

#: "Keep" choices: (shown text, ``--select`` value).
SELECTIONS = (("best on validation share", "best"), ("last epoch", "last"))
#: Checkpoint file each ``--select`` value leaves in the run folder.
CHECKPOINT_FILES = {"best": "best.safetensors", "last": "last.safetensors"}
#: Labels whose validation F1 is plotted beside the macro F1.
PLOTTED_LABELS = HEADLINE_LABELS
#: Lines of the child's standard error kept for the failure message.
STDERR_LINES = 40


#: Command-line wording in errors of the training commands, and the same in the terms
#: of the training dock's controls.
DOCK_TERMS = (("--select last", "Keep: last epoch"), ("--select best",
               "Keep: best on validation share"), ("--out", "Output"),
              ("--fresh", "start over"), ("--pretrained none", "Pretrained: none"),
              ("--pretrained FILE", "Pretrained: a weights file"), ("--init", "Initial weights"))


def in_dock_terms(message: str) -> str:
    """``message`` with the command-line options it names replaced by the dock's controls
    (:data:`DOCK_TERMS`)."""
    for flag, control in DOCK_TERMS:
        message = message.replace(flag, f"“{control}”")
    return message


def train_command(settings: Any, always: Sequence[str] = ()) -> list[str]:
    """The child process's argv (``sys.executable`` first) that trains with ``settings``
    (classifier or GMIC: the class's ``command`` names the action) and prints JSON events;
    the options named in ``always`` are written even at their defaults
    (:func:`~.settings.command_line`)."""
    return [sys.executable, "-m", "napari_correlax.cli", *settings.command,
            *command_line(settings, always), "--progress", "json"]


def read_history(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The epochs already in a run folder's ``metrics.jsonl`` (unreadable lines skipped)."""
    log_file = Path(out) / "metrics.jsonl"
    if not log_file.is_file():
        return []
    rows = []
    for line in log_file.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


class EventLines:
    """Splits a child's standard output, as it arrives in pieces, into JSON events.

    Only complete lines holding a JSON object are events; other lines (a library's
    print, a torchrun banner) are skipped.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The events completed by ``data``."""
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        events = []
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if not text.startswith("{"):
                continue
            try:
                event = json.loads(text)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def progress_of(event: dict[str, Any]) -> tuple[str, int, int] | None:
    """``(Qt progress format, done, total)`` of a ``cache``, ``batch`` or ``done`` event
    (``%v`` done, ``%m`` total); None for other events."""
    kind = event.get("event")
    done, total = int(event.get("done", 0)), max(int(event.get("total", 1)), 1)
    if kind == "cache":
        return ("caching images %v/%m", done, total)
    if kind == "batch":
        return (f"epoch {event['epoch']}/{event['epochs']}: batch %v/%m "
                f"(loss {event['loss']:.4f})", done, total)
    if kind == "done":
        return ("done", total, total)
    return None


@dataclass(frozen=True)
class RunEnd:
    """How a run ended: the status line, and ``error`` (why it failed) when it did."""

    status: str
    error: str = ""
    finished: bool = False


class TrainWatch:
    """What one run's events say (see the module docstring).

    Attributes: ``out`` (run folder), ``select`` (``best`` or ``last``), ``history``
    (epoch events, earlier epochs of a resumed run first), ``warnings``,
    ``chosen_epoch`` (0: none yet), ``chosen_checkpoint`` (path, once it exists).
    """

    def __init__(self, settings: Any = None) -> None:
        """``settings``: the run's classifier or GMIC training settings (``out``,
        ``select``, ``fresh``); None before any run."""
        self.out = Path(settings.out) if settings is not None else None
        self.select = settings.select if settings is not None else "best"
        resumed = settings is not None and not settings.fresh
        self.history: list[dict[str, Any]] = read_history(settings.out) if resumed else []
        self.warnings: list[str] = []
        self.stderr: list[str] = []
        self.chosen_checkpoint: str | None = None
        marked = [h for h in self.history if self.select == "last" or h.get("best")]
        self.chosen_epoch = max((int(h["epoch"]) for h in marked), default=0)

    @property
    def last_epoch(self) -> int:
        """The last finished epoch (0: none)."""
        return max((int(h["epoch"]) for h in self.history), default=0)

    def handle(self, event: dict[str, Any]) -> str | None:
        """Take one event; the new status line, if the event changes it."""
        kind = event.get("event")
        if kind == "start":
            split = (event.get("selection") or {}).get("split")
            if "positives" in event:  # a GMIC run: image-level labels
                counts = ", ".join(f"{n} {lab}" for lab, n in event["positives"].items())
                return (f"GMIC on {event['train_images']} images ({counts}, "
                        f"{event['negatives']} negative), patches by {event['train_cam']}, "
                        f"on {event['device']}; starting weights: "
                        f"{event.get('pretrained', 'none')}")
            return (f"{event['train_samples']} training samples, {event['val_samples']} "
                    f"validation samples{f' ({split})' if split else ''} on "
                    f"{event['device']}; starting weights: {event.get('pretrained', 'none')}")
        if kind == "warning":
            self.warnings.append(in_dock_terms(str(event.get("message", ""))))
        elif kind == "epoch":
            self.history = [h for h in self.history if h.get("epoch") != event.get("epoch")]
            self.history.append(event)
            if event.get("best") or self.select == "last":
                self.chosen_epoch = int(event["epoch"])
            f1 = event.get("macro_f1")
            return (f"epoch {event['epoch']}/{event['epochs']}: train loss "
                    f"{event['train_loss']:.4f}" + ("" if f1 is None else
                    f", val loss {event['val_loss']:.4f}, macro F1 {f1:.3f}"))
        elif kind == "done":
            self.chosen_checkpoint = event.get("checkpoint", event.get("best"))
            self.chosen_epoch = int(event.get("epoch", self.chosen_epoch))
        return None

    def add_stderr(self, text: str) -> None:
        """Keep the last :data:`STDERR_LINES` non-blank lines of the child's standard error."""
        self.stderr = (self.stderr + [x for x in text.splitlines() if x.strip()])[-STDERR_LINES:]

    def find_checkpoint(self) -> str | None:
        """The chosen checkpoint, picked up once the run folder holds it."""
        if self.out is not None:
            chosen = self.out / CHECKPOINT_FILES[self.select]
            if chosen.is_file():
                self.chosen_checkpoint = str(chosen)
        return self.chosen_checkpoint

    def end(self, code: int, crashed: bool, stopping: bool) -> RunEnd:
        """How the run ended, from the exit code, whether it crashed (killed) and whether
        Stop asked it to end."""
        if stopping:
            return RunEnd(f"stopped after epoch {self.last_epoch}; Start resumes the run")
        if code == 0 and not crashed:
            which = "last" if self.select == "last" else "best"
            return RunEnd(f"finished: {which} epoch {self.chosen_epoch} → "
                          f"{self.chosen_checkpoint}", finished=True)
        reason = in_dock_terms(self.stderr[-1]) if self.stderr else ""
        if crashed:
            reason = "the training process was killed (out of memory?) " + reason
        return RunEnd(f"failed (exit {code}): {reason}", error=reason or f"exit status {code}")

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """``(epoch, value)`` pairs to plot, by epoch: ``train_loss``, ``val_loss``,
        ``macro_f1`` and the validation F1 of each of :data:`PLOTTED_LABELS` (empty
        lists for what the events do not hold)."""
        rows = sorted(self.history, key=lambda h: h["epoch"])
        out = {name: [(h["epoch"], h[name]) for h in rows if h.get(name) is not None]
               for name in ("train_loss", "val_loss", "macro_f1")}
        for label in PLOTTED_LABELS:
            out[label] = [(h["epoch"], m["f1"]) for h in rows for m in h.get("metrics", [])
                          if m.get("label") == label]
        return out
