"""Reading images and data sets (docs/method.md §1, §11)."""

from .image import SUPPORTED_SUFFIXES, Mammogram, read_mammogram

__all__ = ["SUPPORTED_SUFFIXES", "Mammogram", "read_mammogram"]
