"""Inference engines: the exported ONNX graph agrees with PyTorch, is cached beside its
checkpoint, and a missing runtime falls back to PyTorch with a warning."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_correlax.errors import CorrelaxError
from napari_correlax.maps.settings import MapSettings


@pytest.fixture
def tiny_copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """The tiny checkpoint in a folder of this test (the export is written beside it)."""
    return Path(shutil.copy(tiny_checkpoint, tmp_path / "tiny.safetensors"))


def _windows(n: int, size: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / size
    rng = np.random.default_rng(seed)
    base = 0.5 + 0.4 * np.sin(6 * yy + 4 * xx)  # smooth structure, so masks matter
    out = base[None, None] * rng.uniform(0.5, 1.0, (n, 3, 1, 1))
    return (out + 0.05 * rng.random((n, 3, size, size))).clip(0, 1).astype(np.float32)


def test_onnx_probabilities_match_torch_and_graph_sits_beside_checkpoint(tiny_copy):
    pytest.importorskip("onnxruntime")
    import torch

    from napari_correlax.maps.cache import checkpoint_fingerprint
    from napari_correlax.maps.engines import EngineModel
    from napari_correlax.maps.runtime import Runtime, inference_model
    from napari_correlax.models import load_classifier

    model = load_classifier(tiny_copy, device="cpu")
    rt = Runtime(device="cpu", engine="onnx")
    fast = inference_model(rt.prepare_model(model), rt)
    assert isinstance(fast, EngineModel)
    _, digest = checkpoint_fingerprint(tiny_copy)
    assert (tiny_copy.parent / f"tiny.{digest}.onnx").is_file()

    x = model.normalize(torch.from_numpy(_windows(5, model.input_size)))
    with torch.inference_mode():
        y_ref = model.head(model.features(x)).numpy()  # the plain, unfolded PyTorch model
        y = fast.head(fast.features(x)).numpy()
    np.testing.assert_allclose(y, y_ref, atol=1e-4, rtol=0)


def test_onnx_correlax_matches_torch(tiny_copy):
    pytest.importorskip("onnxruntime")
    from napari_correlax.maps.correlax import explain_windows
    from napari_correlax.maps.runtime import Runtime
    from napari_correlax.models import load_classifier

    model = load_classifier(tiny_copy, device="cpu")
    win = _windows(3, model.input_size, seed=1)
    ref = explain_windows(model, win, masks=256, runtime=Runtime(device="cpu"))
    got = explain_windows(model, win, masks=256, runtime=Runtime(device="cpu", engine="onnx"))
    np.testing.assert_allclose(got.prediction, ref.prediction, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.correlation, ref.correlation, atol=1e-3, rtol=0)
    np.testing.assert_allclose(got.distance, ref.distance, atol=1e-3, rtol=0)
    assert np.ptp(ref.correlation) > 0.01  # the correlations being compared are not constant


def test_read_only_checkpoint_folder_exports_to_cache_dir(tiny_copy, tmp_path, monkeypatch):
    from napari_correlax.maps import engines
    from napari_correlax.models import load_classifier

    monkeypatch.setenv("CORRELAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(engines.os, "access", lambda *a, **k: False)
    path = engines.onnx_path(load_classifier(tiny_copy, device="cpu"))
    assert path.parent == tmp_path / "cache" / "engines"
    assert path.name.startswith("tiny.") and path.suffix == ".onnx"


def test_missing_onnxruntime_falls_back_to_torch(tiny_copy, monkeypatch):
    from napari_correlax.maps.correlax import explain_windows
    from napari_correlax.maps.engines import EngineModel
    from napari_correlax.maps.runtime import Runtime, inference_model
    from napari_correlax.models import load_classifier

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    model = load_classifier(tiny_copy, device="cpu")
    rt = Runtime(device="cpu", engine="onnx")
    with pytest.warns(UserWarning, match="onnxruntime is not installed") as caught:
        got = inference_model(rt.prepare_model(model), rt)
    assert len(caught) == 1
    assert not isinstance(got, EngineModel)
    assert not list(tiny_copy.parent.glob("*.onnx"))  # nothing exported

    win = _windows(2, model.input_size, seed=2)
    with pytest.warns(UserWarning, match="running PyTorch"):
        out = explain_windows(model, win, masks=64, min_masks=64, runtime=rt)
    ref = explain_windows(model, win, masks=64, min_masks=64, runtime=Runtime(device="cpu"))
    np.testing.assert_array_equal(out.correlation, ref.correlation)


def test_engine_setting_is_checked_and_reaches_the_runtime():
    with pytest.raises(CorrelaxError, match="unknown engine"):
        MapSettings(engine="tensorrt")
    settings = MapSettings(engine="openvino", device="cpu")
    assert settings.runtime().engine == "openvino"
    assert "engine" not in settings.map_fields()  # runtime only: the cache key ignores it
