"""Reading images and data sets (SPEC §1, §11)."""

from napari_correlax.io.image import SUPPORTED_SUFFIXES, Mammogram, read_mammogram

__all__ = ["SUPPORTED_SUFFIXES", "Mammogram", "read_mammogram"]
