"""Map methods: everything that turns an image and a model into maps, behind one interface.

A method has a name, the map kinds it produces (:mod:`.kinds`), the
:class:`~napari_correlax.maps.settings.MapSettings` fields its maps depend on, and a
generator that yields :class:`~napari_correlax.maps.runtime.Progress` events and returns a
:class:`~napari_correlax.maps.MapResult`. The registry lists them: the docks, the command
line, the result cache, export and evaluation iterate over it, so a new method is one
class and one :func:`register_method` call::

    @register_method
    class Constant(MapMethod):
        name, title, kinds = "constant", "Constant map", ("prediction",)
        uses = frozenset({"stride"})

        def steps(self, image, model, settings):
            ...
            return result
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, ClassVar

from ..errors import CorrelaxError

if TYPE_CHECKING:
    import numpy as np

    from ..io.image import Mammogram
    from ..models.protocols import ImageModelLike
    from .result import MapResult
    from .runtime import Progress
    from .settings import MapSettings

__all__ = [
    "CAM_FAMILY",
    "METHODS",
    "CamMethod",
    "CorrelaxMethod",
    "MapMethod",
    "PredictionMethod",
    "get_method",
    "register_method",
    "run_method",
]

#: Settings fields every window-based method depends on.
_WINDOWS = frozenset({"stride", "reach", "min_tissue", "precision"})


class MapMethod:
    """Base class of map methods (see the module docstring)."""

    #: Registry key, used on the command line (``--method``) and in cache keys.
    name: ClassVar[str] = ""
    #: Name shown in the docks.
    title: ClassVar[str] = ""
    #: Kinds (:data:`~napari_correlax.maps.kinds.KINDS` names) of the maps it returns.
    kinds: ClassVar[tuple[str, ...]] = ()
    #: :class:`MapSettings` fields that change its maps (the rest only change speed).
    uses: ClassVar[frozenset[str]] = _WINDOWS
    #: One line for tooltips.
    description: ClassVar[str] = ""
    #: The kind ``correlax compare`` scores for this method (default: the first of
    #: :attr:`kinds`).
    scored: ClassVar[str] = ""
    #: Names of the method-specific options (:attr:`MapSettings.options`) it reads.
    options: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.scored and cls.kinds:
            cls.scored = cls.kinds[0]

    def steps(
        self, image: Mammogram | np.ndarray, model: ImageModelLike, settings: MapSettings
    ) -> Generator[Progress, None, MapResult]:
        """Yield progress, return the maps of ``image`` (a Mammogram or H×W array)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<map method {self.name!r}>"


#: Registered methods by name, in registration order.
METHODS: dict[str, MapMethod] = {}


def register_method(cls: type[MapMethod]) -> type[MapMethod]:
    """Register a :class:`MapMethod` subclass (usable as a class decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> MapMethod:
    """The registered method ``name`` (CorrelaxError naming the known ones otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise CorrelaxError(
            f"unknown map method {name!r}; choose one of {', '.join(METHODS)}"
        ) from None


def run_method(image: Mammogram | np.ndarray, model: ImageModelLike, settings: MapSettings
               ) -> Generator[Progress, None, MapResult]:
    """``settings.method``'s generator; the result records the method and its settings."""
    method = get_method(settings.method)
    result = yield from method.steps(image, model, settings)
    result.stats.method = method.name
    result.stats.settings = {**result.stats.settings, **settings.map_fields()}
    return result


@register_method
class PredictionMethod(MapMethod):
    """Sliding-window label probabilities (docs/method.md §6)."""

    name = "prediction"
    title = "Prediction"
    kinds = ("prediction",)
    uses = _WINDOWS
    description = "Per-label probabilities of the classifier in 256 px sliding windows."

    def steps(self, image: Mammogram | np.ndarray, model: ImageModelLike,
              settings: MapSettings) -> Generator[Progress, None, MapResult]:
        from .sliding import predict_steps

        return (yield from predict_steps(image, model, stride=settings.stride,
                                         reach=settings.reach, min_tissue=settings.min_tissue,
                                         runtime=settings.runtime()))


@register_method
class CorrelaxMethod(MapMethod):
    """CorRELAX maps (docs/method.md §7) with the prediction maps of the same pass."""

    name = "correlax"
    title = "CorRELAX"
    kinds = ("prediction", "correlation", "product", "distance", "masks_used", "relevance",
             "correlation_ci")
    scored = "correlation"
    uses = _WINDOWS | {"masks", "adaptive", "tolerance", "min_masks", "focus",
                       "focus_share", "seed", "design"}
    description = ("Occlusion masks per window: how the features and each label's "
                   "prediction change together (correlation, distance, relevance).")

    def steps(self, image: Mammogram | np.ndarray, model: ImageModelLike,
              settings: MapSettings) -> Generator[Progress, None, MapResult]:
        from .correlax import explain_steps

        return (yield from explain_steps(
            image, model, masks=settings.masks, adaptive=settings.adaptive,
            focus=settings.focus, seed=settings.seed, stride=settings.stride,
            reach=settings.reach, min_tissue=settings.min_tissue,
            focus_share=settings.focus_share,
            min_masks=settings.min_masks, tolerance=settings.tolerance,
            mask_batch=settings.mask_batch, design=settings.design,
            runtime=settings.runtime(),
        ))


#: The CAM family (docs/method.md §8): registry name → (class name, title, one line).
CAM_FAMILY: dict[str, tuple[str, str, str]] = {
    "cam": ("PlainCamMethod", "CAM",
            "Class activation map (Zhou et al.): feature channels weighted by a one-layer "
            "linear head's weights; only for models with such a head."),
    "gradcam": ("GradCamMethod", "Grad-CAM",
                "Feature channels weighted by the mean gradient of the label's logit."),
    "gradcam++": ("GradCamPlusPlusMethod", "Grad-CAM++",
                  "Grad-CAM with positive gradients weighted by higher-order terms."),
    "xgradcam": ("XGradCamMethod", "XGrad-CAM",
                 "Gradients weighted by the normalised activations of each channel."),
    "layercam": ("LayerCamMethod", "LayerCAM",
                 "Activations times their positive gradients, position by position."),
    "hirescam": ("HiResCamMethod", "HiRes-CAM",
                 "Activations times their gradients, position by position."),
    "eigencam": ("EigenCamMethod", "Eigen-CAM",
                 "First principal component of the feature maps (the same for every label)."),
    "scorecam": ("ScoreCamMethod", "Score-CAM",
                 "Channels weighted by the label's logit on the input masked by each "
                 "channel's map (one forward pass per batch of channels)."),
    "ablationcam": ("AblationCamMethod", "Ablation-CAM",
                    "Channels weighted by the drop of the label's logit when each is "
                    "removed (one forward pass per batch of channels)."),
}


class CamMethod(MapMethod):
    """A CAM-family saliency map (docs/method.md §8) plus the prediction map.

    Options (:meth:`MapSettings.option`): ``mode`` (``"windowed"`` or ``"global"``),
    ``scale`` (``"raw"`` or ``"window"``), ``target_layer`` (dotted module name, None for
    the default) and ``global_size`` (long side of the global input, pixels).
    """

    kinds = ("saliency", "prediction")
    uses = _WINDOWS
    options = frozenset({"mode", "scale", "target_layer", "global_size"})

    def steps(self, image: Mammogram | np.ndarray, model: ImageModelLike,
              settings: MapSettings) -> Generator[Progress, None, MapResult]:
        from .cam import DEFAULT_GLOBAL_SIZE, cam_steps

        return (yield from cam_steps(
            image, model, self.name, mode=settings.option("mode", "windowed"),
            scale=settings.option("scale", "raw"),
            target_layer=settings.option("target_layer"),
            global_size=settings.option("global_size", DEFAULT_GLOBAL_SIZE),
            stride=settings.stride, reach=settings.reach, min_tissue=settings.min_tissue,
            runtime=settings.runtime(),
        ))


for _name, (_class_name, _title, _text) in CAM_FAMILY.items():
    register_method(type(_class_name, (CamMethod,), {
        "name": _name, "title": _title, "description": _text,
        "__doc__": f"{_title} (docs/method.md §8).", "__module__": __name__}))

# GMIC (docs/method.md §9) registers its method in its own module; importing it loads
# neither torch nor the network.
from ..gmic import method as _gmic_method  # noqa: E402, F401
