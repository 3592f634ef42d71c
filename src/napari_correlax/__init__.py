"""napari-correlax: explain multi-label mammogram classifiers with CorRELAX.

The public API (docs/method.md §12) is imported lazily so ``import napari_correlax`` (and the
napari reader) stay fast and do not load torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "read_mammogram": "napari_correlax.io",
    "Mammogram": "napari_correlax.io",
    "load_classifier": "napari_correlax.models",
    "predict": "napari_correlax.maps",
    "explain": "napari_correlax.maps",
    "explain_windows": "napari_correlax.maps",
    "load_result": "napari_correlax.maps",
    "load_gmic": "napari_correlax.gmic",
    "cam": "napari_correlax.maps.cam",
    "MapResult": "napari_correlax.maps",
    "CorrelaxError": "napari_correlax.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'napari_correlax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
