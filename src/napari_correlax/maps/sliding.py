"""Sliding-window prediction over the breast (SPEC §6, paper §3.5).

Long work is a generator (STYLE): :func:`predict_steps` yields :class:`Progress`
events between batches and *returns* a :class:`MapResult`; :func:`predict` drains it.
A napari worker drives the generator and can stop between any two yields.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CorrelaxError
from ..preprocess import BreastROI, breast_roi, fuse_channels
from ..windows import WindowGrid
from .result import MapResult
from .runtime import Progress, Runtime, inference_model

__all__ = ["PreparedImage", "drain", "predict", "predict_steps", "prepare_image"]

#: Windows with less breast tissue than this fraction (Otsu mask) are skipped.
DEFAULT_MIN_TISSUE = 0.05


def as_pixels(image: Any) -> tuple[np.ndarray, tuple[float, float] | None, dict[str, Any]]:
    """``(pixels in [0, 1] float32 H×W, spacing_mm, meta)`` from a Mammogram or array."""
    if hasattr(image, "pixels"):
        pixels = np.asarray(image.pixels, dtype=np.float32)
        meta = dict(getattr(image, "meta", {}) or {})
        if getattr(image, "path", None):
            meta.setdefault("source", str(image.path))
        return pixels, getattr(image, "spacing_mm", None), meta
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.size == 0:
        raise CorrelaxError(f"expected a 2-D grey image, got an array of shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise CorrelaxError("image contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    pixels = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return pixels, None, {}


@dataclass
class PreparedImage:
    """An image ready for window extraction.

    ``fused`` is the zero-padded H×W×3 CLAHE fusion; window ``k`` (flat index into the
    grid) is ``fused[r:r+S, c:c+S]`` with ``(r, c) = corner + offset``.
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    meta: dict[str, Any]
    roi: BreastROI
    grid: WindowGrid
    tissue: np.ndarray
    active: np.ndarray
    fused: np.ndarray
    offset: tuple[int, int]

    def windows(self, flat: np.ndarray) -> np.ndarray:
        """``(B, S, S, 3)`` float32 crops for flat grid indices ``flat``."""
        s = self.grid.window
        corners = self.grid.corners().reshape(-1, 2)[flat] + np.asarray(self.offset)
        out = np.empty((len(flat), s, s, 3), dtype=np.float32)
        for k, (r, c) in enumerate(corners):
            out[k] = self.fused[r : r + s, c : c + s]
        return out


def prepare_image(
    image: Any,
    model: Any,
    *,
    stride: int = 48,
    min_tissue: float = DEFAULT_MIN_TISSUE,
) -> PreparedImage:
    """Fuse channels, find the breast, lay the window grid and mark tissue windows."""
    pixels, spacing, meta = as_pixels(image)
    if stride < 1:
        raise CorrelaxError("stride must be a positive number of pixels")
    prep = getattr(model, "preprocessing", {}) or {}
    clips = tuple(prep.get("clahe_clip_limits", (1.0, 2.0)))
    tiles = tuple(prep.get("clahe_tiles", (8, 8)))
    roi = breast_roi(pixels)
    grid = WindowGrid.covering(pixels.shape, roi.box, window=int(model.input_size), stride=stride)
    if roi.mask.any():
        tissue = grid.fraction_inside(roi.mask)
        active = tissue >= min_tissue
    else:
        tissue = np.ones(grid.shape)
        active = np.ones(grid.shape, dtype=bool)
    fused, offset = grid.padded(fuse_channels(pixels, clips, tiles))
    return PreparedImage(pixels, spacing, meta, roi, grid, tissue, active, fused, offset)


def predict_steps(
    image: Any,
    model: Any,
    *,
    stride: int = 48,
    min_tissue: float = DEFAULT_MIN_TISSUE,
    runtime: Runtime | None = None,
    **runtime_options: Any,
) -> Generator[Progress, None, MapResult]:
    """Per-label prediction maps over the breast, as a generator of progress events.

    Parameters
    ----------
    image:
        A :class:`~napari_correlax.io.Mammogram` or an H×W array (min–max scaled).
    model:
        A classifier with ``labels``, ``input_size``, ``normalize``, ``features``, ``head``.
    stride:
        Window step in pixels (window side = ``model.input_size``).
    min_tissue:
        Windows whose tissue fraction is below this are skipped (value 0, and False in
        ``window_mask``).
    runtime, runtime_options:
        A :class:`Runtime` or its fields (``device``, ``precision``, ``batch_size``,
        ``threads``).

    Yields ``Progress("window", done, total)``; returns a :class:`MapResult` whose
    ``prediction`` is the IoU-kernel-smoothed ``(C, gy, gx)`` map.
    """
    rt = runtime or Runtime(**runtime_options)
    t0 = time.perf_counter()
    prep = prepare_image(image, model, stride=stride, min_tissue=min_tissue)
    yield Progress("prepare", 1, 1)
    model = inference_model(rt.prepare_model(model))  # BatchNorm folded into convolutions
    raw = np.zeros((prep.grid.n_windows, len(model.labels)), dtype=np.float32)
    todo = np.flatnonzero(prep.active.ravel())
    t1 = time.perf_counter()
    yield Progress("window", 0, len(todo))
    for start in range(0, len(todo), rt.batch_size):
        flat = todo[start : start + rt.batch_size]
        with rt.inference():
            x = rt.to_input(model, prep.windows(flat))
            raw[flat] = model.head(model.features(x)).float().cpu().numpy()
        yield Progress("window", start + len(flat), len(todo))
    gy, gx = prep.grid.shape
    per_window = raw.T.reshape(len(model.labels), gy, gx)
    meta = dict(prep.meta)
    meta.update(
        model=getattr(model, "checkpoint_path", model.__class__.__name__),
        backbone=getattr(model, "backbone_name", None),
        roi_box=list(prep.roi.box),
        windows_total=int(prep.grid.n_windows),
        windows_evaluated=len(todo),
        seconds_prepare=round(t1 - t0, 3),
        seconds_predict=round(time.perf_counter() - t1, 3),
        device=rt.device,
        precision=rt.precision,
    )
    return MapResult(
        labels=list(model.labels),
        grid=prep.grid,
        prediction=prep.grid.smooth(per_window),
        window_mask=prep.active,
        spacing_mm=prep.spacing_mm,
        meta=meta,
    )


def drain(steps: Generator[Progress, None, Any]) -> Any:
    """Run a progress generator to the end and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def predict(image: Any, model: Any, **options: Any) -> MapResult:
    """Sliding-window prediction maps (SPEC §6, §12); see :func:`predict_steps`."""
    return drain(predict_steps(image, model, **options))
