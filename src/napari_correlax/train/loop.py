"""The one fit loop shared by the classifier (docs/method.md §5) and GMIC (§9).

:func:`fit_steps` runs a training job and yields its :class:`TrainEvent` s; a model family
supplies what differs as a :class:`FitTask` (its data sets, the loss of a batch, the
epoch's record with its validation, the checkpoints to save). The loop owns the rest,
in this order:

1. the run folder's resume state (:func:`read_resume`; other settings are refused);
2. the ``start`` event and the family's warnings;
3. the image cache, each rank its share, then a barrier;
4. Adam, the family's learning-rate schedule, the sampler's generator (seeded from the
   seed and the family's salt), each rank's random streams, and a resume's saved state;
5. ``DistributedDataParallel`` around the family's network when the process group
   (:func:`~napari_correlax.distributed.join`, called ``group`` everywhere) has several
   ranks;
6. ``config.json`` and ``run.json`` (rank 0, after the family cleared what an earlier
   run left);
7. every epoch: the family's batches, ``batch`` events, the per-batch sums reduced over
   the ranks, the family's record; then the resume state, the family's checkpoints and
   ``metrics.jsonl`` (rank 0, each file replaced atomically), a barrier and the
   ``epoch`` event;
8. the ``done`` event naming the chosen checkpoint.

``batch_size`` is the global batch: each rank takes ``⌈batch / world⌉``
(:func:`per_rank_batch`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..distributed import join
from ..errors import CorrelaxError
from ..files import atomic_write_text
from .state import (
    STATE_FILE,
    gather_rng_states,
    mix_seed,
    read_state,
    restore_state,
    save_state,
    seed_everything,
)

__all__ = [
    "Finish",
    "FitTask",
    "Resume",
    "Start",
    "TrainEvent",
    "fit_steps",
    "per_rank_batch",
    "read_resume",
]


@dataclass
class TrainEvent:
    """A progress event.

    ``kind``: ``"start"`` (data summary, ``selection`` and ``pretrained``),
    ``"warning"`` (something the user should know, in ``data["message"]``: no ImageNet
    weights found, validation on the test split), ``"cache"`` (images fused so far),
    ``"batch"`` (batches of the current epoch done), ``"epoch"`` (an epoch finished:
    ``data`` holds its metrics record, also written to ``metrics.jsonl``) or
    ``"done"`` (``data["checkpoint"]``: the chosen checkpoint, ``data["epoch"]``: its
    epoch). ``done``/``total`` count what ``kind`` names.
    """

    kind: str
    done: int
    total: int
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """One JSON-able object: ``{"event": kind, "done", "total", **data}``."""
        return {"event": self.kind, "done": self.done, "total": self.total, **self.data}


@dataclass
class Resume:
    """A run folder's resume state: the metadata ``doc`` and the ``tensors`` of
    ``last.train.safetensors`` (:mod:`.state`); both empty for a fresh start."""

    doc: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """True when the run continues a saved one."""
        return bool(self.doc)


@dataclass
class Start:
    """What a family tells at the start: the ``start`` event's fields (after ``run``,
    ``device`` and ``world_size``) and the warnings to yield after it."""

    data: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Finish:
    """The run's outcome for the ``done`` event: the chosen checkpoint and its epoch,
    the best-epoch and last-epoch files (None where there is none) and the selection."""

    checkpoint: Path | None
    epoch: int
    best: Path | None
    last: Path | None
    selection: dict[str, Any]

    def event_data(self) -> dict[str, Any]:
        """The ``done`` event's fields."""
        def text(p: Path | None) -> str | None:
            return str(p) if p else None

        return {"checkpoint": text(self.checkpoint), "epoch": self.epoch,
                "selection": self.selection, "best": text(self.best),
                "last": text(self.last), "best_epoch": self.epoch}


class FitTask(Protocol):
    """A model family's part of a run (see the module notes for the loop's part).

    ``settings``: a frozen settings dataclass with ``out``, ``epochs``, ``batch_size``,
    ``lr``, ``seed``, ``device``, ``threads``, ``workers``, ``fresh`` and ``as_dict()``.
    ``state_format``: the resume file's format name; ``run_keys``: the settings a resume
    must not change; ``sampler_salt``: mixed into the seed of the sampler's generator.
    ``model``: the model being trained (set by :meth:`start`).
    """

    settings: Any
    state_format: str
    run_keys: tuple[str, ...]
    sampler_salt: int
    model: torch.nn.Module

    def load(self) -> None:
        """Read the data set and build the data sets; CorrelaxError when unusable."""

    def upgrade(self, saved: dict[str, Any]) -> dict[str, Any]:
        """Saved settings of older versions in today's form (for the resume check)."""

    def start(self, resume: Resume) -> Start:
        """Build :attr:`model` (random streams seeded), load starting weights when not
        resuming; the start event's fields and warnings."""

    def cache(self, rank: int, world_size: int) -> Iterator[tuple[int, int]]:
        """Prepare this rank's share of the image cache, yielding ``(done, total)``."""

    def network(self) -> torch.nn.Module:
        """The module called on a batch (wrapped in DDP when distributed)."""

    def schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """The learning-rate scheduler (stepped once per epoch), or None."""

    def restore(self, doc: dict[str, Any]) -> None:
        """Take the family's own fields of a resumed state (e.g. the best score)."""

    def begin(self, out: Path, resumed: bool) -> dict[str, Any]:
        """Rank 0, before the first epoch: clear what an earlier run left in ``out`` that
        is not this run's; the contents of ``run.json``."""

    def batches(self, epoch: int, sampler: torch.Generator, rank: int, world_size: int
                ) -> tuple[Any, list[int]]:
        """The training data set, set to ``epoch``, and this rank's sample order."""

    def batch_loss(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, list[float]]:
        """The loss of a batch and the sums it adds to the epoch's totals."""

    def record(self, epoch: int, sums: torch.Tensor, lr: float, t0: float, group: Any
               ) -> dict[str, Any]:
        """The epoch's metrics record from the sums reduced over the ranks (``lr``: the
        epoch's learning rate; ``t0``: its start, ``time.perf_counter()``); validation
        on rank 0 (``group.main``)."""

    def state_info(self) -> dict[str, Any]:
        """The family's fields of the resume state."""

    def save(self, out: Path, epoch: int, record: dict[str, Any]) -> None:
        """Write the epoch's checkpoints (rank 0)."""

    def finish(self, out: Path) -> Finish:
        """The chosen checkpoint once the last epoch is done."""


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Samples per rank and step for a global batch: ``⌈batch / world⌉``."""
    return -(-int(batch_size) // int(world_size))


def read_resume(out: Path, task: FitTask) -> Resume:
    """The run folder's resume state, or an empty one (fresh start, or ``fresh`` set).

    Raises CorrelaxError when the folder holds a run with other settings (any of the
    task's ``run_keys``), naming each change.
    """
    path = out / STATE_FILE
    if task.settings.fresh or not path.is_file():
        return Resume()
    doc, tensors = read_state(path, task.state_format)
    saved = task.upgrade(dict(doc.get("config", {})))
    current = task.settings.as_dict()
    changed = [k for k in task.run_keys if saved.get(k) != current.get(k)]
    if changed:
        raise CorrelaxError(
            "run folder holds a run with other settings (" + ", ".join(
                f"{k}: {saved.get(k)!r} there, {current.get(k)!r} now" for k in changed)
            + "); choose another --out or pass --fresh", out)
    return Resume(doc, tensors)


@dataclass
class _Fit:
    """The optimisation state of a run: network (maybe DDP), Adam, schedule, sampler,
    the metric history and the first epoch to run."""

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: torch.Generator
    history: list[dict[str, Any]]
    first_epoch: int


def _prepare(task: FitTask, resume: Resume, group: Any) -> _Fit:
    """Step 4 and 5 of the module notes."""
    s = task.settings
    model = task.model
    model.to(group.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    scheduler = task.schedule(optimizer)
    sampler = torch.Generator().manual_seed(mix_seed(s.seed, task.sampler_salt))
    seed_everything(mix_seed(s.seed, group.rank))
    history: list[dict[str, Any]] = []
    first = 1
    if resume.active:
        restore_state(resume.doc, resume.tensors, model, optimizer, scheduler, sampler,
                      group.rank, group.world_size)
        task.restore(resume.doc)
        history = list(resume.doc.get("history", []))
        first = int(resume.doc["epoch"]) + 1
    net = task.network()
    if group.enabled:
        from torch.nn.parallel import DistributedDataParallel

        cuda = group.device.startswith("cuda")
        net = DistributedDataParallel(net, device_ids=[group.local_rank] if cuda else None)
    return _Fit(net, optimizer, scheduler, sampler, history, first)


def _write_json(path: Path, doc: dict[str, Any], indent: int) -> None:
    atomic_write_text(path, json.dumps(doc, indent=indent) + "\n")


def _train_epoch(task: FitTask, fit: _Fit, group: Any, epoch: int
                 ) -> Generator[TrainEvent, None, torch.Tensor]:
    """One pass over this rank's batches; returns the sums reduced over the ranks."""
    from torch.utils.data import DataLoader

    s, device = task.settings, group.device
    task.model.train()
    dataset, order = task.batches(epoch, fit.sampler, group.rank, group.world_size)
    loader = DataLoader(dataset, batch_size=per_rank_batch(s.batch_size, group.world_size),
                        sampler=order, num_workers=s.workers,
                        pin_memory=device.startswith("cuda"))
    sums: torch.Tensor | None = None
    n_batches = len(loader)
    for b, (x, y) in enumerate(loader):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        loss, row = task.batch_loss(fit.net, x, y)
        fit.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        fit.optimizer.step()
        added = torch.tensor(row, dtype=torch.float64)
        sums = added if sums is None else sums + added
        yield TrainEvent("batch", b + 1, n_batches, {
            "epoch": epoch, "epochs": s.epochs, "loss": float(loss.detach())})
    if fit.scheduler is not None:
        fit.scheduler.step()
    if sums is None:
        raise CorrelaxError("an epoch without a batch: no training samples on this process")
    if group.enabled:
        import torch.distributed as dist

        reduced = sums.to(device)
        dist.all_reduce(reduced)
        sums = reduced.cpu()
    return sums


def _save_epoch(task: FitTask, fit: _Fit, out: Path, epoch: int, record: dict[str, Any],
                group: Any) -> None:
    """The resume state, the family's checkpoints and ``metrics.jsonl`` (rank 0)."""
    rng_states = gather_rng_states(group)  # every rank takes part
    if not group.main:
        return
    save_state(out / STATE_FILE, task.model, fit.optimizer, fit.scheduler, fit.sampler,
               rng_states, {"epoch": epoch, "config": task.settings.as_dict(),
                            "history": fit.history, **task.state_info()},
               fmt=task.state_format)
    task.save(out, epoch, record)
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in fit.history))


def fit_steps(task: FitTask) -> Generator[TrainEvent, None, list[dict[str, Any]]]:
    """Train (or resume) ``task`` per the module notes, yielding progress events.

    Returns the per-epoch metric history (earlier epochs of a resumed run first).
    Raises CorrelaxError for unusable input (from the task) and for a run folder that
    holds a different run.
    """
    s = task.settings
    out = Path(s.out).expanduser()
    group = join(s.device)
    try:
        if s.threads:
            torch.set_num_threads(int(s.threads))
        task.load()
        resume = read_resume(out, task)
        seed_everything(s.seed)
        start = task.start(resume)
        yield TrainEvent("start", 0, s.epochs, {
            "run": str(out), "device": group.device, "world_size": group.world_size,
            **start.data, "resumed": resume.active})
        for message in start.warnings:
            yield TrainEvent("warning", 0, 0, {"message": message})
        for done, total in task.cache(group.rank, group.world_size):
            yield TrainEvent("cache", done, total)
        group.barrier()

        fit = _prepare(task, resume, group)
        if group.main:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "config.json", s.as_dict(), 2)
            _write_json(out / "run.json", task.begin(out, resume.active), 1)
        for epoch in range(fit.first_epoch, s.epochs + 1):
            t0 = time.perf_counter()
            lr = fit.optimizer.param_groups[0]["lr"]
            sums = yield from _train_epoch(task, fit, group, epoch)
            record = task.record(epoch, sums, lr, t0, group)
            fit.history = [h for h in fit.history if h.get("epoch") != epoch] + [record]
            _save_epoch(task, fit, out, epoch, record, group)
            group.barrier()
            yield TrainEvent("epoch", epoch, s.epochs, record)
        yield TrainEvent("done", s.epochs, s.epochs, task.finish(out).event_data())
        return fit.history
    finally:
        group.close()
