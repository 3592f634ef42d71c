"""GMIC, the Globally-Aware Multiple Instance Classifier (docs/method.md §9).

The network with the official module names (:mod:`.network`), its pooling and patch
retrieval (:mod:`.retrieval`), loading of the published weights and the project's
checkpoints (:mod:`.checkpoint`) and the official input preprocessing with its
transform back to the mammogram (:mod:`.preprocess`). Names are imported lazily so
that importing this package does not load torch.
"""

from __future__ import annotations

from typing import Any

_API = {
    "FEATURE_LAYER": "napari_correlax.gmic.network",
    "GMIC": "napari_correlax.gmic.network",
    "GMICOutput": "napari_correlax.gmic.network",
    "GMICResult": "napari_correlax.gmic.network",
    "GMICConfig": "napari_correlax.gmic.config",
    "feature_grid_size": "napari_correlax.gmic.config",
    "load_gmic": "napari_correlax.gmic.checkpoint",
    "save_gmic": "napari_correlax.gmic.checkpoint",
    "import_gmic": "napari_correlax.gmic.checkpoint",
    "gmic_input": "napari_correlax.gmic.preprocess",
    "GMICInput": "napari_correlax.gmic.preprocess",
    "InputTransform": "napari_correlax.gmic.preprocess",
    "top_t_pool": "napari_correlax.gmic.retrieval",
    "retrieve_windows": "napari_correlax.gmic.retrieval",
    "cells_to_pixels": "napari_correlax.gmic.retrieval",
    "crop_patches": "napari_correlax.gmic.retrieval",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'napari_correlax.gmic' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
