"""Training (docs/method.md §5, paper §3.3): settings, crops, sampler, focal loss, the fit loop.

The names below load their module (and torch) on first use, so the Qt-free run watcher
(:mod:`.watch`) imports without torch.
"""

from typing import Any

_MODULES = {
    "CropConfig": "settings", "CropDataset": "crops", "FusedImageCache": "crops",
    "build_samples": "crops", "sample_weights": "crops",
    "StartingWeights": "fit", "TrainConfig": "settings", "TrainEvent": "loop",
    "TrainResult": "fit", "fit_steps": "loop",
    "TrainSplit": "fit", "evaluate_crops": "fit", "load_starting_weights": "fit",
    "split_records": "fit", "train": "fit", "train_steps": "fit",
    "focal_loss": "losses",
}

__all__ = [
    "CropConfig",
    "CropDataset",
    "FusedImageCache",
    "StartingWeights",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "TrainSplit",
    "build_samples",
    "evaluate_crops",
    "fit_steps",
    "focal_loss",
    "load_starting_weights",
    "sample_weights",
    "split_records",
    "train",
    "train_steps",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
