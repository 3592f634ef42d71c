"""The ``"layercam"`` map method: LayerCAM (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["LayerCamMethod"]


class LayerCamMethod(CamMethod):
    """LayerCAM (docs/method.md §8)."""

    name = "layercam"
    title = "LayerCAM"
    description = "Activations times their positive gradients, position by position."
