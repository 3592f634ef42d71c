"""What the map functions need of a model, as structural types (docs/method.md §4, §6–7).

:class:`~napari_correlax.models.classifier.Classifier` satisfies both protocols; so does
any torch module with the same methods, such as a model wrapped for another backbone or
a small stand-in in a test. Nothing here imports torch at run time.

- :class:`ModelLike`: what CorRELAX needs on windows the caller has already cut
  (:func:`~napari_correlax.maps.explain_windows`,
  :func:`~napari_correlax.maps.sensitivity.mask_sensitivity_windows`): ``labels``,
  ``features``, ``head``, and the module methods ``eval``/``to``. A ``normalize`` method
  is used when present.
- :class:`ImageModelLike`: what whole-image functions need on top
  (:func:`~napari_correlax.maps.predict`, :func:`~napari_correlax.maps.explain`):
  the window side ``input_size`` and ``normalize``. An optional ``preprocessing``
  attribute (:class:`~napari_correlax.preprocess.Preprocessing` or its dict) chooses
  the image fusion; without it the paper's profile is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from typing_extensions import Self

__all__ = ["ImageModelLike", "ModelLike"]


class ModelLike(Protocol):
    """A multi-label classifier split into ``features`` and ``head`` (a torch module)."""

    @property
    def labels(self) -> Sequence[str]:
        """Output label names, in the order of ``head``'s columns."""
        ...

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` feature vectors ``h`` of normalised ``(B, 3, S, S)`` windows."""
        ...

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` label probabilities ``ŷ`` in [0, 1] from features ``h``."""
        ...

    def eval(self) -> Self:
        """Switch to inference mode (``torch.nn.Module.eval``)."""
        ...

    def to(self, *args: Any, **kwargs: Any) -> Self:
        """Move to a device or memory format (``torch.nn.Module.to``)."""
        ...


class ImageModelLike(ModelLike, Protocol):
    """A :class:`ModelLike` that can run over whole images: it knows its window side and
    normalises its own input."""

    @property
    def input_size(self) -> int:
        """Side ``S`` of the square model input, pixels."""
        ...

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` RGB ``(B, 3, H, W)`` → the model's input scale (any ``H``, ``W``)."""
        ...
