"""The ``"ablationcam"`` map method: Ablation-CAM (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["AblationCamMethod"]


class AblationCamMethod(CamMethod):
    """Ablation-CAM (docs/method.md §8)."""

    name = "ablationcam"
    title = "Ablation-CAM"
    description = ("Channels weighted by the drop of the label's logit when each is "
                   "removed (one forward pass per batch of channels).")
