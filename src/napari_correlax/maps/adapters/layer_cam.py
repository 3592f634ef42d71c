"""The ``"layercam"`` map method: LayerCAM (docs/method.md §8)."""

from __future__ import annotations

from .cam_method import CamMethod

__all__ = ["LayerCamMethod"]


class LayerCamMethod(CamMethod):
    """LayerCAM (docs/method.md §8), over the last three backbone stages by default; the
    option ``layers`` sets how many (1: the target layer alone)."""

    name = "layercam"
    title = "LayerCAM"
    description = ("Activations times their positive gradients, position by position, "
                   "fused over the last backbone stages.")
    options = CamMethod.options | {"layers"}
