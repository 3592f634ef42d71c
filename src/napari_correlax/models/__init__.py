"""Classifier models and their checkpoints (docs/method.md §4)."""

from .checkpoint import (
    DEMO_CHECKPOINT,
    load_classifier,
    load_model,
    read_metadata,
    save_checkpoint,
)
from .importers import import_codigotesis, import_model, import_torchvision
from .protocols import ImageModelLike, ModelLike

__all__ = [
    "DEMO_CHECKPOINT",
    "ImageModelLike",
    "ModelLike",
    "import_codigotesis",
    "import_model",
    "import_torchvision",
    "load_classifier",
    "load_model",
    "read_metadata",
    "save_checkpoint",
]
