"""The model protocols describe what the shipped classifier (and its folded view) provide."""

from __future__ import annotations

from napari_correlax.maps.runtime import inference_model
from napari_correlax.models import ImageModelLike, ModelLike
from napari_correlax.models.classifier import Classifier


def _members(protocol: type) -> set[str]:
    """Public names declared by ``protocol`` and the protocols it extends."""
    return {
        name
        for cls in protocol.__mro__
        if cls.__module__ == "napari_correlax.models.protocols"
        for name in vars(cls)
        if not name.startswith("_")
    }


def test_image_protocol_adds_window_side_and_normalisation():
    assert _members(ModelLike) == {"labels", "features", "head", "eval", "to"}
    assert _members(ImageModelLike) - _members(ModelLike) == {"input_size", "normalize"}


def test_classifier_provides_every_protocol_member():
    model = Classifier("tiny", ["No Finding", "Mass"], input_size=32)
    for name in _members(ImageModelLike):
        assert hasattr(model, name), name
    assert model.labels == ["No Finding", "Mass"]
    assert isinstance(model.input_size, int) and model.input_size == 32
    for name in ("features", "head", "normalize", "eval", "to"):
        assert callable(getattr(model, name)), name


def test_folded_inference_model_keeps_the_image_protocol():
    model = Classifier("tiny", ["No Finding", "Mass"], input_size=32).eval()
    folded = inference_model(model)
    assert folded is not model  # BatchNorm folded into a separate view
    for name in _members(ImageModelLike):
        assert hasattr(folded, name), name
    assert list(folded.labels) == model.labels and folded.input_size == model.input_size
