"""The ``"gradcam"`` map method: Grad-CAM (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["GradCamMethod"]


class GradCamMethod(CamMethod):
    """Grad-CAM (docs/method.md §8)."""

    name = "gradcam"
    title = "Grad-CAM"
    description = "Feature channels weighted by the mean gradient of the label's logit."
