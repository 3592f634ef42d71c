"""Map methods: everything that turns an image and a model into maps, behind one interface.

A method has a name, the map kinds it produces (:mod:`.kinds`), the
:class:`~napari_correlax.maps.settings.MapSettings` fields its maps depend on, and a
generator that yields :class:`~napari_correlax.maps.runtime.Progress` events and returns a
:class:`~napari_correlax.maps.MapResult`. The registry lists them: the docks, the command
line, the result cache, export and evaluation iterate over it, so a new method is one
class and one :func:`register_method` call::

    class Constant(MapMethod):
        name, title, kinds = "constant", "Constant map", ("prediction",)
        uses = frozenset({"stride"})

        def steps(self, image, model, settings):
            ...
            return result

    register_method(Constant)

The built-in methods live one per file in :mod:`.adapters` (GMIC's in
:mod:`napari_correlax.gmic.method`); :mod:`napari_correlax.builtin` registers them the
first time :data:`METHODS` is read, so this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, ClassVar

from ..registry import Registry

if TYPE_CHECKING:
    import numpy as np

    from ..io.image import Mammogram
    from ..models.protocols import ImageModelLike
    from .result import MapResult
    from .runtime import Progress
    from .settings import MapSettings

__all__ = [
    "METHODS",
    "WINDOW_FIELDS",
    "MapMethod",
    "get_method",
    "register_method",
    "run_method",
]

#: Settings fields every window-based method depends on.
WINDOW_FIELDS = frozenset({"stride", "reach", "min_tissue", "precision"})


class MapMethod:
    """Base class of map methods (see the module docstring)."""

    #: Registry key, used on the command line (``--method``) and in cache keys.
    name: ClassVar[str] = ""
    #: Name shown in the docks.
    title: ClassVar[str] = ""
    #: Kinds (:data:`~napari_correlax.maps.kinds.KINDS` names) of the maps it returns.
    kinds: ClassVar[tuple[str, ...]] = ()
    #: :class:`MapSettings` fields that change its maps (the rest only change speed).
    uses: ClassVar[frozenset[str]] = WINDOW_FIELDS
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


#: Registered methods by name, in registration order (the built-ins first).
METHODS: Registry[MapMethod] = Registry("map method")


def register_method(cls: type[MapMethod]) -> type[MapMethod]:
    """Register a :class:`MapMethod` subclass (usable as a class decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS.register(cls.name, cls())
    return cls


def get_method(name: str) -> MapMethod:
    """The registered method ``name`` (CorrelaxError naming the known ones otherwise)."""
    return METHODS.get_known(name)


def run_method(image: Mammogram | np.ndarray, model: ImageModelLike, settings: MapSettings
               ) -> Generator[Progress, None, MapResult]:
    """``settings.method``'s generator; the result records the method and its settings."""
    method = get_method(settings.method)
    result = yield from method.steps(image, model, settings)
    result.stats.method = method.name
    result.stats.settings = {**result.stats.settings, **settings.map_fields()}
    return result
