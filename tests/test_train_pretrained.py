"""ImageNet starting weights for training (method §4, §5): from the torch cache, never fetched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from napari_correlax.errors import CorrelaxError  # noqa: E402
from napari_correlax.train import TrainConfig, TrainEvent, load_starting_weights  # noqa: E402

#: torchvision's own name for the ResNet-18 ImageNet file, from its download address.
RESNET18_FILE = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub folder, used instead of the real cache; downloads fail loudly."""
    folder = tmp_path / "hub"
    (folder / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(folder))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return folder


@pytest.fixture(scope="module")
def one_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 phantoms (512×320) of one training study in the VinDr layout."""
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path_factory.mktemp("vindr"), 4, seed=0, shape=(512, 320))


def _classifier(backbone: str):
    from napari_correlax.labels import LABELS
    from napari_correlax.models.classifier import Classifier

    return Classifier(backbone, list(LABELS), input_size=64)


def _fake_imagenet_file(hub: Path) -> dict[str, torch.Tensor]:
    """A ResNet-18 state dict with random weights where torchvision keeps its file."""
    torch.manual_seed(1234)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, hub / "checkpoints" / RESNET18_FILE)
    return state


def test_cli_run_without_cached_imagenet_warns_once_and_records_none(
        one_study: Path, tmp_path: Path, hub: Path, capsys, monkeypatch):
    import signal

    from napari_correlax.cli import main
    from napari_correlax.models import load_classifier

    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's handlers
    out = tmp_path / "run"
    code = main(["train", str(one_study), "--out", str(out), "--backbone", "resnet18",
                 "--epochs", "1", "--batch-size", "8", "--input-size", "64", "--threads", "1",
                 "--select", "last", "--cache", str(tmp_path / "cache"), "--progress", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    events = [json.loads(x) for x in captured.out.splitlines() if x.startswith("{")]
    warnings = [e for e in events if e["event"] == "warning"]
    assert len(warnings) == 1
    assert RESNET18_FILE in warnings[0]["message"] and "random" in warnings[0]["message"]
    assert next(e for e in events if e["event"] == "start")["pretrained"] == "none"
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1]
    info = load_classifier(out / "last.safetensors").checkpoint_info
    assert info["pretrained"] == "none"
    assert json.loads((out / "run.json").read_text())["pretrained"] == "none"
    assert list((hub / "checkpoints").iterdir()) == []  # nothing fetched into the cache


def test_cli_prints_a_warning_as_one_console_line(capsys):
    from napari_correlax.cli.train import print_event

    print_event(TrainEvent("warning", 0, 0, {"message": "no ImageNet weights for resnet18"}))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "correlax train: warning: no ImageNet weights for resnet18\n"


def test_cached_imagenet_file_is_the_starting_point(hub: Path):
    state = _fake_imagenet_file(hub)
    model = _classifier("resnet18")
    start = load_starting_weights(model, None)
    assert start.name == RESNET18_FILE and start.warning is None
    got = model.encoder.state_dict()
    shared = [k for k in state if k in got]
    assert len(shared) == len(got)  # every backbone tensor comes from the file (fc is not one)
    for k in shared:
        torch.testing.assert_close(got[k], state[k], rtol=0, atol=0)


def test_run_records_the_cached_file_it_started_from(one_study: Path, tmp_path: Path,
                                                      hub: Path):
    from napari_correlax.models import load_classifier
    from napari_correlax.train import train_steps

    _fake_imagenet_file(hub)
    config = TrainConfig(data=str(one_study), out=str(tmp_path / "run"), backbone="resnet18",
                         epochs=1, batch_size=8, input_size=64, threads=1, select="last",
                         cache=str(tmp_path / "cache"))
    events = list(train_steps(config))
    assert [e for e in events if e.kind == "warning"] == []
    assert next(e for e in events if e.kind == "start").data["pretrained"] == RESNET18_FILE
    info = load_classifier(tmp_path / "run" / "last.safetensors").checkpoint_info
    assert info["pretrained"] == RESNET18_FILE


def test_explicit_choices_of_starting_weights(hub: Path, tmp_path: Path):
    from safetensors.torch import save_file

    # "imagenet" insists on the file
    with pytest.raises(CorrelaxError, match=RESNET18_FILE):
        load_starting_weights(_classifier("resnet18"), "imagenet")
    # "none": random weights, no warning
    model = _classifier("resnet18")
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    start = load_starting_weights(model, "none")
    assert (start.name, start.warning) == ("none", None)
    for k, v in model.encoder.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    # a weights file given by path: its name is recorded
    torch.manual_seed(99)
    state = {k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}
    save_file(state, str(tmp_path / "my-weights.safetensors"))
    model = _classifier("resnet18")
    start = load_starting_weights(model, str(tmp_path / "my-weights.safetensors"))
    assert start.name == "my-weights.safetensors" and start.warning is None
    torch.testing.assert_close(model.encoder.state_dict()["conv1.weight"], state["conv1.weight"],
                               rtol=0, atol=0)


@pytest.mark.parametrize("backbone", ["tiny", "lite"])
def test_own_backbones_start_from_random_weights_without_a_warning(hub: Path, backbone: str):
    start = load_starting_weights(_classifier(backbone), None)
    assert (start.name, start.path, start.warning) == ("none", None, None)


def test_efficientnet_without_cached_weights_warns(hub: Path):
    start = load_starting_weights(_classifier("efficientnet_v2_s"), None)
    name = torchvision.models.EfficientNet_V2_S_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    assert start.name == "none" and name in (start.warning or "")
