"""The analysis dock's work, apart from its widgets: the request a run sends to its worker,
the worker body, and reading pixels and labels. No Qt here (napari's worker runs
:func:`analysis_steps` in a thread)."""

from __future__ import annotations

import html
import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError, JobFailure
from ..maps.runtime import Progress
from ..maps.settings import MapSettings

if TYPE_CHECKING:
    from ..maps.result import MapResult
    from ..models.checkpoint import ModelSummary

log = logging.getLogger(__name__)


@dataclass
class AnalysisRequest:
    """Everything one run needs, copied out of the GUI (the worker never reads widgets)."""

    image_name: str
    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    meta: dict[str, Any]
    path: str | None
    checkpoint: str | None
    settings: MapSettings = field(default_factory=MapSettings)


@dataclass
class Finished:
    """What the worker returns on success: the maps and the image layer they belong to."""

    image_name: str
    result: MapResult


def analysis_steps(request: AnalysisRequest
                   ) -> Generator[Progress, None, Finished | JobFailure]:
    """Load the model and run the settings' map method; yields progress, returns a result.

    Returns :class:`Finished` with the :class:`~napari_correlax.maps.MapResult`, or
    :class:`~napari_correlax.errors.JobFailure` for any error (napari would show a raised
    exception with its traceback).
    """
    try:
        from ..io.image import Mammogram
        from ..maps.methods import run_method
        from ..models import load_model

        yield Progress("model", 0, 1)
        settings = request.settings
        # a classifier or a GMIC checkpoint, whichever the file holds
        model = load_model(request.checkpoint or None, device=settings.runtime().device)
        yield Progress("model", 1, 1)
        image = Mammogram(request.pixels, request.spacing_mm, dict(request.meta), request.path)
        result = yield from run_method(image, model, settings)
    except CorrelaxError as exc:
        return JobFailure(str(exc))
    except MemoryError:
        return JobFailure("out of memory: lower the batch size or use a larger stride")
    except Exception as exc:
        log.exception("CorRELAX analysis failed")
        return JobFailure(f"CorRELAX analysis failed: {type(exc).__name__}: {exc}")
    return Finished(request.image_name, result)


def checkpoint_summary(path: str | None) -> ModelSummary | str:
    """The checkpoint's :class:`~napari_correlax.models.checkpoint.ModelSummary`, or why it
    cannot be read (the dock then offers the method's eight labels)."""
    from ..models.checkpoint import model_summary

    try:
        return model_summary(path)
    except Exception as exc:
        return str(exc)


def model_badge(summary: ModelSummary | str) -> str:
    """Rich text under the model field: its name, and a warning with a link to the model
    card when it was trained on phantoms only."""
    if isinstance(summary, str):
        return f"<span style='color:#ff6060'>⚠ {html.escape(summary)}</span>"
    kind = " (GMIC)" if summary.kind == "GMIC" else ""
    text = f"<b>{html.escape(summary.name)}</b>{kind}, {len(summary.labels)} labels"
    if summary.phantoms_only:
        text += ("<br><span style='color:#ffb020'>⚠ trained on synthetic phantoms only: "
                 "not for real mammograms.</span>")
    if summary.model_card is not None:
        text += f" <a href='{summary.model_card.as_uri()}'>Model card</a>"
    return text


def image_pixels(layer: Any) -> np.ndarray:
    """H×W float32 pixels in [0, 1] of a 2-D grey image layer (min–max scaled if needed)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    arr = np.asarray(data)
    if getattr(layer, "rgb", False) or arr.ndim != 2 or arr.size == 0:
        raise CorrelaxError(f"layer {layer.name!r} is not a 2-D grey image (shape {arr.shape})")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise CorrelaxError(f"layer {layer.name!r} holds NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return arr


def image_layer_for(layers: Any, result: MapResult, path: str | Path) -> str:
    """Name of the image layer a saved result belongs to: the layer read from the same
    file (``meta["source"]``), else one named after that file, else after ``path``."""
    source = result.meta.get("source")
    if source:
        for layer in layers:
            if (layer.metadata or {}).get("path") == source:
                return str(layer.name)
    return Path(source or path).stem
