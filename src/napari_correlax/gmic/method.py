"""GMIC on one mammogram, as a map method (``"gmic"``, docs/method.md §9).

:func:`analyse` runs a GMIC on a :class:`~napari_correlax.io.Mammogram` (or an H×W
array): it brings the image to the model's input (:func:`~.preprocess.gmic_input` with
the model's ``input_size`` and ``fit``), runs the network once and computes the maps of
the chosen CAM methods (:mod:`.cams`) on the saliency grid. :class:`GMICMethod` turns
that into a :class:`~napari_correlax.maps.MapResult`:

``labels``
    The model's class names (``Mass`` for a model trained here, ``benign``/``malignant``
    for the published ones).
``extra["saliency"]``
    (classes, H, W) float32 in original image pixels, NaN outside the region the input
    covers: for ``cam`` (the default) GMIC's own saliency (a sigmoid, in (0, 1)); for a
    gradient CAM that method's map scaled to [0, 1] per class (as pytorch-grad-cam
    scales it). Grid maps are warped by bilinear interpolation between cell centres
    (:meth:`~.preprocess.InputTransform.map_to_original`).
``prediction``
    ŷ_fusion, the model's image-level probabilities, as a (classes, 1, 1) map on a
    one-cell grid: one square window as long as the image's long side, centred on the
    image, so a viewer draws it as a flat overlay over the whole image.
``meta["gmic"]``
    ``y_global``, ``y_local``, ``y_fusion`` (one value per class), ``cam`` (the method
    of the saliency), ``laterality`` and how it was chosen, ``fit``, ``input_size``,
    ``target_layer`` and ``patches``: the K retrieved patches in retrieval order, each
    ``{"box": [row, col, height, width], "attention": a}`` with the box in original
    image pixels (row and column of the top-left corner, pixel edges), for a Shapes layer.

Laterality (GMIC mirrors right breasts to face right): the ``laterality`` option when
given (``"L"``/``"R"``), else the image's ``meta["laterality"]``, else :func:`breast_side`.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..maps.methods import MapMethod

if TYPE_CHECKING:
    from ..io.image import Mammogram
    from ..maps.result import MapResult
    from ..maps.runtime import Progress
    from ..maps.settings import MapSettings
    from .network import GMIC
    from .preprocess import GMICInput

__all__ = ["GMICAnalysis", "GMICMethod", "analyse", "breast_side", "display_maps"]


def breast_side(pixels: np.ndarray) -> str:
    """``"L"`` or ``"R"``: which image edge the chest wall lies on, for images without
    laterality metadata. The breast is widest at the chest wall, so the half of the image
    (left or right of the centre column) holding more breast tissue (the Otsu breast
    mask of :func:`~napari_correlax.preprocess.breast_roi`) is the chest wall's: ``"L"``
    (a left breast in the usual orientation) when it is the left half, ties included."""
    from ..preprocess import breast_roi

    mask = breast_roi(np.asarray(pixels, dtype=np.float32)).mask
    half = mask.shape[1] // 2
    return "L" if int(mask[:, :half].sum()) >= int(mask[:, mask.shape[1] - half:].sum()) else "R"


@dataclass(frozen=True)
class GMICAnalysis:
    """One image through a GMIC (:func:`analyse`).

    ``prepared``: the input and its transform to the original image; ``y_global``,
    ``y_local``, ``y_fusion``: (C,) probabilities; ``maps``: CAM name → (C, h, w) map on
    the saliency grid before any scaling (``cam``: the sigmoid saliency); ``boxes``:
    (K, 4) patch boxes ``(top, left, bottom, right)`` in original pixel edges;
    ``attention``: (K,); ``laterality_source``: ``"option"``, ``"metadata"`` or
    ``"detected"``; ``seconds``: time of the run; ``retrieval_cam``: the map that picked
    the patches (the model's training CAM unless another was asked for).
    """

    prepared: GMICInput
    class_names: tuple[str, ...]
    y_global: np.ndarray
    y_local: np.ndarray
    y_fusion: np.ndarray
    maps: dict[str, np.ndarray]
    boxes: np.ndarray
    attention: np.ndarray
    laterality_source: str
    seconds: float
    retrieval_cam: str = "cam"


def _laterality(image: Any, option: str | None) -> tuple[str, str]:
    if option not in (None, "", "auto"):
        side = str(option).strip().upper()
        if side not in ("L", "R"):
            raise CorrelaxError(f"laterality must be 'L', 'R' or 'auto', not {option!r}")
        return side, "option"
    meta = getattr(image, "meta", None) or {}
    side = str(meta.get("laterality") or "").strip().upper()
    if side in ("L", "R"):
        return side, "metadata"
    pixels = getattr(image, "pixels", image)
    return breast_side(np.asarray(pixels)), "detected"


def analyse(image: Mammogram | np.ndarray, model: GMIC, cams: tuple[str, ...] = ("cam",), *,
            laterality: str | None = None, view: str | None = None,
            retrieval_cam: str | None = None) -> GMICAnalysis:
    """Run ``model`` on ``image`` and compute the maps of ``cams`` (module notes).

    ``laterality``: ``"L"``, ``"R"`` or None/``"auto"`` (metadata, else detection);
    ``view``: ``"CC"``/``"MLO"`` (default: the image's metadata). The input follows the
    model's ``config.input_size`` and ``config.fit``. ``retrieval_cam``: the map that picks
    the K patches (and so ŷ_local, ŷ_fusion and the attention); None for the model's own,
    the CAM it was trained with (``config.train_cam``).
    """
    import torch

    from .cams import cam_maps, check_cam, check_cams
    from .network import GMIC
    from .preprocess import gmic_input

    if not isinstance(model, GMIC):
        raise CorrelaxError(f"the GMIC method needs a GMIC model, not a {type(model).__name__}; "
                            "load a GMIC checkpoint (correlax gmic import / train)")
    names = check_cams(list(cams))
    picker = check_cam(retrieval_cam) if retrieval_cam else model.config.train_cam
    t0 = time.perf_counter()
    side, source = _laterality(image, laterality)
    cfg = model.config
    prepared = gmic_input(image, side, view=view, size=cfg.input_size, fit=cfg.fit)
    param = next(model.parameters())
    x = prepared.tensor().to(device=param.device, dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x, picker)
        maps = {name: cam_maps(model, out.features, out.saliency, name)[0].cpu().numpy()
                for name in names}
    finally:
        model.train(was_training)
    corners = out.patch_locations[0].cpu().numpy()
    rows, cols = prepared.transform.input_shape
    top, left = corners[:, 0], corners[:, 1]
    boxes = np.stack([top, left, np.minimum(top + cfg.crop_shape[0], rows),
                      np.minimum(left + cfg.crop_shape[1], cols)], axis=-1)
    return GMICAnalysis(
        prepared=prepared, class_names=tuple(cfg.class_names),
        y_global=out.y_global[0].cpu().numpy(), y_local=out.y_local[0].cpu().numpy(),
        y_fusion=out.y_fusion[0].cpu().numpy(), maps=maps,
        boxes=prepared.transform.box_to_original(boxes),
        attention=out.attention[0].cpu().numpy(), laterality_source=source,
        seconds=time.perf_counter() - t0, retrieval_cam=picker)


def display_maps(raw: np.ndarray, cam: str) -> np.ndarray:
    """A CAM map (…, h, w) on the scale it is shown and thresholded on: GMIC's saliency
    as it is (a probability), a gradient CAM min–max scaled to [0, 1] per map."""
    from .cams import check_cam, unit_maps

    if check_cam(cam) == "cam":
        return np.asarray(raw, dtype=np.float32)
    return unit_maps(raw)


def to_result(analysis: GMICAnalysis, image: Any, cam: str, model: Any = None) -> MapResult:
    """The :class:`~napari_correlax.maps.MapResult` of an analysis (module notes)."""
    from ..maps.result import MapResult
    from ..maps.stats import RunStats
    from ..windows import WindowGrid
    from .cams import check_cam
    from .network import FEATURE_LAYER

    cam = check_cam(cam)
    t = analysis.prepared.transform
    height, width = t.original_shape
    side = max(height, width)
    grid = WindowGrid(side, side, ((height - side) // 2, (width - side) // 2), (1, 1),
                      (height, width))
    saliency = t.map_to_original(display_maps(analysis.maps[cam], cam))
    patches = [{"box": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                "attention": float(a)} for b, a in zip(analysis.boxes, analysis.attention)]
    meta = dict(getattr(image, "meta", None) or {})
    meta["gmic"] = {
        "classes": list(analysis.class_names),
        "y_global": [float(v) for v in analysis.y_global],
        "y_local": [float(v) for v in analysis.y_local],
        "y_fusion": [float(v) for v in analysis.y_fusion],
        "cam": cam, "retrieval_cam": analysis.retrieval_cam,
        "laterality": analysis.prepared.laterality,
        "laterality_from": analysis.laterality_source, "view": analysis.prepared.view,
        "fit": getattr(getattr(model, "config", None), "fit", None),
        "input_size": list(t.input_shape), "target_layer": FEATURE_LAYER,
        "patches": patches,
    }
    stats = RunStats(model=str(getattr(model, "checkpoint_path", None) or "GMIC"),
                     backbone="GMIC", device=str(next(model.parameters()).device)
                     if model is not None else "",
                     seconds={"gmic": round(analysis.seconds, 3)})
    return MapResult(
        labels=list(analysis.class_names), grid=grid,
        prediction=np.asarray(analysis.y_fusion, dtype=np.float32).reshape(-1, 1, 1),
        window_mask=np.ones((1, 1), dtype=bool),
        spacing_mm=getattr(image, "spacing_mm", None),
        meta=meta, extra={"saliency": saliency.astype(np.float32, copy=False)}, stats=stats)


class GMICMethod(MapMethod):
    """GMIC's saliency map (or a gradient CAM of its global network), its image-level
    prediction and its patches (module notes); needs a GMIC model."""

    name = "gmic"
    title = "GMIC"
    kinds = ("saliency", "prediction")
    scored = "saliency"
    uses = frozenset()
    options = frozenset({"laterality", "cam", "retrieval_cam"})
    description = ("GMIC (a GMIC model is needed): the saliency map of its global network "
                   "(or a gradient CAM of it), its image-level prediction and the patches "
                   "its local network looked at.")

    def steps(self, image: Mammogram | np.ndarray, model: Any, settings: MapSettings
              ) -> Generator[Progress, None, MapResult]:
        from ..maps.runtime import Progress

        cam = str(settings.option("cam", "cam") or "cam")
        yield Progress("gmic", 0, 1)
        analysis = analyse(image, model, (cam,), laterality=settings.option("laterality"),
                           retrieval_cam=settings.option("retrieval_cam") or None)
        yield Progress("gmic", 1, 1)
        return to_result(analysis, image, cam, model)
