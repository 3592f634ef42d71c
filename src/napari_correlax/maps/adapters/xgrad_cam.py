"""The ``"xgradcam"`` map method: XGrad-CAM (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["XGradCamMethod"]


class XGradCamMethod(CamMethod):
    """XGrad-CAM (docs/method.md §8)."""

    name = "xgradcam"
    title = "XGrad-CAM"
    description = "Gradients weighted by the normalised activations of each channel."
