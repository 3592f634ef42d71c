"""What every CAM-family map method shares (docs/method.md §8); one file per method
beside this one names the method and says what its weighting does."""

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

__all__ = ["CamMethod"]


class CamMethod(MapMethod):
    """A CAM-family saliency map (docs/method.md §8) plus the prediction map.

    Options (:meth:`MapSettings.option`): ``mode`` (``"windowed"`` or ``"global"``),
    ``scale`` (``"raw"`` or ``"window"``), ``target_layer`` (dotted module name, None for
    the default) and ``global_size`` (long side of the global input, pixels); see
    :func:`~napari_correlax.maps.cam.cam_steps`.
    """

    kinds = ("saliency", "prediction")
    uses = WINDOW_FIELDS
    options = frozenset({"mode", "scale", "target_layer", "global_size"})

    def steps(self, image: Mammogram | np.ndarray, model: ImageModelLike,
              settings: MapSettings) -> Generator[Progress, None, MapResult]:
        from ..cam import cam_steps

        return (yield from cam_steps(image, model, settings.with_(method=self.name)))
