"""Classifier models and their checkpoints (SPEC §4)."""

from .checkpoint import DEMO_CHECKPOINT, load_classifier, read_metadata, save_checkpoint

__all__ = ["DEMO_CHECKPOINT", "load_classifier", "read_metadata", "save_checkpoint"]
