"""The ``"eigencam"`` map method: Eigen-CAM (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["EigenCamMethod"]


class EigenCamMethod(CamMethod):
    """Eigen-CAM (docs/method.md §8)."""

    name = "eigencam"
    title = "Eigen-CAM"
    description = "First principal component of the feature maps (the same for every label)."
