"""Sliding-window maps and their explanations (docs/method.md §6–8): predict, CorRELAX, results.

Named ``maps`` (not ``explain``) so that ``from napari_correlax import explain`` gives the
function of docs/method.md §12 rather than a subpackage.
"""

from __future__ import annotations

from typing import Any

from .result import MapResult, load_result
from .runtime import Progress, Runtime, drain
from .sliding import predict, predict_steps

__all__ = [
    "MapResult",
    "Progress",
    "Runtime",
    "drain",
    "explain",
    "explain_windows",
    "load_result",
    "predict",
    "predict_steps",
]


def __getattr__(name: str) -> Any:
    # CorRELAX lives in its own modules (windows, whole images); imported on first use.
    if name in ("explain", "explain_steps"):
        from . import image_explain

        return getattr(image_explain, name)
    if name == "explain_windows":
        from . import correlax

        return correlax.explain_windows
    raise AttributeError(name)
