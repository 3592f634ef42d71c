"""GMIC, the Globally-Aware Multiple Instance Classifier (docs/method.md §9).

The network with the official module names (:mod:`.network`), its pooling and patch
retrieval (:mod:`.retrieval`), the CAM methods that pick patches or localise
(:mod:`.cams`), loading of the published weights and the project's checkpoints
(:mod:`.checkpoint`), the official input preprocessing with its transform back to the
mammogram (:mod:`.preprocess`), training from image-level labels (:mod:`.data`,
:mod:`.train`), the evaluation of [CAM-GMIC] Tables I and II (:mod:`.evaluate`) and the
``"gmic"`` map method (:mod:`.method`). Names are imported lazily so that importing this
package does not load torch.
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
    "TRAIN_CAMS": "napari_correlax.gmic.cams",
    "cam_maps": "napari_correlax.gmic.cams",
    "GMICTrainConfig": "napari_correlax.gmic.train",
    "gmic_loss": "napari_correlax.gmic.train",
    "train_gmic": "napari_correlax.gmic.train",
    "train_gmic_steps": "napari_correlax.gmic.train",
    "GMICEvaluationConfig": "napari_correlax.gmic.evaluate",
    "gmic_evaluate": "napari_correlax.gmic.evaluate",
    "gmic_evaluate_steps": "napari_correlax.gmic.evaluate",
    "analyse": "napari_correlax.gmic.method",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'napari_correlax.gmic' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
