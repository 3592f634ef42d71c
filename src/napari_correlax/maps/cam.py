"""The CAM family on a whole mammogram: global or windowed saliency maps (docs/method.md §8).

:func:`cam` (and its generator :func:`cam_steps`) computes, for each chosen label, a
saliency map of one of CAM, Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiRes-CAM,
Eigen-CAM, Score-CAM or Ablation-CAM (pytorch-grad-cam's weightings, fed by
:mod:`.cam_engine`) at a target layer of the classifier (:mod:`.cam_layers`), in two modes:

``mode="windowed"`` (default)
    Every tissue window of the window grid of §6 (the prediction pass's layout: stride,
    reach, minimum tissue), at full resolution, batched. Each window's map (after the
    method's ReLU) is upsampled to the window as the library does (bilinear,
    ``cv2.resize``) and the windows are stitched in original image pixels by averaging
    where they overlap (:class:`~.cam_stitch.Stitcher`); NaN where no evaluated window
    reaches. ``scale="raw"`` keeps each window's map in the method's units, so windows
    compare; ``scale="window"`` takes each window's map as a call of the library returns
    it, min–max scaled to [0, 1] by its ``scale_cam_image`` (what users of the library
    see per image; :func:`~.cam_stitch.to_input_size`). The logits
    of the same forward passes give the per-window probabilities, smoothed exactly as
    the prediction pass smooths them: ``prediction`` is the §6 map.
``mode="global"``
    The breast region (Otsu, §2) of the model's fused input image, resized so its long
    side is ``global_size`` (512 by default, as in the literature), one CAM call, the
    map resized back onto the region in original pixels; NaN outside the region.
    ``prediction`` holds the image-level probabilities of that same forward pass over
    the down-sampled region, ``(labels, 1, 1)``, on a one-cell grid whose square window
    is centred on the region and as long as its long side: no extra pass over windows.

Nothing here imports torch at module level; :mod:`.cam_engine` is loaded on first use.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..preprocess import BreastROI, breast_roi, preprocessing_of
from ..windows import WindowGrid
from .cam_stitch import SCALES, Stitcher, to_input_size, upsample
from .result import MapResult
from .runtime import Progress, Runtime
from .settings import DEFAULT_STRIDE, MapSettings
from .sliding import (
    WindowFeeder,
    as_pixels,
    drain,
    grid_maps,
    model_input,
    prepare_image,
)
from .stats import RunStats

if TYPE_CHECKING:
    from ..io.image import Mammogram
    from ..models.protocols import ImageModelLike
    from .cam_engine import CamEngine

__all__ = [
    "DEFAULT_GLOBAL_SIZE",
    "MODES",
    "SCALES",
    "GlobalInput",
    "WindowCams",
    "cam",
    "cam_steps",
    "cam_windows",
    "global_input",
    "mode_title",
]

#: Long side of the down-sampled breast region in global mode, pixels.
DEFAULT_GLOBAL_SIZE = 512
MODES = ("windowed", "global")


def mode_title(mode: str, global_size: int = DEFAULT_GLOBAL_SIZE) -> str:
    """How docks and tables name a CAM mode. Global mode says what it is: the classifier,
    trained on 256 px crops at full resolution, sees the whole breast shrunk to
    ``global_size`` px, a scale it never saw (docs/method.md §8)."""
    if mode == "global":
        return f"global ({int(global_size)} px, out of the model's training scale)"
    if mode == "windowed":
        return "windowed (full-resolution windows, stitched)"
    raise CorrelaxError(f"mode must be one of {MODES}, not {mode!r}")


def cam(image: Mammogram | np.ndarray, model: ImageModelLike, method: str = "gradcam", *,
        mode: str = "windowed", labels: Sequence[str] | None = None, scale: str = "raw",
        stride: int = DEFAULT_STRIDE, target_layer: str | None = None,
        global_size: int = DEFAULT_GLOBAL_SIZE, layers: int | None = None,
        **overrides: Any) -> MapResult:
    """CAM-family saliency maps of a mammogram (docs/method.md §8, §12).

    Parameters
    ----------
    image:
        A :class:`~napari_correlax.io.Mammogram` or an H×W array (min–max scaled to [0, 1]).
    model:
        A classifier (:class:`~napari_correlax.models.classifier.Classifier` or any
        :class:`~napari_correlax.models.ImageModelLike` torch module). The score
        explained is each label's logit.
    method:
        ``"cam"``, ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"layercam"``,
        ``"hirescam"``, ``"eigencam"``, ``"scorecam"`` or ``"ablationcam"``.
    mode:
        ``"windowed"`` (every tissue window at full resolution, stitched) or
        ``"global"`` (the down-sampled breast region); see the module docstring.
    labels:
        Label names to explain (None: all of the model's labels).
    scale:
        ``"raw"`` (the method's units) or ``"window"`` (each window's map, or the global
        map, min–max scaled to [0, 1] as the library does).
    stride:
        Window step in pixels (windowed mode).
    target_layer:
        Dotted name of the model's module to take the maps at (``"encoder.layer4"``);
        None: the backbone's last convolutional stage.
    global_size:
        Long side of the down-sampled breast region in global mode, pixels.
    layers:
        LayerCAM only: how many backbone stages it combines, ending at the target layer
        (None: :data:`~.cam_engine.LAYERCAM_STAGES`, 3; 1: the target layer alone).
    overrides:
        Other :class:`~napari_correlax.maps.settings.MapSettings` fields: ``reach``,
        ``min_tissue`` (§6), and ``device``, ``precision``, ``batch_size``, ``threads``, or
        ``runtime=`` a :class:`~napari_correlax.maps.runtime.Runtime`.

    Returns a :class:`~napari_correlax.maps.MapResult` whose ``labels`` are the explained
    labels, ``extra["saliency"]`` (also ``result.get("saliency")``) is ``(labels, H, W)``
    float32 in original image pixels (NaN where nothing was evaluated), ``prediction`` is
    described in the module docstring and ``target_layer`` names the module used.
    """
    options = {"mode": mode, "scale": scale, "target_layer": target_layer,
               "global_size": global_size, **({"layers": layers} if layers is not None else {})}
    settings = MapSettings.for_call(method, {**overrides, "stride": stride, "options": options})
    return drain(cam_steps(image, model, settings, labels=labels))


def _checked(method: str, mode: str, scale: str, global_size: int) -> None:
    from .cam_engine import CAM_NAMES

    if method not in CAM_NAMES:
        raise CorrelaxError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_NAMES)}")
    if mode not in MODES:
        raise CorrelaxError(f"mode must be one of {MODES}, not {mode!r}")
    if scale not in SCALES:
        raise CorrelaxError(f"scale must be one of {SCALES}, not {scale!r}")
    if int(global_size) < 16:
        raise CorrelaxError(f"global_size must be at least 16 pixels, not {global_size}")


def _label_indices(model: Any, labels: Sequence[str] | str | None) -> list[int]:
    names = list(model.labels)
    if labels is None:
        return list(range(len(names)))
    if isinstance(labels, str):
        labels = [labels]
    unknown = [label for label in labels if label not in names]
    if unknown or not labels:
        what = f"unknown labels {unknown}" if unknown else "no labels chosen"
        raise CorrelaxError(f"{what}; the model's labels are {names}")
    return [names.index(label) for label in labels]


def cam_steps(
    image: Mammogram | np.ndarray,
    model: ImageModelLike,
    settings: MapSettings,
    *,
    labels: Sequence[str] | None = None,
) -> Generator[Progress, None, MapResult]:
    """:func:`cam` as a generator of progress events; returns the result.

    ``settings.method`` names the CAM method; its options (:meth:`MapSettings.option
    <napari_correlax.maps.settings.MapSettings.option>`) ``mode`` (default
    ``"windowed"``), ``scale`` (``"raw"``), ``target_layer`` (None) and ``global_size``
    (:data:`DEFAULT_GLOBAL_SIZE`) and its fields ``stride``, ``reach``, ``min_tissue`` and
    the runtime's are those of :func:`cam`; ``labels`` as there.

    Yields ``Progress("prepare", 1, 1)``, then ``Progress("window", done, total)`` after
    each batch of windows (``Progress("global", 1, 1)`` in global mode), or, for
    Score-CAM and Ablation-CAM, ``Progress("forward", done, total)`` after each forward
    pass (their true cost: per image or window and label one or two passes, plus one per
    batch of ``batch_size`` channels for the first label, whose channel passes the other
    labels reuse). Closing the generator stops within one batch.
    """
    from .cam_engine import CamEngine

    method = settings.method
    mode = settings.option("mode", "windowed")
    scale = settings.option("scale", "raw")
    global_size = settings.option("global_size", DEFAULT_GLOBAL_SIZE)
    _checked(method, mode, scale, global_size)
    rt = settings.runtime()
    index = _label_indices(model, labels)
    t0 = time.perf_counter()
    if mode == "global":
        source: Any = global_input(image, model, global_size)
    else:
        source = prepare_image(image, model, stride=settings.stride,
                               min_tissue=settings.min_tissue, reach=settings.reach)
    yield Progress("prepare", 1, 1)
    model = rt.prepare_model(model)
    engine = CamEngine(model, method, settings.option("target_layer"), index, rt,
                       stages=settings.option("layers"), scale=scale)
    seconds = {"prepare": round(time.perf_counter() - t0, 3)}
    try:
        if mode == "global":
            result = yield from _global(source, model, engine, scale, seconds)
        else:
            result = yield from _windowed(source, model, engine, scale, seconds)
    finally:
        engine.close()
    result.labels = [model.labels[i] for i in index]
    result.target_layer = engine.layer_name
    result.stats = RunStats(
        method=method,
        settings={"method": method, "mode": mode,
                  "mode_title": mode_title(mode, global_size), "scale": scale,
                  "target_layer": engine.layer_name, "labels": list(result.labels),
                  **({"layers": list(engine.stage_names)} if method == "layercam" else {}),
                  **({"global_size": int(global_size)} if mode == "global" else {})},
        model=str(getattr(model, "checkpoint_path", model.__class__.__name__)),
        backbone=getattr(model, "backbone_name", None), device=rt.device,
        precision=rt.precision, roi_box=list(result.stats.roi_box),
        windows_total=result.stats.windows_total,
        windows_evaluated=result.stats.windows_evaluated, seconds=seconds)
    return result


def _run(engine: CamEngine, x: Any, done: int, total: int
         ) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """``engine.run(x)``, turning its forward passes into ``Progress("forward", …)``."""
    steps = engine.run(x)
    try:
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value
            done += 1
            yield Progress("forward", done, total)
    finally:
        steps.close()


def _at_input_size(engine: CamEngine, maps: np.ndarray, shape: tuple[int, int],
                   scale: str) -> np.ndarray:
    """:func:`~.cam_stitch.to_input_size`, unless the engine fused several stages (its
    maps are then at the input's size and in ``scale`` already)."""
    return maps if engine.fused else to_input_size(maps, shape, scale)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))).astype(np.float32)


def _windowed(prep: Any, model: Any, engine: CamEngine, scale: str,
              seconds: dict[str, float]) -> Generator[Progress, None, MapResult]:
    t0 = time.perf_counter()
    grid = prep.grid
    s = grid.window
    todo = np.flatnonzero(prep.active.ravel())
    corners = grid.corners().reshape(-1, 2)
    logits = np.zeros((grid.n_windows, len(model.labels)), dtype=np.float32)
    stitcher = Stitcher(engine.maps_per_image, prep.pixels.shape, s)
    per_forward = engine.steps_forward
    total = len(todo) * engine.forwards_per_image() if per_forward else len(todo)
    yield Progress("forward" if per_forward else "window", 0, total)
    done, stitching = 0, 0.0
    batch = 1 if per_forward else engine.rt.batch_size
    for flat, x in WindowFeeder(prep, model, engine.rt).batches(todo, batch):
        maps, logits[flat] = yield from _run(engine, x, done, total)
        t1 = time.perf_counter()
        n, b, h, w = maps.shape
        if engine.fused:
            stitcher.add(corners[flat], maps)  # already at the window's size and scale
        elif scale == "raw":
            stitcher.add_lowres(corners[flat], maps)
        else:
            up = to_input_size(maps.reshape(n * b, h, w), (s, s), scale)
            stitcher.add(corners[flat], up.reshape(n, b, s, s))
        stitching += time.perf_counter() - t1
        if per_forward:
            done += engine.forwards_per_image()
        else:
            done += len(flat)
            yield Progress("window", done, total)
    t1 = time.perf_counter()
    saliency = stitcher.result()
    stitching += time.perf_counter() - t1
    if engine.label_free:
        saliency = np.repeat(saliency, len(engine.labels), axis=0)
    probabilities = np.zeros((grid.n_windows, len(engine.labels)), dtype=np.float32)
    probabilities[todo] = _sigmoid(logits[todo][:, engine.labels])
    seconds["cam"] = round(time.perf_counter() - t0 - stitching, 3)
    seconds["stitch"] = round(stitching, 3)
    return MapResult(
        labels=[], grid=grid, prediction=grid_maps(grid, probabilities, prep.active),
        window_mask=prep.active, spacing_mm=prep.spacing_mm, meta=dict(prep.meta),
        extra={"saliency": saliency},
        stats=RunStats(roi_box=list(prep.roi.box), windows_total=int(grid.n_windows),
                       windows_evaluated=len(todo)))


@dataclass
class GlobalInput:
    """The global-mode input of an image (docs/method.md §8).

    ``image`` is the model's fused input image (§2, the same fusion the windows are cut
    from) cropped to the breast region ``roi.box`` and resized so its long side is
    ``global_size``: float32 ``(rows, cols, 3)`` in [0, 1], image space (the model's
    normalisation comes afterwards).
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    meta: dict[str, Any]
    roi: BreastROI
    image: np.ndarray


def global_input(image: Mammogram | np.ndarray, model: ImageModelLike,
                 global_size: int = DEFAULT_GLOBAL_SIZE) -> GlobalInput:
    """Fuse the model's input image (its preprocessing profile), crop the breast region
    (Otsu, the ROI the window grid is laid over) and resize it so its long side is
    ``global_size`` (``cv2.INTER_AREA`` when shrinking, bilinear when enlarging)."""
    import cv2

    pixels, spacing, meta = as_pixels(image)
    profile = preprocessing_of(model)
    source = model_input(image, pixels, profile)
    roi = breast_roi(source)
    y0, x0, y1, x1 = roi.box
    crop = profile.fuse(source)[y0:y1, x0:x1]
    factor = int(global_size) / max(crop.shape[:2])
    rows = max(1, round(crop.shape[0] * factor))
    cols = max(1, round(crop.shape[1] * factor))
    small = cv2.resize(crop, (cols, rows),
                       interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    return GlobalInput(pixels, spacing, meta, roi, np.ascontiguousarray(small, np.float32))


def _global(inputs: GlobalInput, model: Any, engine: CamEngine, scale: str,
            seconds: dict[str, float]) -> Generator[Progress, None, MapResult]:
    import torch

    t0 = time.perf_counter()
    x = torch.from_numpy(inputs.image).permute(2, 0, 1)[None].to(engine.rt.device)
    x = model.normalize(x)
    total = engine.forwards_per_image() if engine.steps_forward else 1
    maps, logits = yield from _run(engine, x, 0, total)
    if not engine.steps_forward:
        yield Progress("global", 1, 1)
    n = maps.shape[0]
    # As the library: to the input's size; then onto the breast region.
    at_input = _at_input_size(engine, maps.reshape(n, *maps.shape[2:]),
                              inputs.image.shape[:2], scale)
    y0, x0, y1, x1 = inputs.roi.box
    saliency = np.full((n, *inputs.pixels.shape), np.nan, dtype=np.float32)
    saliency[:, y0:y1, x0:x1] = upsample(at_input, (y1 - y0, x1 - x0))
    if engine.label_free:
        saliency = np.repeat(saliency, len(engine.labels), axis=0)
    side = max(y1 - y0, x1 - x0)
    origin = (y0 - (side - (y1 - y0)) // 2, x0 - (side - (x1 - x0)) // 2)
    grid = WindowGrid(side, side, origin, (1, 1), inputs.pixels.shape)
    probabilities = _sigmoid(logits[0, engine.labels]).reshape(-1, 1, 1)
    seconds["cam"] = round(time.perf_counter() - t0, 3)
    return MapResult(
        labels=[], grid=grid, prediction=probabilities,
        window_mask=np.ones((1, 1), dtype=bool), spacing_mm=inputs.spacing_mm,
        meta=dict(inputs.meta), extra={"saliency": saliency},
        stats=RunStats(roi_box=list(inputs.roi.box), windows_total=1, windows_evaluated=1))


@dataclass
class WindowCams:
    """CAM-family maps of a batch of windows (:func:`cam_windows`).

    ``saliency``: float32 ``(B, labels, S, S)`` in window pixels; ``logits``: ``(B, C)``
    of every model label; ``labels``: the explained labels; ``target_layer``: the module
    used.
    """

    saliency: np.ndarray
    logits: np.ndarray
    labels: list[str]
    target_layer: str


def cam_windows(model: ImageModelLike, windows: Any, method: str = "gradcam", *,
                labels: Sequence[str] | None = None, scale: str = "raw",
                target_layer: str | None = None, layers: int | None = None,
                runtime: Runtime | None = None, **runtime_options: Any) -> WindowCams:
    """The maps the windowed mode stitches, for windows the caller cut: ``windows`` is
    ``(B, 3, S, S)`` fused RGB in [0, 1] (image space; the model normalises them), a
    tensor or array. Each map is upsampled to ``S × S`` as in :func:`cam`; ``layers``
    as there."""
    import torch

    _checked(method, "windowed", scale, DEFAULT_GLOBAL_SIZE)
    from .cam_engine import CamEngine

    rt = runtime or Runtime(**runtime_options)
    index = _label_indices(model, labels)
    model = rt.prepare_model(model)
    x = windows if torch.is_tensor(windows) else torch.from_numpy(
        np.asarray(windows, dtype=np.float32))
    x_all = model.normalize(x.float().to(rt.device))
    engine = CamEngine(model, method, target_layer, index, rt, stages=layers, scale=scale)
    step = 1 if engine.steps_forward else rt.batch_size
    size = x_all.shape[-2:]
    parts, logit_parts = [], []
    try:
        for i in range(0, len(x_all), step):
            maps, logits = drain(_run(engine, x_all[i : i + step], 0, 0))
            n, b, h, w = maps.shape
            up = _at_input_size(engine, maps.reshape(n * b, h, w),
                                (int(size[0]), int(size[1])), scale).reshape(n, b, *size)
            parts.append(np.repeat(up, len(index), axis=0) if engine.label_free else up)
            logit_parts.append(logits)
    finally:
        engine.close()
    return WindowCams(np.concatenate(parts, axis=1).transpose(1, 0, 2, 3),
                      np.concatenate(logit_parts), [model.labels[i] for i in index],
                      engine.layer_name)
