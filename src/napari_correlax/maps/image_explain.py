"""CorRELAX over a whole mammogram (docs/method.md §6–7): the image API.

:func:`explain_steps` runs the prediction pass over the window grid of §6, chooses the
windows in focus, streams every tissue window through the mask engine
(:class:`~.mask_engine.MaskEngine`) and returns the maps through the IoU kernel, with the
windows' RELAX maps stitched into original image pixels (:func:`stitch_relevance`).

Focus mode
    The prediction pass runs first. The ``focus_share`` of tissue windows with the highest
    lesion probability (any label but "No Finding"), and their 8-connected grid
    neighbours, get full CorRELAX (up to ``masks``, adaptive unless ``adaptive=False``);
    all other tissue windows get exactly ``min_masks`` (the floor at which, with the
    default design, correlations are as stable as the paper's Fig. 7 asks, so focus saves
    time above it, never below). The share is relative because a probability threshold
    is a property of each model, while the most suspicious windows of each image are
    what a reader looks at first (measurements: docs/method.md §7, *Choices*).
    ``focus=False`` gives every window full CorRELAX.

Uncertainty
    ``explain`` returns, per label, the half-widths of the 95 % confidence intervals of
    the windows' correlations (:mod:`.moments`) as the ``correlation_ci`` map, smoothed
    with the kernel's weights (a bound on the half-width of the smoothed map whatever the
    dependence between neighbouring windows). The intervals use the mask design's
    variance factor measured in the run (:mod:`.mask_engine`, "Design factor"), recorded
    in the result's statistics; a factor above 1 adds a warning there and on the console.
    ``relevance_uncertainty`` (H, W) is RELAX's uncertainty map, stitched like relevance.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..labels import lesion_label_indices
from .coarse import CoarsePass, coarse_pass, coarse_subset
from .mask_engine import MaskEngine, calibration_windows, unmasked_pass
from .masks import GRID_CELLS, MASKED_PROBABILITY, MIN_FACTOR_DOF
from .result import MapResult
from .runtime import Progress, drain, inference_model
from .settings import MapSettings
from .sliding import WindowFeeder, prepare_image
from .stats import RunStats

if TYPE_CHECKING:
    from ..io.image import Mammogram
    from ..models.protocols import ImageModelLike
    from .sliding import PreparedImage

__all__ = ["explain", "explain_steps", "focus_windows", "stitch_relevance"]


def focus_windows(
    prediction: np.ndarray, labels: Sequence[str], active: np.ndarray, share: float
) -> np.ndarray:
    """``(gy, gx)`` bool: windows in focus (docs/method.md §7 speed-up, see module docstring).

    ``prediction`` is the per-window (unsmoothed) ``(C, gy, gx)`` ŷ. Each tissue window
    (``active``) is scored by its highest lesion-label probability; the
    ``ceil(share · n)`` highest of the ``n`` tissue windows (all windows tied with the
    last one included) and their 8 grid neighbours with tissue are in focus.
    """
    from scipy.ndimage import binary_dilation

    score = prediction[lesion_label_indices(labels)].max(axis=0)
    n = int(active.sum())
    if n == 0 or share <= 0:
        return np.zeros_like(active, dtype=bool)
    k = min(n, max(1, math.ceil(float(share) * n)))
    cut = np.sort(score[active])[-k]
    seeds = (score >= cut) & active
    return binary_dilation(seeds, structure=np.ones((3, 3), dtype=bool)) & active


def explain_steps(
    image: Mammogram | np.ndarray, model: ImageModelLike, settings: MapSettings
) -> Generator[Progress, None, MapResult]:
    """CorRELAX maps over a whole mammogram (method §6–7), as a generator of progress events.

    Parameters
    ----------
    image:
        A :class:`~napari_correlax.io.Mammogram` or an H×W array (min–max scaled).
    model:
        A classifier with ``labels``, ``input_size``, ``normalize``, ``features``, ``head``
        (:class:`~napari_correlax.models.ImageModelLike`).
    settings:
        What it reads (:class:`~napari_correlax.maps.settings.MapSettings`): ``masks``,
        ``adaptive``, ``min_masks``, ``tolerance``, ``seed``, ``design`` (see
        :func:`~.correlax.explain_windows`); ``focus``, ``focus_share`` (focus mode,
        module docstring: full CorRELAX only for the share of windows with the highest
        lesion probability and their neighbours, the others get ``min_masks``);
        ``stride``, ``min_tissue``, ``reach`` (the window grid, as in
        :func:`~napari_correlax.maps.sliding.predict_steps`); ``mask_batch`` (masked
        forward passes per batch; ``batch_size`` is the batch of the unmasked prediction
        pass); ``device``, ``precision``, ``batch_size``, ``threads``
        (:meth:`~napari_correlax.maps.settings.MapSettings.runtime`).

    With ``coarse_first`` (:mod:`.coarse`) the windows of a grid of 4 × the stride run
    first at the mask floor (stages ``"coarse window"``, ``"coarse masks"``) and a
    :class:`~.coarse.MapPreview` event carries their maps; the final result is the same.

    Yields ``Progress("prepare", 1, 1)``, then ``Progress("window", done, total)`` for the
    prediction pass, then ``Progress("masks", done, total)`` counted in masked forward
    passes (a window that stops early adds its unused passes, so ``done`` ends at
    ``total``). Stopping the iteration cancels between batches without leaving state
    behind. Returns a :class:`MapResult` with every map filled (see
    :mod:`napari_correlax.maps.result`): grid maps through the normalised IoU kernel
    over the evaluated windows (docs/method.md §6; NaN where none reaches),
    ``masks_used`` raw (0 for skipped windows), ``relevance`` overlap-averaged over the
    evaluated windows in original image pixels (0 elsewhere), and in ``extra`` the
    ``correlation_ci`` map: per label, the half-width of the 95 % confidence interval of
    the ``correlation`` map's value at each window (module docstring, "Uncertainty").
    """
    s = settings
    min_masks = s.mask_floor
    rt = s.runtime()
    t0 = time.perf_counter()
    prep = prepare_image(image, model, stride=s.stride, min_tissue=s.min_tissue, reach=s.reach)
    yield Progress("prepare", 1, 1)
    base = rt.prepare_model(model)
    model = inference_model(base, rt)
    labels = list(model.labels)
    n_labels = len(labels)
    grid = prep.grid
    gy, gx = grid.shape
    todo = np.flatnonzero(prep.active.ravel())
    t1 = time.perf_counter()
    feeder = WindowFeeder(prep, model, rt)
    coarse = (yield from coarse_pass(prep, feeder, model, rt, s, todo)) if s.coarse_first \
        else None
    h0, y0 = yield from _unmasked_rest(feeder, todo, coarse)
    t2 = time.perf_counter()

    pred_raw = np.zeros((grid.n_windows, n_labels), dtype=np.float32)
    pred_raw[todo] = y0
    per_window_pred = pred_raw.T.reshape(n_labels, gy, gx)
    if s.focus:
        in_focus = focus_windows(per_window_pred, labels, prep.active, s.focus_share)
    else:
        in_focus = prep.active.copy()
    targets = np.where(in_focus.ravel()[todo], int(s.masks), min_masks)
    # Focus windows first, then the rest, each in raster order.
    order = np.argsort(~in_focus.ravel()[todo], kind="stable")

    def crops_for(local: list[int]) -> Any:
        return feeder.batch(todo[np.asarray(local)])

    engine = MaskEngine(model, rt, crops_for, h0, y0, targets, s, size=grid.window,
                        order=order, calibrate=calibration_set(prep, todo))
    done = 0
    if coarse is not None:  # their floor masks are the first masks of the final run
        engine.carry_over(coarse.engine, np.arange(len(coarse.local)), coarse.local)
        done = int(engine.start.sum())
    total = done + engine.total_passes()
    yield Progress("masks", done, total)
    for step in engine.steps():
        done += step
        yield Progress("masks", min(done, total), total)
    t3 = time.perf_counter()

    local = np.arange(len(todo))
    rho, constant, se = engine.statistics(local)
    corr_raw = np.zeros((grid.n_windows, n_labels), dtype=np.float64)
    dist_raw = np.zeros(grid.n_windows, dtype=np.float64)
    used = np.zeros(grid.n_windows, dtype=np.int64)
    corr_raw[todo] = rho[:, 1:]
    dist_raw[todo] = rho[:, 0]
    ci_raw = np.zeros((grid.n_windows, n_labels), dtype=np.float64)
    ci_raw[todo] = engine.halfwidth(local)[:, 1:]
    used[todo] = engine.moments.n
    per_window_corr = corr_raw.T.reshape(n_labels, gy, gx)
    relevance = stitch_relevance(engine, grid, todo, prep.pixels.shape)
    relevance_var = stitch_relevance(engine, grid, todo, prep.pixels.shape,
                                     engine.relevance_uncertainty)
    warning = engine.factor_warning()
    if warning:
        warnings.warn(warning, RuntimeWarning, stacklevel=2)
    t4 = time.perf_counter()

    n_focus = int(in_focus.sum())
    stats = RunStats(
        model=str(getattr(base, "checkpoint_path", base.__class__.__name__)),
        backbone=getattr(base, "backbone_name", None), device=rt.device,
        precision=rt.precision, roi_box=list(prep.roi.box),
        windows_total=int(grid.n_windows), windows_evaluated=len(todo), windows_focus=n_focus,
        masks_total=int(used.sum()),
        masks_mean=round(float(used[todo].mean()), 2) if len(todo) else 0.0,
        masks_mean_focus=round(float(used.reshape(gy, gx)[in_focus].mean()), 2) if n_focus
        else 0.0,
        masks_min=int(min_masks), masks_max=int(s.masks),
        constant_correlations=int(constant.sum()),
        uncertainty_max=round(float(se.max()), 5) if se.size else 0.0,
        **engine.factor_report(), warnings=[warning] if warning else [],
        seconds={"prepare": round(t1 - t0, 3), "predict": round(t2 - t1, 3),
                 "correlax": round(t3 - t2, 3), "stitch": round(t4 - t3, 3)},
        masked_passes_per_second=round(float(used.sum()) / max(t3 - t2, 1e-9), 1),
        settings={"adaptive": bool(s.adaptive), "tolerance": float(s.tolerance),
                  "focus": bool(s.focus), "focus_share": float(s.focus_share),
                  "seed": int(s.seed), "design": s.design, "mask_grid": GRID_CELLS,
                  "masked_probability": MASKED_PROBABILITY},
    )
    return MapResult(
        labels=labels,
        grid=grid,
        prediction=grid.smooth(per_window_pred, prep.active),
        window_mask=prep.active,
        spacing_mm=prep.spacing_mm,
        correlation=grid.smooth(per_window_corr, prep.active),
        product=grid.smooth(per_window_pred * per_window_corr, prep.active),
        distance=grid.smooth(dist_raw.reshape(gy, gx), prep.active),
        masks_used=used.reshape(gy, gx),
        relevance=relevance,
        meta=dict(prep.meta),
        extra={"correlation_ci": grid.smooth(ci_raw.T.reshape(n_labels, gy, gx),
                                             prep.active),
               "relevance_uncertainty": relevance_var},
        stats=stats,
    )


def calibration_set(prep: PreparedImage, todo: np.ndarray) -> np.ndarray:
    """Positions in ``todo`` (the tissue windows) of the windows that measure the mask
    design's factor (:class:`~.mask_engine.MaskEngine`, "Design factor"): those on the
    coarse grid (spread over the breast; the windows a coarse pass runs first), and
    windows spread evenly over ``todo`` where those are fewer than
    :data:`~.masks.MIN_FACTOR_DOF`."""
    coarse = np.flatnonzero(coarse_subset(prep.grid).ravel()[todo])
    if len(coarse) >= MIN_FACTOR_DOF:
        return coarse
    return np.union1d(coarse, calibration_windows(len(todo)))


def _unmasked_rest(feeder: WindowFeeder, todo: np.ndarray, coarse: CoarsePass | None
                   ) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """Unmasked ``(h, ŷ)`` of windows ``todo``, re-using those of a coarse pass."""
    if coarse is None:
        return (yield from unmasked_pass(feeder, todo))
    rest = np.setdiff1d(np.arange(len(todo)), coarse.local)
    h_rest, y_rest = yield from unmasked_pass(feeder, todo[rest])
    h0 = np.zeros((len(todo), coarse.h0.shape[1]), dtype=np.float32)
    y0 = np.zeros((len(todo), coarse.y0.shape[1]), dtype=np.float32)
    h0[coarse.local], y0[coarse.local] = coarse.h0, coarse.y0
    if len(rest):
        h0[rest], y0[rest] = h_rest, y_rest
    return h0, y0


def stitch_relevance(
    engine: MaskEngine, grid: Any, todo: np.ndarray, image_shape: tuple[int, int],
    window_maps: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Overlap-average the windows' RELAX maps (or ``window_maps(local indices)``, e.g.
    :meth:`~.mask_engine.MaskEngine.relevance_uncertainty`) into ``(H, W)`` original
    image pixels."""
    window_maps = window_maps or engine.relevance
    h, w = image_shape
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    corners = grid.corners().reshape(-1, 2)
    s = grid.window
    chunk = 32
    for start in range(0, len(todo), chunk):
        maps = window_maps(np.arange(start, min(start + chunk, len(todo))))
        for rel, flat in zip(maps, todo[start : start + chunk]):
            r0, c0 = (int(v) for v in corners[flat])
            y0, x0 = max(r0, 0), max(c0, 0)
            y1, x1 = min(r0 + s, h), min(c0 + s, w)
            if y1 <= y0 or x1 <= x0:
                continue
            total[y0:y1, x0:x1] += rel[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0]
            count[y0:y1, x0:x1] += 1.0
    out = np.zeros((h, w), dtype=np.float32)
    np.divide(total, count, out=out, where=count > 0, casting="unsafe")
    return out


def explain(image: Mammogram | np.ndarray, model: ImageModelLike, **overrides: Any
            ) -> MapResult:
    """CorRELAX maps over a mammogram (docs/method.md §7, §12); see :func:`explain_steps`.

    ``overrides`` are :class:`~napari_correlax.maps.settings.MapSettings` fields
    (``masks=``, ``stride=``, ``design=``, ``device=``, …) that replace its defaults, and
    ``runtime=`` a :class:`~napari_correlax.maps.runtime.Runtime` for the device fields
    (:meth:`MapSettings.for_call <napari_correlax.maps.settings.MapSettings.for_call>`).
    """
    return drain(explain_steps(image, model, MapSettings.for_call("correlax", overrides)))
