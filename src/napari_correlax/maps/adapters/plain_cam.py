"""The ``"cam"`` map method: CAM (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["PlainCamMethod"]


class PlainCamMethod(CamMethod):
    """CAM (docs/method.md §8)."""

    name = "cam"
    title = "CAM"
    description = ("Class activation map (Zhou et al.): feature channels weighted by a "
                   "one-layer linear head's weights; only for models with such a head.")
