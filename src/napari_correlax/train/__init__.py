"""Training the classifier (docs/method.md §5, paper §3.3): crops, sampler, focal loss, fit loop.

Imports torch; nothing outside training and the CLI's ``train`` command imports it.
"""

from .crops import CropConfig, CropDataset, FusedImageCache, build_samples, sample_weights
from .fit import (
    StartingWeights,
    TrainConfig,
    TrainEvent,
    TrainResult,
    TrainSplit,
    evaluate_crops,
    load_starting_weights,
    split_records,
    train,
    train_steps,
)
from .losses import focal_loss

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
    "focal_loss",
    "load_starting_weights",
    "sample_weights",
    "split_records",
    "train",
    "train_steps",
]
