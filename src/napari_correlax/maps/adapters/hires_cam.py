"""The ``"hirescam"`` map method: HiRes-CAM (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["HiResCamMethod"]


class HiResCamMethod(CamMethod):
    """HiRes-CAM (docs/method.md §8)."""

    name = "hirescam"
    title = "HiRes-CAM"
    description = "Activations times their gradients, position by position."
