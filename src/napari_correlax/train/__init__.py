"""Training the classifier (SPEC §5, paper §3.3): crops, sampler, focal loss, fit loop.

Imports torch; nothing outside training and the CLI's ``train`` command imports it.
"""

from .crops import CropConfig, CropDataset, FusedImageCache, build_samples, sample_weights
from .fit import TrainConfig, TrainEvent, TrainResult, evaluate_crops, train, train_steps
from .losses import focal_loss

__all__ = [
    "CropConfig",
    "CropDataset",
    "FusedImageCache",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "build_samples",
    "evaluate_crops",
    "focal_loss",
    "sample_weights",
    "train",
    "train_steps",
]
