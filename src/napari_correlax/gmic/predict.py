"""GMIC on single images, as the official runner reports them (docs/method.md §9).

:func:`predict_image` runs one GMIC, or several (an ensemble such as the five published
models), on a mammogram and keeps every model's analysis; the ensemble's outputs are the
NaN-mean over the models, class by class (a model that gives NaN for a class does not
count for it). :func:`write_predictions` writes the table (one row per image), and
:func:`save_gmic_figure` draws one image the way the official visualisation does: the
input with its ground-truth boxes, the patch map (the K retrieved patches with their
rank and attention), one saliency panel per class, and the K crops with their attention.

Coordinates: everything drawn is in original image pixels (the analysis warps the
saliency grid and the patch boxes back, :class:`~.preprocess.InputTransform`), so the
figure overlays the mammogram as it was read, not the mirrored, resized model input.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError

if TYPE_CHECKING:
    from ..io.image import Mammogram
    from ..maps.runtime import Progress
    from .method import GMICAnalysis
    from .network import GMIC

__all__ = ["GMICPrediction", "gmic_predict_steps", "patch_strip", "predict_image",
           "prediction_table", "save_gmic_figure", "write_predictions"]

OUTPUTS = ("y_global", "y_local", "y_fusion")


@dataclass(frozen=True)
class GMICPrediction:
    """One image through one or more GMICs.

    ``name``: the image's name in tables; ``class_names``: the models' outputs (all
    models must have the same); ``y_global``, ``y_local``, ``y_fusion``: (C,) the
    NaN-mean of the models' probabilities; ``analyses``: each model's full analysis, in
    the order the models were given (the figure draws the first one's maps and patches).
    """

    name: str
    class_names: tuple[str, ...]
    y_global: np.ndarray
    y_local: np.ndarray
    y_fusion: np.ndarray
    analyses: tuple[GMICAnalysis, ...]


def predict_image(image: Mammogram | np.ndarray, models: Sequence[GMIC], *,
                  name: str = "image", cam: str = "cam", retrieval_cam: str | None = None,
                  laterality: str | None = None) -> GMICPrediction:
    """Run every model of ``models`` on ``image``; the outputs are their NaN-mean.

    ``cam``: the map drawn (default GMIC's saliency); ``retrieval_cam``: the map that
    picks the patches (None: each model's own, the CAM it was trained with);
    ``laterality``: ``"L"``/``"R"``/None (metadata, else detection), as
    :func:`~.method.analyse`.
    """
    from .method import analyse

    if not models:
        raise CorrelaxError("no GMIC model given")
    analyses = tuple(analyse(image, m, (cam,), laterality=laterality,
                             retrieval_cam=retrieval_cam) for m in models)
    names = {a.class_names for a in analyses}
    if len(names) > 1:
        raise CorrelaxError("the models of an ensemble must have the same outputs, not "
                            + " vs ".join(", ".join(n) for n in sorted(names)))

    def nanmean(key: str) -> np.ndarray:
        stacked = np.stack([np.asarray(getattr(a, key), dtype=np.float64) for a in analyses])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN classes stay NaN
            return np.nanmean(stacked, axis=0)

    return GMICPrediction(name=name, class_names=analyses[0].class_names,
                          y_global=nanmean("y_global"), y_local=nanmean("y_local"),
                          y_fusion=nanmean("y_fusion"), analyses=analyses)


def patch_strip(pixels: np.ndarray, boxes: Sequence[Sequence[float]], *, gap: int = 8
                ) -> tuple[np.ndarray, list[int]]:
    """The patches of ``boxes`` (``(top, left, bottom, right)`` in pixel edges of
    ``pixels``) side by side, each cut from the image (clipped to it) and padded with
    NaN to the tallest; ``gap`` NaN columns between them. Returns the strip and the
    column where each patch starts."""
    image = np.asarray(pixels, dtype=np.float32)
    crops = []
    for top, left, bottom, right in boxes:
        r0, c0 = max(round(float(top)), 0), max(round(float(left)), 0)
        r1 = min(max(round(float(bottom)), r0 + 1), image.shape[0])
        c1 = min(max(round(float(right)), c0 + 1), image.shape[1])
        crops.append(image[r0:r1, c0:c1])
    height = max(c.shape[0] for c in crops)
    width = sum(c.shape[1] for c in crops) + gap * (len(crops) - 1)
    strip = np.full((height, width), np.nan, dtype=np.float32)
    starts, col = [], 0
    for crop in crops:
        strip[:crop.shape[0], col:col + crop.shape[1]] = crop
        starts.append(col)
        col += crop.shape[1] + gap
    return strip, starts


def prediction_table(predictions: Sequence[GMICPrediction]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the predictions table: ``image`` then, per class, its
    ``<class> y_global``, ``<class> y_local`` and ``<class> y_fusion`` (probabilities with
    six decimals; empty where NaN)."""
    if not predictions:
        return ["image"], []
    classes = predictions[0].class_names
    header = ["image"] + [f"{c} {out}" for c in classes for out in OUTPUTS]
    rows = []
    for p in predictions:
        if p.class_names != classes:
            raise CorrelaxError(f"{p.name}: other outputs than the first image's "
                                f"({', '.join(p.class_names)} vs {', '.join(classes)})")
        values = [getattr(p, out)[i] for i in range(len(classes)) for out in OUTPUTS]
        rows.append([p.name] + ["" if np.isnan(v) else f"{v:.6f}" for v in values])
    return header, rows


def write_predictions(path: str | os.PathLike[str], predictions: Sequence[GMICPrediction]
                      ) -> Path:
    """``predictions.csv`` (:func:`prediction_table`), written atomically."""
    from ..files import atomic_write_csv

    return atomic_write_csv(path, *prediction_table(predictions))


def save_gmic_figure(path: str | os.PathLike[str], pixels: np.ndarray,
                     prediction: GMICPrediction, *, boxes: Sequence[Any] = (),
                     title: str = "", panel_inches: float = 2.6) -> Path:
    """The official runner's figure of one image (module notes), PNG, atomic.

    ``pixels``: the image (H×W, [0, 1], original orientation); ``boxes``: ground-truth
    boxes (:class:`~napari_correlax.boxes.Box` or ``(label, xmin, ymin, xmax, ymax)``) in
    image pixels. Top row: input with boxes, patch map, one saliency panel per class (on
    the fixed 0–1 scale); bottom row: the K crops with rank and attention.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..boxes import as_boxes
    from ..files import atomic_write_bytes
    from .cams import check_cam
    from .method import display_maps

    analysis = prediction.analyses[0]
    pixels = np.asarray(pixels, dtype=np.float32)
    cam = check_cam(next(iter(analysis.maps)))
    t = analysis.prepared.transform
    saliency = t.map_to_original(display_maps(analysis.maps[cam], cam))
    top = 2 + len(prediction.class_names)
    k = len(analysis.attention)
    cols = max(top, k)
    h, w = pixels.shape
    fig, axes = plt.subplots(2, cols, squeeze=False, figsize=(
        panel_inches * cols, panel_inches * (h / max(w, 1)) + panel_inches + 0.6))
    for ax in axes.ravel():
        ax.axis("off")
    ax = axes[0, 0]
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
    for b in as_boxes(boxes):
        ax.add_patch(plt.Rectangle((b.xmin, b.ymin), b.xmax - b.xmin, b.ymax - b.ymin,
                                   fill=False, ec="lime", lw=1))
    ax.set_title("input · ground truth", fontsize=8)
    ax = axes[0, 1]
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
    for rank, (b, a) in enumerate(zip(analysis.boxes, analysis.attention), 1):
        r0, c0, r1, c1 = (float(v) for v in b)
        ax.add_patch(plt.Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, ec="orange", lw=1))
        ax.text(c0, r0, f"{rank}: {a:.2f}", color="orange", fontsize=6, va="bottom")
    ax.set_title(f"patch map by {analysis.retrieval_cam} (rank: attention)", fontsize=8)
    for i, name in enumerate(prediction.class_names):
        ax = axes[0, 2 + i]
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
        im = ax.imshow(saliency[i], cmap="magma", vmin=0, vmax=1, alpha=0.55)
        ax.set_title(f"{name} · {cam} · ŷ {prediction.y_fusion[i]:.2f}", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    for j, (b, a) in enumerate(zip(analysis.boxes, analysis.attention)):
        r0, c0, r1, c1 = (round(float(v)) for v in b)
        ax = axes[1, j]
        ax.imshow(pixels[max(r0, 0):max(r1, r0 + 1), max(c0, 0):max(c1, c0 + 1)],
                  cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"patch {j + 1} · attention {a:.3f}", fontsize=8)
    models = len(prediction.analyses)
    fig.suptitle(f"{title}{' · ' if title else ''}GMIC"
                 f"{f' (maps of model 1 of {models}; outputs: mean)' if models > 1 else ''}",
                 fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def gmic_predict_steps(images: Sequence[str | os.PathLike[str]], models: Sequence[GMIC],
                       out: str | os.PathLike[str], *, cam: str = "cam",
                       retrieval_cam: str | None = None, laterality: str | None = None,
                       boxes: dict[Path, list[Any]] | None = None,
                       ) -> Generator[Progress, None, list[GMICPrediction]]:
    """``correlax gmic predict``: every image through the models, a figure per image
    (``<stem>.png``) and ``predictions.csv`` in ``out``; yields ``Progress("image", i, n)``.

    ``boxes``: ground-truth boxes by resolved image path (from a data set), drawn on the
    figures. An unreadable image raises CorrelaxError naming it, before any file is
    written for it; the table holds the images done so far only when all succeed.
    """
    from ..io import read_mammogram
    from ..maps.runtime import Progress

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done: list[GMICPrediction] = []
    n = len(images)
    yield Progress("image", 0, n)
    for i, path in enumerate(images, 1):
        path = Path(path)
        mammogram = read_mammogram(path)
        prediction = predict_image(mammogram, models, name=path.stem, cam=cam,
                                   retrieval_cam=retrieval_cam, laterality=laterality)
        truth = (boxes or {}).get(path.resolve(), [])
        save_gmic_figure(out / f"{path.stem}.png", mammogram.pixels, prediction,
                         boxes=truth, title=path.stem)
        done.append(prediction)
        yield Progress("image", i, n)
    write_predictions(out / "predictions.csv", done)
    return done
