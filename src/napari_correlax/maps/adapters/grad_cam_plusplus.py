"""The ``"gradcam++"`` map method: Grad-CAM++ (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["GradCamPlusPlusMethod"]


class GradCamPlusPlusMethod(CamMethod):
    """Grad-CAM++ (docs/method.md §8)."""

    name = "gradcam++"
    title = "Grad-CAM++"
    description = "Grad-CAM with positive gradients weighted by higher-order terms."
