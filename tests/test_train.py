"""Training (docs/method.md §5): focal loss, crops, sampler, metrics, fit loop, resume, DDP, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_correlax.errors import CorrelaxError  # noqa: E402
from napari_correlax.evaluate.classification import (  # noqa: E402
    format_table,
    macro_f1,
    per_label_metrics,
)
from napari_correlax.labels import LABELS  # noqa: E402
from napari_correlax.train import TrainConfig, train, train_steps  # noqa: E402
from napari_correlax.train.crops import (  # noqa: E402
    CropConfig,
    Window,
    build_samples,
    draw_window,
    epoch_indices,
    render_window,
    sample_weights,
)

# ----------------------------------------------------------------------------- metrics


def test_per_label_metrics_hand_worked():
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    scores = np.array([[0.9, 0.1], [0.2, 0.7], [0.6, 0.3], [0.1, 0.5]])
    rows = per_label_metrics(targets, scores, ["A", "B"])
    a, b = rows
    # A: tp=1 (0.9), fn=1 (0.2), fp=1 (0.6), tn=1
    assert (a.tp, a.fn, a.fp, a.tn, a.support) == (1, 1, 1, 1, 2)
    assert (a.accuracy, a.precision, a.recall, a.f1) == (0.5, 0.5, 0.5, 0.5)
    # B: threshold 0.5 inclusive -> predicted rows 1 and 3; truth row 3 only
    assert (b.tp, b.fp, b.fn, b.tn) == (1, 1, 0, 2)
    assert b.precision == pytest.approx(0.5) and b.recall == 1.0
    assert b.f1 == pytest.approx(2 / 3)
    assert macro_f1(rows) == pytest.approx((0.5 + 2 / 3) / 2)
    assert "| A | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 2 |" in format_table(rows)


def test_metrics_without_positives_are_zero_not_nan():
    rows = per_label_metrics(np.zeros((3, 1)), np.zeros((3, 1)), ["A"])
    assert (rows[0].precision, rows[0].recall, rows[0].f1, rows[0].accuracy) == (0, 0, 0, 1)
    assert macro_f1(rows) == 0.0


def test_labels_without_cases_show_blank_f1_in_tables_not_zero():
    from napari_correlax.evaluate.classification import format_table
    from napari_correlax.evaluate.report import classification_report

    truth = np.array([[1, 0], [0, 0], [1, 0]])
    scores = np.array([[0.9, 0.7], [0.2, 0.1], [0.4, 0.3]])
    rows = per_label_metrics(truth, scores, ["A", "B"])  # B has no case (support 0)
    table = classification_report(rows)
    cells = {row[0]: row for row in table.rows}
    assert cells["A"][4] == pytest.approx(2 / 3) and cells["B"][4] is None
    assert cells["B"][3] is None and cells["B"][5] == 0
    csv_b = next(line for line in table.to_csv().splitlines() if line.startswith("B,"))
    assert csv_b.split(",")[3:5] == ["", ""]
    md_b = next(line for line in format_table(rows).splitlines() if line.startswith("| B "))
    assert md_b.split("|")[4].strip() == "–" and md_b.split("|")[5].strip() == "–"


# ----------------------------------------------------------------------------- samples


def _box(label, x0, y0, x1, y1):
    return SimpleNamespace(label=label, category=label, xmin=x0, ymin=y0, xmax=x1, ymax=y1)


def test_samples_group_boxes_and_take_no_finding_images():
    records = [
        SimpleNamespace(boxes=[_box("Mass", 10, 20, 50, 60),
                               _box("Suspicious Calcification", 10, 20, 50, 60),
                               _box("Mass", 100, 100, 120, 130)]),
        SimpleNamespace(boxes=[]),
        SimpleNamespace(boxes=[_box("Retractions", 5, 5, 9, 9)]),
    ]
    samples = build_samples(records, ["No Finding", "Mass", "Suspicious Calcification"])
    got = sorted((s.image, s.box, tuple(s.target)) for s in samples if s.box is not None)
    assert got == [(0, (10.0, 20.0, 50.0, 60.0), (0.0, 1.0, 1.0)),
                   (0, (100.0, 100.0, 120.0, 130.0), (0.0, 1.0, 0.0))]
    negatives = [s for s in samples if s.box is None]
    assert [(s.image, tuple(s.target)) for s in negatives] == [(1, (1.0, 0.0, 0.0))]


def test_sampler_weights_are_inverse_frequencies():
    # counts: label0 = 3, label1 = 2, label2 = 1
    targets = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1]])
    w = sample_weights(targets)
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 1])
    # each label's total weight over its single-label samples is the same
    assert w[:3].sum() == pytest.approx(1.0)


def test_weighted_draws_follow_weights_and_shard_over_ranks():
    w = np.array([1.0, 3.0])
    g = torch.Generator().manual_seed(5)
    drawn = epoch_indices(w, 20000, g)
    assert np.mean(np.array(drawn) == 1) == pytest.approx(0.75, abs=0.02)
    full = epoch_indices(w, 11, torch.Generator().manual_seed(7))
    shards = [epoch_indices(w, 11, torch.Generator().manual_seed(7), r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6
    interleaved = [shards[i % 2][i // 2] for i in range(12)]
    assert interleaved[:11] == full and interleaved[11] == full[0]


# ----------------------------------------------------------------------------- windows


def test_crop_windows_stay_in_scale_and_aspect_ranges_around_the_centre():
    rng = np.random.default_rng(0)
    cfg = CropConfig()
    box = (40.0, 70.0, 100.0, 90.0)  # 60 × 20 px
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    scales, aspects = [], []
    for _ in range(4000):
        win = draw_window(centre, (60.0, 20.0), rng, cfg)
        x0, y0, x1, y1 = win.box
        assert x0 <= centre[0] <= x1 and y0 <= centre[1] <= y1
        assert (x0 + x1) / 2 == pytest.approx(centre[0]) and (y0 + y1) / 2 == pytest.approx(
            centre[1])
        scales.append(win.width * win.height / (60.0 * 20.0))
        aspects.append(win.width / win.height)
    scales, aspects = np.array(scales), np.array(aspects)
    assert scales.min() >= 0.05 - 1e-9 and scales.max() <= 5.0 + 1e-9
    assert aspects.min() >= 0.33 - 1e-9 and aspects.max() <= 1.66 + 1e-9
    # the whole range is used, not a corner of it
    assert scales.min() < 0.1 and scales.max() > 4.9
    assert aspects.min() < 0.35 and aspects.max() > 1.6


def test_render_window_matches_slicing_flips_and_rotation():
    rng = np.random.default_rng(1)
    image = rng.random((60, 80, 3)).astype(np.float32)
    # a 16 × 16 window whose pixels are image[20:36, 30:46], at scale 1
    win = Window(cx=38.0, cy=28.0, width=16.0, height=16.0)
    ref = image[20:36, 30:46]
    np.testing.assert_allclose(render_window(image, (0, 0), win, 16), ref, atol=1e-5)
    np.testing.assert_allclose(render_window(image, (0, 0), win, 16, flip_h=True),
                               ref[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(render_window(image, (0, 0), win, 16, flip_v=True),
                               ref[::-1], atol=1e-5)
    rot = render_window(image, (0, 0), win, 16, angle_deg=90.0)
    assert np.allclose(rot, np.rot90(ref, 1), atol=1e-4) or np.allclose(
        rot, np.rot90(ref, -1), atol=1e-4)
    # the same window read from a region stored at an offset
    np.testing.assert_allclose(render_window(image[10:, 20:], (10, 20), win, 16), ref, atol=1e-5)
    # past the border: padded with 0, the centre stays the centre
    edge = render_window(image, (0, 0), Window(2.0, 2.0, 8.0, 8.0), 8)
    np.testing.assert_allclose(edge[:2, :2], 0.0)
    np.testing.assert_allclose(edge[2:, 2:], image[:6, :6], atol=1e-5)


def test_validation_crop_is_the_box_resized_bilinearly():
    import cv2

    rng = np.random.default_rng(2)
    image = rng.random((100, 120, 3)).astype(np.float32)
    box = (30, 20, 70, 80)  # x0, y0, x1, y1 -> 40 wide, 60 high
    win = Window((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 40.0, 60.0)
    got = render_window(image, (0, 0), win, 32)
    ref = cv2.resize(image[20:80, 30:70], (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(got[2:-2, 2:-2], ref[2:-2, 2:-2], atol=1e-5)


# ----------------------------------------------------------------------------- fit loop


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 phantoms (512×320) in the VinDr layout: 8 training, 4 test images."""
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path_factory.mktemp("vindr"), 12, seed=1, shape=(512, 320))


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    # val_split="test": the 4 test phantoms validate, so all 8 training images train
    # (a 10 % share would hold out one of the two training studies)
    base = dict(data=str(data), out=str(out), backbone="tiny", epochs=2, batch_size=8,
                input_size=64, seed=3, cache=str(out.parent / "cache"), threads=1,
                val_split="test")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def two_epoch_run(phantom_data: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "full"
    return _config(phantom_data, out), train(_config(phantom_data, out))


def test_two_epochs_lower_the_loss(two_epoch_run):
    _, result = two_epoch_run
    h = result.history
    assert [r["epoch"] for r in h] == [1, 2]
    assert h[1]["train_loss"] < h[0]["train_loss"]
    assert h[1]["lr"] < h[0]["lr"]
    # per-label validation metrics in Table 3 layout, every epoch
    assert [m["label"] for m in h[0]["metrics"]] == list(LABELS)
    assert {"accuracy", "precision", "recall", "f1", "support"} <= set(h[0]["metrics"][0])


def test_checkpoints_and_metrics_log_are_written(two_epoch_run):
    from napari_correlax.models import load_classifier

    config, result = two_epoch_run
    out = Path(config.out)
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json",
                 "last.train.safetensors", "last.train.json", "metrics.jsonl", "config.json"):
        assert (out / name).is_file(), name
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    model = load_classifier(out / "last.safetensors")
    assert model.labels == list(LABELS) and model.input_size == 64
    assert model.checkpoint_info["epoch"] == 2
    best = load_classifier(result.best)
    assert best.checkpoint_info["epoch"] == result.best_epoch
    # the resume file never needs pickle: its metadata is plain JSON
    doc = json.loads((out / "last.train.json").read_text())
    assert doc["epoch"] == 2 and len(doc["rng"]) == 1 and doc["sampler"]


def test_resume_after_epoch_one_matches_uninterrupted(phantom_data: Path, two_epoch_run,
                                                      tmp_path: Path):
    _, full = two_epoch_run
    config = _config(phantom_data, tmp_path / "split")
    steps = train_steps(config)
    for event in steps:
        if event.kind == "epoch":
            break
    steps.close()  # "crash" after epoch 1 was saved
    assert json.loads((tmp_path / "split" / "last.train.json").read_text())["epoch"] == 1
    events = list(train_steps(config))
    epochs = [e.data for e in events if e.kind == "epoch"]
    assert [e["epoch"] for e in epochs] == [2]  # epoch 1 was not run again
    assert epochs[0]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-6)
    assert epochs[0]["val_loss"] == pytest.approx(full.history[1]["val_loss"], rel=1e-6)
    from safetensors.torch import load_file

    a = load_file(str(Path(full.run) / "last.safetensors"))
    b = load_file(str(tmp_path / "split" / "last.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_resume_refuses_other_settings(phantom_data: Path, two_epoch_run):
    config, _ = two_epoch_run
    changed = _config(phantom_data, Path(config.out), lr=5e-4)
    with pytest.raises(CorrelaxError, match="lr"):
        train(changed)


def test_no_training_samples_is_a_user_error(tmp_path: Path):
    (tmp_path / "finding_annotations.csv").write_text(
        "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,"
        "breast_density,finding_categories,finding_birads,xmin,ymin,xmax,ymax,split\n")
    with pytest.raises(CorrelaxError, match="no training samples"):
        train(_config(tmp_path, tmp_path / "run", val_split=None, select="last"))


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def test_cli_train_bad_data_folder_is_one_line(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "napari_correlax.cli", "train", str(tmp_path / "nope"),
         "--out", str(tmp_path / "run")], capture_output=True, text=True, env=_env(),
        timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ddp_two_processes_gloo(phantom_data: Path, tmp_path: Path):
    from napari_correlax.models import load_classifier

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", "2", "-m", "napari_correlax.cli", "train", str(phantom_data),
           "--out", str(out), "--backbone", "tiny", "--epochs", "1", "--batch-size", "8",
           "--input-size", "64", "--device", "cpu", "--threads", "1", "--progress", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == 2
    assert [e["event"] for e in events].count("start") == 1  # only rank 0 reports
    model = load_classifier(out / "best.safetensors")
    assert model.backbone_name == "tiny" and model.checkpoint_info["epoch"] == 1
    state = json.loads((out / "last.train.json").read_text())
    assert len(state["rng"]) == 2  # both ranks' RNG streams are kept for the resume


# ----------------------------------------------------------------------------- window scale


def test_window_scale_samples_are_native_windows_around_boxes_and_free_negatives(
        phantom_data: Path, tmp_path: Path):
    from napari_correlax.io import read_mammogram
    from napari_correlax.io.vindr import load_vindr
    from napari_correlax.preprocess import breast_roi
    from napari_correlax.train.crops import CropDataset, FusedImageCache

    records = load_vindr(phantom_data).split("training")
    samples = build_samples(records, LABELS)
    cache = FusedImageCache(tmp_path / "cache")
    s = 64
    plain = CropDataset(records, samples, cache, s, train=True, reference_size=(30.0, 30.0),
                        labels=LABELS)
    assert len(plain) == len(samples)  # option off: the docs/method.md §5 samples only
    cfg = CropConfig(window_share=1.0, window_negatives=12)
    data = CropDataset(records, samples, cache, s, train=True, reference_size=(30.0, 30.0),
                       seed=5, config=cfg, labels=LABELS)
    assert len(data) == len(samples) + 12
    positives = [i for i, smp in enumerate(samples) if smp.box is not None]
    assert positives
    for epoch in (1, 2):
        data.set_epoch(epoch)
        for i in positives:
            image, win = data.draw(i, np.random.default_rng([5, epoch, i]))
            x0, y0, x1, y1 = samples[i].box
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            assert image == samples[i].image
            assert win.width == s and win.height == s
            assert abs(win.cx - cx) <= s / 4 and abs(win.cy - cy) <= s / 4
            assert data.crop(i).shape == (s, s, 3)
            np.testing.assert_array_equal(data[i][1].numpy(), samples[i].target)
        for i in range(len(samples), len(data)):
            image, win = data.draw(i, np.random.default_rng([5, epoch, i]))
            assert win.width == s and win.height == s
            wx0, wy0, wx1, wy1 = win.box
            for b in records[image].boxes:
                assert b.xmax <= wx0 or b.xmin >= wx1 or b.ymax <= wy0 or b.ymin >= wy1
            mask = breast_roi(read_mammogram(records[image].path).pixels).mask
            inside = mask[max(int(wy0), 0):int(wy1), max(int(wx0), 0):int(wx1)]
            assert inside.sum() / s**2 >= 0.5
            target = data[i][1].numpy()
            assert target[LABELS.index("No Finding")] == 1 and target.sum() == 1
    # every negative is drawn once per epoch, the weighted draws keep their count
    order = epoch_indices(np.ones(len(samples)), len(samples), torch.Generator().manual_seed(1),
                          extra=12)
    assert len(order) == len(samples) + 12
    assert sorted(i for i in order if i >= len(samples)) == list(range(len(samples), len(data)))
