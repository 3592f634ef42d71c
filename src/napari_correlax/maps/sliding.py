"""Sliding-window prediction over the breast (docs/method.md §6, paper §3.5).

Long work is a generator (STYLE): :func:`predict_steps` yields :class:`Progress`
events between batches and *returns* a :class:`MapResult`; :func:`predict` drains it.
A napari worker drives the generator and can stop between any two yields.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..preprocess import BreastROI, Preprocessing, breast_roi, preprocessing_of
from ..windows import WindowGrid
from .mask_engine import unmasked_pass
from .result import MapResult
from .runtime import Progress, Runtime, drain, inference_model
from .settings import DEFAULT_MIN_TISSUE, DEFAULT_REACH, DEFAULT_STRIDE, MapSettings
from .shared import current as work_server
from .stats import RunStats

if TYPE_CHECKING:
    import torch

    from ..io.image import Mammogram
    from ..models.protocols import ImageModelLike

__all__ = [
    "PreparedImage",
    "WindowFeeder",
    "grid_maps",
    "model_input",
    "predict",
    "predict_steps",
    "prepare_image",
    "window_layout",
]

#: Rows of the fused image normalised at a time by :class:`WindowFeeder`.
_NORMALIZE_ROWS = 256



def as_pixels(image: Mammogram | np.ndarray
              ) -> tuple[np.ndarray, tuple[float, float] | None, dict[str, Any]]:
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

    ``pixels`` is the image as given (what is displayed); ``fused`` is the zero-padded
    H×W×3 CLAHE fusion of the model's input image, which differs from ``pixels`` only
    in intensities (the DICOM VOI LUT, when the model's profile asks for it), never in
    geometry. Window ``k`` (flat index into the grid) is ``fused[r:r+S, c:c+S]`` with
    ``(r, c) = corner + offset``.
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

    def padded_corners(self, flat: np.ndarray) -> np.ndarray:
        """``(B, 2)`` top-left ``(row, col)`` of windows ``flat`` in ``fused``'s pixels."""
        return self.grid.corners().reshape(-1, 2)[flat] + np.asarray(self.offset)

    def windows(self, flat: np.ndarray) -> np.ndarray:
        """``(B, S, S, 3)`` float32 crops of ``fused`` for flat grid indices ``flat``."""
        s = self.grid.window
        out = np.empty((len(flat), s, s, 3), dtype=np.float32)
        for k, (r, c) in enumerate(self.padded_corners(flat)):
            out[k] = self.fused[r : r + s, c : c + s]
        return out


def window_layout(
    pixels: np.ndarray, window: int, stride: int, reach: str = DEFAULT_REACH,
    min_tissue: float = DEFAULT_MIN_TISSUE,
) -> tuple[BreastROI, WindowGrid, np.ndarray, np.ndarray]:
    """The breast ROI, window grid, tissue fraction and evaluated windows of an image
    (original pixels; no fusion, so it is cheap enough to count windows before a run).

    An image without tissue (blank) evaluates every window.
    """
    roi = breast_roi(pixels)
    grid = WindowGrid.covering(pixels.shape, roi.box, window=window, stride=stride, reach=reach)
    if roi.mask.any():
        tissue = grid.fraction_inside(roi.mask)
        return roi, grid, tissue, tissue >= min_tissue
    return roi, grid, np.ones(grid.shape), np.ones(grid.shape, dtype=bool)


def prepare_image(
    image: Mammogram | np.ndarray,
    model: ImageModelLike,
    *,
    stride: int = DEFAULT_STRIDE,
    min_tissue: float = DEFAULT_MIN_TISSUE,
    reach: str = DEFAULT_REACH,
) -> PreparedImage:
    """Fuse channels, find the breast, lay the window grid and mark tissue windows.

    The model's preprocessing profile (docs/method.md §2) decides the input image: when it asks
    for the DICOM VOI LUT and ``image`` is a Mammogram read from a DICOM file without it
    (``meta["voi_lut_applied"]`` false), the file is read again with it, and the other
    way round; the breast ROI, tissue fractions and fusion all come from that image,
    the only one the authors' pipeline has. Pixel coordinates are the
    same, so every map overlays ``image`` as given; ``PreparedImage.pixels`` stays
    ``image``'s pixels.
    """
    server = work_server()  # a split run's image prepared once for its methods
    if server is not None:
        kept = server.prepared(image, model, (int(stride), float(min_tissue), str(reach)))
        if kept is not None:
            return kept
    pixels, spacing, meta = as_pixels(image)
    window = int(model.input_size)
    label = meta.get("source")
    if stride < 1:
        raise CorrelaxError(f"stride must be a positive number of pixels, not {stride}", label)
    if stride > window:
        h, w = pixels.shape
        raise CorrelaxError(
            f"stride {stride} px is larger than the {window} px window"
            + (f" and the {h}×{w} px image" if stride >= max(h, w) else "")
            + f": windows would leave parts of the breast unseen; use at most {window} "
            f"(the paper uses 48)", label)
    profile = preprocessing_of(model)
    source = model_input(image, pixels, profile)
    roi, grid, tissue, active = window_layout(source, window, stride, reach, min_tissue)
    if not active.any():
        raise CorrelaxError(
            f"no {window} px window holds at least {min_tissue:.0%} breast tissue at stride "
            f"{stride}: nothing to analyse (is the image blank?)", label)
    fused, offset = grid.padded(profile.fuse(source))
    return PreparedImage(pixels, spacing, meta, roi, grid, tissue, active, fused, offset)


def model_input(image: Any, pixels: np.ndarray, profile: Preprocessing) -> np.ndarray:
    """``pixels``, or the DICOM file behind ``image`` read again with the VOI LUT setting
    of ``profile`` when ``image`` was read with the other one (same H×W grid)."""
    path = getattr(image, "path", None)
    if not hasattr(image, "pixels") or not path:
        return pixels
    meta = getattr(image, "meta", None) or {}
    if bool(meta.get("voi_lut_applied")) == bool(profile.voi_lut):
        return pixels
    from ..io.image import DICOM_SUFFIXES, has_dicom_preamble, read_mammogram

    fmt = meta.get("format")
    dicom = fmt == "dicom" if fmt else (
        has_dicom_preamble(path) or str(path).lower().endswith(DICOM_SUFFIXES)
    )
    if not dicom:
        return pixels  # the VOI LUT only exists in DICOM files
    reread = read_mammogram(path, voi_lut=profile.voi_lut).pixels
    if reread.shape != pixels.shape:
        raise CorrelaxError(
            f"file changed since it was read: {reread.shape[0]}×{reread.shape[1]} pixels "
            f"now, {pixels.shape[0]}×{pixels.shape[1]} before",
            path,
        )
    return reread


class WindowFeeder:
    """Model-ready batches of a prepared image's windows, built while the model runs.

    For a model whose ``normalize`` is per pixel (``pointwise_normalize``, true for
    :class:`~napari_correlax.models.Classifier`), the whole fused image is normalised
    once and windows are cut from the result: the same numbers as normalising each
    window (the same float32 operations on the same pixels), without repeating the work
    for every window that overlaps a pixel (about ``(S / stride)²`` of them). Other
    models get ``normalize`` per batch.

    Windows are cut into reused buffers; a yielded tensor is valid until the caller asks
    for the next one. When the model runs on an accelerator, :meth:`batches` cuts batch
    ``k + 1`` in a background thread (torch's copies release the GIL) while the device runs
    batch ``k``. On the CPU the model's own threads already use every core and a cutting
    thread only competes with them (measured: slightly slower), so cutting stays inline.
    """

    def __init__(self, prep: PreparedImage, model: ImageModelLike, runtime: Runtime) -> None:
        self.prep = prep
        self.model = model
        self.rt = runtime
        self.pointwise = bool(getattr(model, "pointwise_normalize", False))
        self._buffers: dict[int, Any] = {}

    @functools.cached_property
    def source(self) -> np.ndarray:
        """The image windows are cut from: the fused image, normalised once when the
        model's normalisation is per pixel (made on the first cut: a feeder whose pass
        is served from a split run's shared work never normalises)."""
        import torch

        prep = self.prep
        if not self.pointwise:
            return prep.fused
        # In bands of rows, so the temporaries stay small next to the image.
        source = np.empty(prep.fused.shape, dtype=np.float32)
        with torch.inference_mode():
            for r in range(0, prep.fused.shape[0], _NORMALIZE_ROWS):
                band = torch.from_numpy(prep.fused[r : r + _NORMALIZE_ROWS])
                normed = self.model.normalize(band.permute(2, 0, 1)[None]).float()
                source[r : r + _NORMALIZE_ROWS] = normed[0].permute(1, 2, 0).numpy()
        return source

    def _cut(self, flat: np.ndarray, slot: int | None = None) -> Any:
        """``(B, S, S, 3)`` tensor of windows ``flat``: in reused buffer ``slot`` (fresh
        buffers of tens of MB cost page faults on CPUs), or a new tensor for None."""
        import torch

        s = self.prep.grid.window
        out = self._buffers.get(slot) if slot is not None else None
        if out is None or out.shape[0] < len(flat):
            out = torch.empty((len(flat), s, s, 3), dtype=torch.float32)
            if slot is not None:
                self._buffers[slot] = out
        out = out[: len(flat)]
        # torch's copy uses all intra-op threads (about 1.4x faster than NumPy's here).
        src = torch.from_numpy(self.source)
        for k, (r, c) in enumerate(self.prep.padded_corners(flat)):
            out[k].copy_(src[r : r + s, c : c + s])
        return out

    def _to_model(self, windows: Any) -> Any:
        # NHWC viewed as NCHW is channels_last in memory: no copy on the CPU.
        x = windows.permute(0, 3, 1, 2).to(self.rt.device, non_blocking=True)
        return x if self.pointwise else self.model.normalize(x)

    def batch(self, flat: np.ndarray) -> torch.Tensor:
        """``(B, 3, S, S)`` model-ready tensor (a new one) of windows ``flat``."""
        return self._to_model(self._cut(flat))

    def batches(self, todo: np.ndarray, batch_size: int | None = None, *,
                prefetch: bool | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(flat, x)`` for consecutive batches of ``todo`` (flat grid indices).

        ``prefetch`` cuts the next batch in a background thread (default: when the
        runtime's device is not the CPU).
        """
        if prefetch is None:
            prefetch = not self.rt.device.startswith("cpu")
        size = int(batch_size or self.rt.batch_size)
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        if not chunks:
            return
        if not prefetch or len(chunks) == 1:
            for flat in chunks:
                yield flat, self._to_model(self._cut(flat, 0))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="correlax-windows") as pool:
            ready = pool.submit(self._cut, chunks[0], 0)
            for k, flat in enumerate(chunks):
                windows = ready.result()
                if k + 1 < len(chunks):
                    ready = pool.submit(self._cut, chunks[k + 1], (k + 1) % 2)
                yield flat, self._to_model(windows)


def grid_maps(grid: WindowGrid, per_window: np.ndarray,
              evaluated: np.ndarray | None = None) -> np.ndarray:
    """Per-window values ``(n_windows, C)`` (flat grid order) → ``(C, gy, gx)`` maps through
    the normalised IoU kernel over the ``evaluated`` windows (``(gy, gx)`` bool, None:
    all; values of the others are ignored, cells none of them reaches are NaN;
    docs/method.md §6)."""
    gy, gx = grid.shape
    values = np.asarray(per_window)
    return grid.smooth(values.T.reshape(values.shape[1], gy, gx), evaluated)


def predict_steps(
    image: Mammogram | np.ndarray, model: ImageModelLike, settings: MapSettings
) -> Generator[Progress, None, MapResult]:
    """Per-label prediction maps over the breast, as a generator of progress events.

    Parameters
    ----------
    image:
        A :class:`~napari_correlax.io.Mammogram` or an H×W array (min–max scaled).
    model:
        A classifier with ``labels``, ``input_size``, ``normalize``, ``features``, ``head``
        (:class:`~napari_correlax.models.ImageModelLike`).
    settings:
        What it reads (:class:`~napari_correlax.maps.settings.MapSettings`): ``stride``
        (window step in pixels; window side = ``model.input_size``), ``min_tissue``
        (windows whose tissue fraction is below it are skipped: False in ``window_mask``,
        left out of the smoothing), ``reach`` (``"border"``: window centres reach the breast's
        border, so the map covers the skin line and the chest wall; ``"inside"``:
        windows stay inside the breast's bounding box,
        :meth:`~napari_correlax.windows.WindowGrid.covering`), and the runtime fields
        ``device``, ``precision``, ``batch_size``, ``threads``.

    Yields ``Progress("window", done, total)``; returns a :class:`MapResult` whose
    ``prediction`` is the ``(C, gy, gx)`` map through the normalised IoU kernel
    (docs/method.md §6; NaN in cells no evaluated window reaches).
    """
    rt = settings.runtime()
    t0 = time.perf_counter()
    prep = prepare_image(image, model, stride=settings.stride, min_tissue=settings.min_tissue,
                         reach=settings.reach)
    yield Progress("prepare", 1, 1)
    model = inference_model(rt.prepare_model(model), rt)  # BatchNorm folded into convolutions
    raw = np.zeros((prep.grid.n_windows, len(model.labels)), dtype=np.float32)
    todo = np.flatnonzero(prep.active.ravel())
    t1 = time.perf_counter()
    # the pass CorRELAX runs too: a split run shares it between methods (.shared)
    _, raw[todo] = yield from unmasked_pass(WindowFeeder(prep, model, rt), todo)
    stats = RunStats(
        model=str(getattr(model, "checkpoint_path", model.__class__.__name__)),
        backbone=getattr(model, "backbone_name", None), device=rt.device,
        precision=rt.precision, roi_box=list(prep.roi.box),
        windows_total=int(prep.grid.n_windows), windows_evaluated=len(todo),
        seconds={"prepare": round(t1 - t0, 3), "predict": round(time.perf_counter() - t1, 3)},
    )
    return MapResult(
        labels=list(model.labels),
        grid=prep.grid,
        prediction=grid_maps(prep.grid, raw, prep.active),
        window_mask=prep.active,
        spacing_mm=prep.spacing_mm,
        meta=dict(prep.meta),
        stats=stats,
    )


def predict(image: Mammogram | np.ndarray, model: ImageModelLike, **overrides: Any
            ) -> MapResult:
    """Sliding-window prediction maps (docs/method.md §6, §12); see :func:`predict_steps`.

    ``overrides`` are :class:`~napari_correlax.maps.settings.MapSettings` fields
    (``stride=``, ``reach=``, ``min_tissue=``, ``device=``, ``batch_size=``, …) that
    replace its defaults, and ``runtime=`` a :class:`~napari_correlax.maps.runtime.Runtime`
    for the device fields (:meth:`~napari_correlax.maps.settings.MapSettings.for_call`).
    """
    return drain(predict_steps(image, model, MapSettings.for_call("prediction", overrides)))
