"""The ``"scorecam"`` map method: Score-CAM (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["ScoreCamMethod"]


class ScoreCamMethod(CamMethod):
    """Score-CAM (docs/method.md §8)."""

    name = "scorecam"
    title = "Score-CAM"
    description = ("Channels weighted by the label's logit on the input masked by each "
                   "channel's map (one forward pass per batch of channels).")
