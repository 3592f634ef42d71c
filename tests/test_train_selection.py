"""Model selection without the test split (docs/method.md §5): validation share, last epoch, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from napari_correlax.errors import CorrelaxError  # noqa: E402
from napari_correlax.train import TrainConfig, split_records, train, train_steps  # noqa: E402


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 phantoms (512×320) in the VinDr layout: 3 studies, 2 of them training."""
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path_factory.mktemp("vindr"), 12, seed=1, shape=(512, 320))


def csv_splits(root: Path) -> tuple[dict[Path, str], dict[str, str]]:
    """(image file -> split, study -> split) straight from finding_annotations.csv."""
    images: dict[Path, str] = {}
    studies: dict[str, str] = {}
    with open(root / "finding_annotations.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            path = root / "images" / row["study_id"] / f"{row['image_id']}.dicom"
            images[path.resolve()] = row["split"]
            assert studies.setdefault(row["study_id"], row["split"]) == row["split"]
    return images, studies


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every image file opened through the image reader or pydicom, in order."""
    import pydicom

    import napari_correlax.io
    import napari_correlax.io.image

    seen: list[Path] = []
    original = napari_correlax.io.image.read_mammogram
    dcmread = pydicom.dcmread

    def reading(path, *args, **kwargs):
        seen.append(Path(path).resolve())
        return original(path, *args, **kwargs)

    def dicom_reading(fp, *args, **kwargs):
        if isinstance(fp, (str, Path)):
            seen.append(Path(fp).resolve())
        return dcmread(fp, *args, **kwargs)

    monkeypatch.setattr(napari_correlax.io, "read_mammogram", reading)
    monkeypatch.setattr(napari_correlax.io.image, "read_mammogram", reading)
    monkeypatch.setattr(pydicom, "dcmread", dicom_reading)
    return seen


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), backbone="tiny", epochs=1, batch_size=8,
                input_size=64, seed=3, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_default_run_never_opens_a_test_image_and_validates_on_training_studies(
        phantom_data: Path, tmp_path: Path, reads: list[Path]):
    from napari_correlax.io.vindr import load_vindr
    from napari_correlax.models import load_classifier

    image_split, study_split = csv_splits(phantom_data)
    assert set(image_split.values()) == {"training", "test"}  # the data set has a test split
    config = _config(phantom_data, tmp_path / "run", cache=str(tmp_path / "cache"))
    events = list(train_steps(config))

    # the reader was called (so the instrument works) on every training-split image ...
    assert set(reads) == {p for p, s in image_split.items() if s == "training"}
    # ... and never on a test-split image
    assert not [p for p in reads if image_split.get(p) != "training"]

    # validation: whole studies of the training split, none of them also trained on
    split = split_records(load_vindr(phantom_data), config)
    val_studies = {r.study_id for r in split.validation}
    train_studies = {r.study_id for r in split.training}
    assert val_studies and train_studies
    assert not val_studies & train_studies
    assert {study_split[s] for s in val_studies | train_studies} == {"training"}
    assert val_studies | train_studies == {s for s, v in study_split.items() if v == "training"}
    # 10% of 2 studies rounds to 0: at least one is held out, at least one is kept
    assert len(val_studies) == 1
    run_doc = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_doc["validation_study_ids"] == sorted(val_studies)

    # the metadata says how the checkpoint was chosen
    expected = {"rule": "best-val-macro-f1", "split": "training[val 10% of studies, seed 3]"}
    start = next(e.data for e in events if e.kind == "start")
    assert start["selection"].items() >= expected.items()
    assert start["val_images"] == sum(r.study_id in val_studies for r in split.validation)
    best = load_classifier(tmp_path / "run" / "best.safetensors")
    assert best.checkpoint_info["selection"].items() >= expected.items()
    assert best.checkpoint_info["selection"]["validation_studies"] == 1
    assert run_doc["selection"] == best.checkpoint_info["selection"]
    done = next(e.data for e in events if e.kind == "done")
    assert done["checkpoint"] == str(tmp_path / "run" / "best.safetensors")
    # tiny has no ImageNet weights: nothing to warn about, nothing loaded
    assert [e for e in events if e.kind == "warning"] == []
    assert best.checkpoint_info["pretrained"] == "none"


def _index(n_training: int, n_test: int) -> SimpleNamespace:
    """A fake VinDr index: studies of 1-4 images, split whole."""
    images = []
    for s in range(n_training + n_test):
        for i in range(1 + s % 4):
            split = "training" if s < n_training else "test"
            images.append(SimpleNamespace(study_id=f"study{s:03d}", image_id=f"img{s}-{i}",
                                          split=split, path=Path(f"images/{s}/{i}.dicom")))
    return SimpleNamespace(images=images, missing=[], root=Path("data"))


def test_validation_share_is_whole_studies_deterministic_in_the_seed():
    index = _index(50, 10)
    first = split_records(index, TrainConfig(data="d", out="o", seed=0))
    again = split_records(index, TrainConfig(data="d", out="o", seed=0))
    other = split_records(index, TrainConfig(data="d", out="o", seed=1))
    val = {r.study_id for r in first.validation}
    assert len(val) == 5  # 10% of 50 training studies
    assert {r.split for r in first.training + first.validation} == {"training"}
    # every image of a validation study is in validation, none of them in training
    assert {r.image_id for r in first.validation} == {
        r.image_id for r in index.images if r.study_id in val}
    assert not val & {r.study_id for r in first.training}
    assert len(first.training) + len(first.validation) == sum(
        r.split == "training" for r in index.images)
    assert [r.image_id for r in again.validation] == [r.image_id for r in first.validation]
    assert {r.study_id for r in other.validation} != val
    share = split_records(index, TrainConfig(data="d", out="o", seed=0, val_fraction=0.2))
    assert len({r.study_id for r in share.validation}) == 10
    assert share.selection["split"] == "training[val 20% of studies, seed 0]"


def test_select_last_needs_no_validation_and_best_needs_some():
    index = _index(1, 1)
    last = split_records(index, TrainConfig(data="d", out="o", select="last"))
    assert last.validation == [] and {r.split for r in last.training} == {"training"}
    assert last.selection["rule"] == "last" and last.selection["split"] is None
    with pytest.raises(CorrelaxError, match="--select last"):
        split_records(index, TrainConfig(data="d", out="o"))  # one study: nothing to hold out
    with pytest.raises(CorrelaxError, match="not both"):
        split_records(index, TrainConfig(data="d", out="o", val_split="test", val_fraction=0.1))
    explicit = split_records(index, TrainConfig(data="d", out="o", val_split="test"))
    assert {r.split for r in explicit.validation} == {"test"}
    assert explicit.selection["split"] == "test"
    assert len(explicit.training) == sum(r.split == "training" for r in index.images)


def test_select_last_keeps_the_last_epoch_without_reading_validation_images(
        phantom_data: Path, tmp_path: Path, reads: list[Path]):
    from napari_correlax.models import load_classifier

    image_split, _ = csv_splits(phantom_data)
    result = train(_config(phantom_data, tmp_path / "run", epochs=2, select="last",
                           cache=str(tmp_path / "cache")))
    # all training studies are trained on; no other image is opened
    assert set(reads) == {p for p, s in image_split.items() if s == "training"}
    assert result.best is None and result.checkpoint == tmp_path / "run" / "last.safetensors"
    assert not (tmp_path / "run" / "best.safetensors").exists()
    assert result.best_epoch == 2
    assert [h["val_loss"] for h in result.history] == [None, None]
    info = load_classifier(result.checkpoint).checkpoint_info
    assert info["epoch"] == 2
    assert info["selection"]["rule"] == "last" and info["selection"]["split"] is None


def test_explicit_test_split_validation_warns(phantom_data: Path, tmp_path: Path):
    steps = train_steps(_config(phantom_data, tmp_path / "run", val_split="test"))
    start = next(steps)
    warning = next(steps)
    steps.close()  # before any image is cached
    assert start.kind == "start" and start.data["selection"]["split"] == "test"
    assert warning.kind == "warning" and "optimistic" in warning.data["message"]


def test_fresh_run_with_last_epoch_removes_an_earlier_best_checkpoint(
        phantom_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.safetensors").write_bytes(b"from an earlier run")
    (out / "best.json").write_text("{}")
    train(_config(phantom_data, out, select="last", cache=str(tmp_path / "cache")))
    assert not (out / "best.safetensors").exists() and not (out / "best.json").exists()


def test_cli_refuses_a_split_and_a_share_together(tmp_path: Path, capsys):
    from napari_correlax.cli import main

    code = main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--val-split", "test",
                 "--val-fraction", "0.2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not both" in err


def test_cli_flags_reach_the_config(tmp_path: Path):
    from napari_correlax.cli import build_parser
    from napari_correlax.cli.train import _config as cli_config

    parser = build_parser()
    default = cli_config(parser.parse_args(["train", str(tmp_path), "--out", "r"]))
    assert (default.select, default.val_split, default.val_fraction) == ("best", None, 0.1)
    assert default.pretrained is None
    last = cli_config(parser.parse_args(["train", str(tmp_path), "--out", "r", "--select",
                                         "last"]))
    assert (last.select, last.val_fraction) == ("last", 0.0)
    share = cli_config(parser.parse_args(["train", str(tmp_path), "--out", "r",
                                          "--val-fraction", "0.25", "--seed", "7"]))
    assert (share.val_fraction, share.seed) == (0.25, 7)
