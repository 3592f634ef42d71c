"""Classifier structure and safetensors checkpoints (docs/method.md §4)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from napari_correlax.errors import CorrelaxError
from napari_correlax.models import load_classifier, read_metadata, save_checkpoint
from napari_correlax.models.classifier import Classifier


def test_head_is_the_papers_mlp_with_sigmoid():
    torch.manual_seed(0)
    m = Classifier("tiny", ["a", "b", "c"]).eval()
    layers = list(m.classifier)
    assert isinstance(layers[0], torch.nn.Dropout) and layers[0].p == 0.5
    assert layers[1].in_features == m.feature_dim and layers[1].out_features == 512
    assert isinstance(layers[2], torch.nn.ReLU)
    assert layers[3].out_features == 3
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        h = m.features(x)
        manual = torch.sigmoid(layers[3](torch.relu(layers[1](h))))
        np.testing.assert_allclose(m.head(h).numpy(), manual.numpy(), rtol=1e-6)
        np.testing.assert_allclose(m(x).numpy(), manual.numpy(), rtol=1e-6)
    assert h.shape == (4, m.feature_dim)


def test_normalize_is_imagenet():
    m = Classifier("tiny")
    x = torch.full((1, 3, 2, 2), 0.5)
    out = m.normalize(x)
    expected = (0.5 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), expected, rtol=1e-6)


def test_checkpoint_roundtrip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    m = Classifier("tiny", ["x", "y"], input_size=64).eval()
    path = save_checkpoint(m, tmp_path / "model", {"note": "test"})
    assert path.suffix == ".safetensors" and path.with_suffix(".json").exists()
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["config"]["labels"] == ["x", "y"]
    loaded = load_classifier(path)
    assert loaded.labels == ["x", "y"] and loaded.input_size == 64
    assert read_metadata(path)["info"] == {"note": "test"}
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(m(x).numpy(), loaded(x).numpy())
    assert load_classifier(path) is loaded  # cached


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/correlax_unpickled_marker", "w"))


def test_pickles_are_never_loaded(tmp_path):
    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(CorrelaxError, match=r"evil\.safetensors"):
        load_classifier(bad)
    import os

    assert not os.path.exists("/tmp/correlax_unpickled_marker")


@pytest.mark.parametrize("damage", ["truncate", "no_meta", "wrong_shapes", "missing"])
def test_broken_checkpoints_raise_project_error(tmp_path, damage):
    from safetensors.torch import save_file

    m = Classifier("tiny")
    path = save_checkpoint(m, tmp_path / "m.safetensors")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "no_meta":
        save_file({"w": torch.zeros(2)}, str(path))
    elif damage == "wrong_shapes":
        meta = read_metadata(path)
        meta["config"]["labels"] = ["only-one"]
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path),
                  metadata={"napari_correlax": json.dumps(meta)})
    else:
        path = tmp_path / "nope.safetensors"
    with pytest.raises(CorrelaxError) as info:
        load_classifier(path)
    assert path.name in str(info.value)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(CorrelaxError, match="unknown backbone"):
        Classifier("vgg-nonexistent")


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    m = Classifier("resnet18")
    with pytest.raises(CorrelaxError, match="never downloaded"):
        m.load_pretrained_backbone("imagenet")


def test_pretrained_backbone_loads_from_local_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = Classifier("tiny")
    save_file({k: v.contiguous() for k, v in src.encoder.state_dict().items()},
              str(tmp_path / "bb.safetensors"))
    dst = Classifier("tiny")
    dst.load_pretrained_backbone(tmp_path / "bb.safetensors")
    for k, v in src.encoder.state_dict().items():
        assert torch.equal(v, dst.encoder.state_dict()[k])
