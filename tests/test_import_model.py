"""Importing classifiers trained elsewhere (method §4): the authors' checkpoints, torchvision."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from napari_correlax.cli import main
from napari_correlax.errors import CorrelaxError
from napari_correlax.labels import LABELS
from napari_correlax.models import load_classifier, read_metadata
from napari_correlax.models.importers import (
    import_codigotesis,
    import_torchvision,
    read_state_dict,
)
from napari_correlax.preprocess import Preprocessing, preprocessing_of


def _paper_head(d: int, n_out: int, last_bias: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(p=0.5),
        nn.Linear(d, 512),
        nn.ReLU(inplace=True),
        nn.Linear(512, n_out, bias=last_bias),
    )


def _randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Running statistics away from (0, 1), so a buffer left unmapped shows in the output."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def _authors_model(last_bias: bool, seed: int) -> nn.Module:
    """EfficientNetV2-S with the head of the authors' training code, random weights."""
    from torchvision.models import efficientnet_v2_s

    torch.manual_seed(seed)
    model = efficientnet_v2_s(weights=None)
    model.classifier = _paper_head(1280, 8, last_bias)
    with torch.no_grad():
        _randomise_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


@pytest.fixture(scope="module", params=[True, False], ids=["bias", "no-bias"])
def authors_checkpoint(request, tmp_path_factory):
    """(original module, file saved the way the authors' training code saves it)."""
    model = _authors_model(request.param, seed=3 if request.param else 4)
    path = tmp_path_factory.mktemp("authors") / "EfficientNetV2_final.pth"
    torch.save({"epoch": 100, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4}]}}, path)
    return model, path


def test_authors_checkpoint_gives_the_same_features_and_probabilities(
    authors_checkpoint, tmp_path
):
    original, path = authors_checkpoint
    imported = import_codigotesis(path)
    assert imported.labels == list(LABELS)
    assert imported.backbone_name == "efficientnet_v2_s"
    assert preprocessing_of(imported) == Preprocessing(
        base_bits=8, clahe_bits=8, background_zero=True, voi_lut=True
    )
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(imported.normalize(x), x)  # mean 0, std 1: inputs stay in [0, 1]
        # Reference: torchvision's own forward, features = avgpool output flattened.
        pooled = original.avgpool(original.features(x)).flatten(1)
        expected = torch.sigmoid(original(x))
        h = imported.features(imported.normalize(x))
        probabilities = imported.head(h)
    np.testing.assert_allclose(h.numpy(), pooled.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(probabilities.numpy(), expected.numpy(), atol=1e-5, rtol=0)
    if original.classifier[3].bias is None:
        assert not imported.classifier[3].bias.detach().any()  # saved without bias: zero

    # The saved checkpoint holds the same weights and says where they came from.
    out = tmp_path / "authors.safetensors"
    assert main(["import-model", str(path), "--format", "codigotesis", "--out", str(out)]) == 0
    loaded = load_classifier(out)
    for key, value in imported.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.labels == list(LABELS) and preprocessing_of(loaded).voi_lut
    info = read_metadata(out)["info"]["imported"]
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["format"] == "codigotesis" and info["file"] == path.name
    assert info["epoch"] == 100
    assert json.loads(out.with_suffix(".json").read_text())["config"]["std"] == [1.0, 1.0, 1.0]


def test_feature_extractor_state_dict_imports_the_same_weights(tmp_path):
    from torchvision.models.feature_extraction import create_feature_extractor

    model = _authors_model(True, seed=6)
    extractor = create_feature_extractor(
        model, return_nodes={"avgpool": "Features", "classifier.3": "Classifier"}
    )
    path = tmp_path / "extractor.pth"
    torch.save({"model_state_dict": extractor.state_dict()}, path)
    imported = import_codigotesis(path)
    reference = model.state_dict()
    for key, value in imported.state_dict().items():
        if key in ("mean", "std"):
            continue
        source = key.removeprefix("encoder.")
        assert torch.equal(value, reference[source]), key


def test_torchvision_state_dict_with_other_backbone_and_labels(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(7)
    net = resnet18(weights=None)
    net.fc = _paper_head(512, 3, True)
    path = tmp_path / "resnet.pth"
    torch.save(net.state_dict(), path)
    labels = ["Mass", "Calcification", "Other"]
    model = import_torchvision(path, "resnet18", labels=labels, imagenet_normalisation=False)
    assert model.labels == labels
    reference = net.state_dict()
    for key, value in model.state_dict().items():
        if key in ("mean", "std"):
            continue
        source = key.removeprefix("encoder.").replace("classifier.", "fc.")
        assert torch.equal(value, reference[source]), key
    assert torch.equal(model.std.flatten(), torch.ones(3))
    normalised = import_torchvision(path, "resnet18", labels=labels)
    np.testing.assert_allclose(normalised.mean.flatten().numpy(), [0.485, 0.456, 0.406])
    with pytest.raises(CorrelaxError, match="3 outputs"):
        import_torchvision(path, "resnet18")  # no labels: docs/method.md §3 has 8

    out = tmp_path / "resnet.safetensors"
    assert main(["import-model", str(path), "--format", "torchvision", "--backbone", "resnet18",
                 "--labels", *labels, "--no-imagenet-normalisation", "--out", str(out)]) == 0
    loaded = load_classifier(out)
    assert loaded.labels == labels and loaded.backbone_name == "resnet18"
    assert torch.equal(loaded.std.flatten(), torch.ones(3))
    assert torch.equal(loaded.classifier[3].weight, net.fc[3].weight)


def test_mismatches_name_missing_unexpected_keys_and_shapes(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(8)
    net = resnet18(weights=None)
    net.fc = _paper_head(512, 8, True)
    state = net.state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(2)
    state["fc.1.weight"] = torch.zeros(512, 256)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CorrelaxError) as info:
        import_torchvision(path, "resnet18")
    text = str(info.value)
    assert text.startswith(str(path))
    assert "missing keys: layer1.0.conv1.weight" in text
    assert "unexpected keys: extra.weight" in text
    assert "fc.1.weight (file (512, 256), model (512, 512))" in text


def test_not_a_state_dict_is_a_project_error(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a torch file" * 20)
    with pytest.raises(CorrelaxError, match=r"garbage\.pth: not a PyTorch checkpoint"):
        read_state_dict(garbage)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CorrelaxError, match="no state dict"):
        read_state_dict(tensor)
    with pytest.raises(CorrelaxError, match="file not found"):
        read_state_dict(tmp_path / "absent.pth")


class _CreatesFile:
    """Unpickling this would create the file named ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_correlax.cli", "import-model", *argv],
        capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_cli_refuses_a_pickle_holding_code_without_running_it(tmp_path, writer):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth"
    doc = {"model_state_dict": {"features.0.0.weight": _CreatesFile(str(marker))}}
    if writer == "torch.save":
        torch.save(doc, evil)
    else:
        evil.write_bytes(pickle.dumps(doc))
    proc = _run_cli(str(evil), "--out", str(tmp_path / "out.safetensors"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "evil.pth" in lines[0], proc.stderr
    assert "nothing in the file was run" in lines[0]
    if writer == "torch.save":
        assert "refused" in lines[0] and "open" in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_missing_key_exits_2_with_one_line_naming_it(tmp_path):
    from torchvision.models import efficientnet_v2_s

    torch.manual_seed(9)
    net = efficientnet_v2_s(weights=None)
    net.classifier = _paper_head(1280, 8, True)
    state = net.state_dict()
    del state["features.3.1.block.0.1.running_var"]
    path = tmp_path / "incomplete.pth"
    torch.save({"model_state_dict": state}, path)
    proc = _run_cli(str(path), "--format", "codigotesis", "--out", str(tmp_path / "m"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "incomplete.pth" in lines[0] and "features.3.1.block.0.1.running_var" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_options_that_do_not_apply_to_the_format_are_errors(tmp_path, capsys):
    path = tmp_path / "x.pth"
    torch.save({}, path)
    assert main(["import-model", str(path), "--backbone", "resnet50",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--backbone" in capsys.readouterr().err
    assert main(["import-model", str(path), "--format", "torchvision", "--backbone", "tiny",
                 "--out", str(tmp_path / "o")]) == 2
    assert "unknown torchvision backbone" in capsys.readouterr().err
