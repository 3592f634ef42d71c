"""The ``"correlax"`` map method: CorRELAX maps (docs/method.md §7)."""

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

__all__ = ["CorrelaxMethod"]


class CorrelaxMethod(MapMethod):
    """CorRELAX maps (docs/method.md §7) with the prediction maps of the same pass."""

    name = "correlax"
    title = "CorRELAX"
    kinds = ("prediction", "correlation", "product", "distance", "masks_used", "relevance",
             "correlation_ci")
    scored = "correlation"
    uses = WINDOW_FIELDS | {"masks", "adaptive", "tolerance", "min_masks", "focus",
                            "focus_share", "seed", "design"}
    description = ("Occlusion masks per window: how the features and each label's "
                   "prediction change together (correlation, distance, relevance).")

    def steps(self, image: Mammogram | np.ndarray, model: ImageModelLike,
              settings: MapSettings) -> Generator[Progress, None, MapResult]:
        from ..image_explain import explain_steps

        return (yield from explain_steps(image, model, settings))
