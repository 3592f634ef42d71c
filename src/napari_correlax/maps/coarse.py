"""Coarse to fine CorRELAX: a first map at a coarse stride, then the requested map.

With :attr:`MapSettings.coarse_first <napari_correlax.maps.settings.MapSettings.coarse_first>`
:func:`~.image_explain.explain_steps` first runs the windows of the requested grid whose
grid indices are multiples of :data:`COARSE_FACTOR` in both directions: a grid of
``COARSE_FACTOR`` × the stride, the same origin, so its windows are windows of the final
grid. Each gets the mask floor (:attr:`~.settings.MapSettings.mask_floor`), the masks
every window of the final run gets first, and the coarse maps are yielded as a
:class:`MapPreview` event. The final run then carries those windows' statistics over
(:meth:`~.mask_engine.MaskEngine.carry_over`) instead of repeating their masks, so its
result is the one-pass result (same windows, same masks per window), up to float
rounding, and costs the same number of masked passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .mask_engine import MaskEngine, unmasked_pass
from .result import MapResult
from .runtime import Progress
from .stats import RunStats

if TYPE_CHECKING:
    from ..windows import WindowGrid
    from .runtime import Runtime
    from .settings import MapSettings
    from .sliding import PreparedImage, WindowFeeder

__all__ = ["COARSE_FACTOR", "CoarsePass", "MapPreview", "coarse_grid", "coarse_pass",
           "coarse_subset", "on_previews"]

#: The coarse grid's stride in units of the requested stride.
COARSE_FACTOR = 4


class MapPreview(Progress):
    """A progress event (stage ``"coarse map"``) carrying the coarse :class:`MapResult`
    in ``result``, for a viewer to draw while the final map is computed."""

    result: MapResult

    def __new__(cls, result: MapResult) -> MapPreview:
        event = super().__new__(cls, "coarse map", 1, 1)
        event.result = result
        return event


_R = TypeVar("_R")


def on_previews(steps: Generator[Any, None, _R], handle: Callable[[MapResult], Any]
                ) -> Generator[Any, None, _R]:
    """``steps`` with each :class:`MapPreview` handed to ``handle(coarse result)`` and
    replaced by what it returns (nothing when it returns None); returns what ``steps``
    returns."""
    while True:
        try:
            event = next(steps)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, MapPreview):
            event = handle(event.result)
            if event is None:
                continue
        yield event


@dataclass
class CoarsePass:
    """What the final run re-uses: ``local`` (positions in the tissue-window list ``todo``
    of the coarse windows), their unmasked ``h0``, ``y0`` and their mask ``engine``."""

    local: np.ndarray
    h0: np.ndarray
    y0: np.ndarray
    engine: MaskEngine


def coarse_subset(grid: WindowGrid, factor: int = COARSE_FACTOR) -> np.ndarray:
    """``(gy, gx)`` bool: the windows of ``grid`` on the coarse grid (indices ≡ 0 mod factor)."""
    gy, gx = grid.shape
    keep = np.zeros((gy, gx), dtype=bool)
    keep[::factor, ::factor] = True
    return keep


def coarse_grid(grid: WindowGrid, factor: int = COARSE_FACTOR) -> WindowGrid:
    """The grid of :func:`coarse_subset`: same window and origin, ``factor`` × the stride."""
    gy, gx = grid.shape
    return dataclasses.replace(grid, stride=grid.stride * factor,
                               shape=(-(-gy // factor), -(-gx // factor)))


def _relabel(events: Generator[Progress, None, Any], prefix: str
             ) -> Generator[Progress, None, Any]:
    """``events`` with ``prefix`` before each stage name; returns what ``events`` returns."""
    try:
        event = next(events)
        while True:
            yield event._replace(stage=f"{prefix} {event.stage}")
            event = next(events)
    except StopIteration as stop:
        return stop.value


def coarse_pass(prep: PreparedImage, feeder: WindowFeeder, model: Any, rt: Runtime,
                settings: MapSettings, todo: np.ndarray
                ) -> Generator[Progress, None, CoarsePass]:
    """Run the coarse windows among ``todo`` (flat indices of the tissue windows) at the
    mask floor; yields ``"coarse window"`` and ``"coarse masks"`` progress, then a
    :class:`MapPreview` (when the coarse grid holds tissue windows)."""
    keep = coarse_subset(prep.grid).ravel()[todo]
    local = np.flatnonzero(keep)
    h0, y0 = yield from _relabel(unmasked_pass(feeder, todo[local]), "coarse")
    floor = settings.mask_floor
    # Keys are the windows' places in ``todo``, as in the final run (same mask streams);
    # no calibration here: the preview's intervals use the design's bound.
    engine = MaskEngine(model, rt, lambda idx: feeder.batch(todo[local[np.asarray(idx)]]),
                        h0, y0, np.full(len(local), floor), settings, size=prep.grid.window,
                        keys=local, calibrate=[])
    total, done = engine.total_passes(), 0
    yield Progress("coarse masks", 0, total)
    for step in engine.steps():
        done += step
        yield Progress("coarse masks", min(done, total), total)
    if len(local):
        yield MapPreview(coarse_result(prep, list(model.labels), todo[local], y0, engine))
    return CoarsePass(local, h0, y0, engine)


def coarse_result(prep: PreparedImage, labels: list[str], flat: np.ndarray, y0: np.ndarray,
                  engine: MaskEngine) -> MapResult:
    """The coarse maps: prediction, correlation, product, distance and masks on
    :func:`coarse_grid` (windows ``flat`` of the fine grid), smoothed with its kernel."""
    grid = coarse_grid(prep.grid)
    cy, cx = grid.shape
    fy, fx = np.unravel_index(flat, prep.grid.shape)
    cells = (fy // COARSE_FACTOR) * cx + fx // COARSE_FACTOR
    n_labels = len(labels)
    rho, _, _ = engine.statistics(np.arange(len(flat)))
    pred = np.zeros((n_labels, cy * cx), dtype=np.float64)
    corr = np.zeros_like(pred)
    dist = np.zeros(cy * cx)
    used = np.zeros(cy * cx, dtype=np.int64)
    pred[:, cells], corr[:, cells] = y0.T, rho[:, 1:].T
    dist[cells], used[cells] = rho[:, 0], engine.moments.n
    pred, corr = pred.reshape(n_labels, cy, cx), corr.reshape(n_labels, cy, cx)
    active = np.zeros(cy * cx, dtype=bool)
    active[cells] = True
    return MapResult(
        labels=labels, grid=grid, prediction=grid.smooth(pred),
        window_mask=active.reshape(cy, cx), spacing_mm=prep.spacing_mm,
        correlation=grid.smooth(corr), product=grid.smooth(pred * corr),
        distance=grid.smooth(dist.reshape(cy, cx)), masks_used=used.reshape(cy, cx),
        meta=dict(prep.meta),
        stats=RunStats(method="correlax", windows_total=cy * cx,
                       windows_evaluated=len(flat), masks_total=int(used.sum()),
                       masks_min=int(used[cells].min(initial=0)),
                       masks_max=int(used[cells].max(initial=0))),
    )
