"""The ``"prediction"`` map method: sliding-window label probabilities (docs/method.md §6)."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from ..methods import WINDOW_FIELDS, MapMethod

if TYPE_CHECKING:
    import numpy as np

    from ...io.image import Mammogram
    from ...models.protocols import ImageModelLike
    from ..result import MapResult
    from ..runtime import Progress
    from ..settings import MapSettings

__all__ = ["PredictionMethod"]


class PredictionMethod(MapMethod):
    """Sliding-window label probabilities (docs/method.md §6)."""

    name = "prediction"
    title = "Prediction"
    kinds = ("prediction",)
    uses = WINDOW_FIELDS
    description = "Per-label probabilities of the classifier in 256 px sliding windows."

    def steps(self, image: Mammogram | np.ndarray, model: ImageModelLike,
              settings: MapSettings) -> Generator[Progress, None, MapResult]:
        from ..sliding import predict_steps

        return (yield from predict_steps(image, model, settings))
