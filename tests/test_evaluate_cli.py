"""``correlax evaluate`` end to end on 12 phantoms: tables, resume, torchrun, bad input.

The tables are checked against an independent recount from the files the run leaves
behind: the VinDr CSV read with :mod:`csv` and the cached maps read with :func:`numpy.load`.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_correlax.cli import main

SHAPE = (384, 256)
N_IMAGES = 12
MAP_ARGS = ["--stride", "64", "--masks", "16", "--no-adaptive", "--no-focus", "--device", "cpu",
            "--threads", "1", "--batch-size", "32"]
TABLES = ("pointing.csv", "pointing.md", "classification.csv", "classification.md",
          "detection.csv", "detection.md", "froc.csv", "pointing-verdicts.csv")
# docs/method.md §3 grouping, written out here rather than imported.
GROUPS = {"Mass": "Mass", "Suspicious Calcification": "Suspicious Calcification",
          "Asymmetry": "Asymmetries", "Focal Asymmetry": "Asymmetries",
          "Global Asymmetry": "Asymmetries", "Architectural Distortion": "Architectural Distortion",
          "Suspicious Lymph Node": "Suspicious Lymph Node", "Skin Thickening": "Skin Thickening",
          "Nipple Retraction": "Retractions", "Skin Retraction": "Retractions"}
LESIONS = ["Mass", "Suspicious Calcification", "Asymmetries", "Architectural Distortion",
           "Suspicious Lymph Node", "Skin Thickening", "Retractions"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path_factory.mktemp("vindr") / "data", N_IMAGES, seed=3,
                               shape=SHAPE, test_fraction=1.0)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, dataset, small_model) -> Path:
    out = tmp_path_factory.mktemp("eval") / "one"
    status = main(["evaluate", str(dataset), "--out", str(out), "--model", str(small_model),
                   *MAP_ARGS])
    assert status == 0
    return out


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def ground_truth(data: Path) -> dict[str, dict[str, list[tuple[float, ...]]]]:
    """image_id -> label -> boxes, straight from finding_annotations.csv."""
    out: dict[str, dict[str, list[tuple[float, ...]]]] = {}
    for row in read_table(data / "finding_annotations.csv"):
        labels = out.setdefault(row["image_id"], {})
        for category in ast.literal_eval(row["finding_categories"]):
            if category in GROUPS:
                box = tuple(float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
                labels.setdefault(GROUPS[category], []).append(box)
    return out


def recount(data: Path, cache: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """label -> rule -> (hits, pairs), from the cached .npz maps and the CSV boxes."""
    counts: dict[str, dict[str, list[int]]] = {}
    for image_id, labels in ground_truth(data).items():
        with np.load(cache / f"{image_id}.npz") as z:
            names = [str(v) for v in z["labels"]]
            mask = z["window_mask"]
            origin, stride, window = z["origin"], int(z["stride"]), int(z["window"])
            maps = {"prediction": z["prediction"], "correlation": z["correlation"]}
        for label, boxes in labels.items():
            c = names.index(label)
            for rule, name, test in (("prediction>=0.25", "prediction", lambda v: v >= 0.25),
                                     ("prediction>=0.50", "prediction", lambda v: v >= 0.5),
                                     ("correlation>0", "correlation", lambda v: v > 0)):
                values = np.where(mask, maps[name][c], -np.inf)
                i, j = divmod(int(np.argmax(values)), values.shape[1])
                y = origin[0] + stride * i + window / 2
                x = origin[1] + stride * j + window / 2
                inside = any(x0 - 48 <= x <= x1 + 48 and y0 - 48 <= y <= y1 + 48
                             for x0, y0, x1, y1 in boxes)
                entry = counts.setdefault(label, {}).setdefault(rule, [0, 0])
                entry[0] += int(inside and test(values[i, j]))
                entry[1] += 1
    return {lab: {r: (h, n) for r, (h, n) in rules.items()} for lab, rules in counts.items()}


def test_pointing_table_matches_an_independent_recount(one_process, dataset):
    (cache,) = [p for p in (one_process / "cache").iterdir() if p.is_dir()]
    expected = recount(dataset, cache)
    rows = read_table(one_process / "pointing.csv")
    assert list(rows[0]) == ["Finding", "Prediction Map (≥ 25%)", "Prediction Map (≥ 50%)",
                             "Correlation Map", "Support"]
    assert [r["Finding"] for r in rows] == [
        *LESIONS, "Mean weighted by support",
        "Hits per image with a lesion (the paper's 'Weighted Mean Accuracy')"]
    columns = {"prediction>=0.25": "Prediction Map (≥ 25%)",
               "prediction>=0.50": "Prediction Map (≥ 50%)", "correlation>0": "Correlation Map"}
    by_support, per_image = rows[-2:]
    for row in rows[:-2]:
        label = row["Finding"]
        if label not in expected:
            assert row["Support"] == "0" and row["Correlation Map"] == ""
            continue
        assert int(row["Support"]) == expected[label]["correlation>0"][1]
        for rule, column in columns.items():
            hits, pairs = expected[label][rule]
            assert row[column] == f"{hits / pairs:.4f}"
    total = sum(rules["correlation>0"][1] for rules in expected.values())
    images = sum(1 for labels in ground_truth(dataset).values() if labels)
    assert 0 < images < total  # some phantom has two lesion labels: the two means differ
    assert by_support["Support"] == str(total)
    assert per_image["Support"] == str(images)
    for rule, column in columns.items():
        hits = sum(rules[rule][0] for rules in expected.values())
        assert by_support[column] == f"{hits / total:.4f}"
        assert per_image[column] == f"{hits / images:.4f}"
    verdicts = read_table(one_process / "pointing-verdicts.csv")
    normal = sum(1 for labels in ground_truth(dataset).values() if not labels)
    # three rules per (image, lesion label), and one "did the map stay quiet?" row per
    # rule for each normal image
    assert len(verdicts) == 3 * total + 3 * normal
    assert sum(v["label"] == "No Finding" for v in verdicts) == 3 * normal


def test_crop_metrics_follow_the_table_3_layout_and_the_cached_scores(one_process, dataset):
    (cache,) = [p for p in (one_process / "cache").iterdir() if p.is_dir()]
    truth = ground_truth(dataset)
    targets, probs = [], []
    labels = ["No Finding", *LESIONS]
    for image_id, by_label in truth.items():
        info = json.loads((cache / f"{image_id}.json").read_text())
        assert info["error"] is None
        # one crop per distinct box, or one centre crop for a No Finding image
        boxes = {b for bs in by_label.values() for b in bs}
        assert {tuple(c["box"]) for c in info["crops"] if c["box"]} == boxes
        assert len(info["crops"]) == (len(boxes) or 1)
        for crop in info["crops"]:
            targets.append([lab in crop["target"] for lab in labels])
            probs.append(crop["probabilities"])
    t = np.array(targets)
    p = np.array(probs) >= 0.5
    rows = read_table(one_process / "classification.csv")
    assert list(rows[0]) == ["Label", "Accuracy", "Precision", "Recall", "F1 Score", "Support"]
    for c, row in enumerate(rows):
        assert row["Label"] == labels[c]
        tp = int(np.sum(t[:, c] & p[:, c]))
        fp = int(np.sum(~t[:, c] & p[:, c]))
        fn = int(np.sum(t[:, c] & ~p[:, c]))
        assert row["Support"] == str(tp + fn)
        assert row["Accuracy"] == f"{np.mean(t[:, c] == p[:, c]):.4f}"
        assert row["Precision"] == f"{tp / (tp + fp) if tp + fp else 0:.4f}"
        assert row["Recall"] == f"{tp / (tp + fn) if tp + fn else 0:.4f}"
    report = json.loads((one_process / "report.json").read_text())
    assert report["images_evaluated"] == N_IMAGES and report["failed"] == {}
    markdown = (one_process / "report.md").read_text()
    assert "Mean weighted by support" in markdown and "F1 Score" in markdown
    assert "Hits per image with a lesion" in markdown
    assert report["pointing"]["images_with_lesion"]["correlation>0"] == sum(
        1 for labels in truth.values() if labels)


def test_interrupted_run_resumes_with_only_the_unfinished_images(one_process, dataset,
                                                                  small_model, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(one_process, out)
    (cache,) = [p for p in (out / "cache").iterdir() if p.is_dir()]
    images = sorted(p.stem for p in cache.glob("*.npz"))
    stopped = images[3]
    (cache / f"{stopped}.json").unlink()  # killed after its maps, before its scores
    gone = images[5]
    (cache / f"{gone}.json").unlink()
    (cache / f"{gone}.npz").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npz")}
    assert main(["evaluate", str(dataset), "--out", str(out), "--model", str(small_model),
                 *MAP_ARGS]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npz")}
    assert {name for name in after if after[name] != stamps.get(name)} == {f"{gone}.npz"}
    for name in TABLES:
        assert (out / name).read_bytes() == (one_process / name).read_bytes(), name


def test_two_torchrun_processes_give_the_same_tables_as_one(one_process, dataset, small_model,
                                                            tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "napari_correlax.cli", "evaluate", str(dataset), "--out", str(out),
           "--model", str(small_model), *MAP_ARGS]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[rank 1]" in done.stderr
    for name in TABLES:
        assert (out / name).read_bytes() == (one_process / name).read_bytes(), name
    (cache,) = [p for p in (out / "cache").iterdir() if p.is_dir()]
    assert len([p for p in cache.glob("*.json") if p.name != "settings.json"]) == N_IMAGES


def test_missing_and_unreadable_images_are_listed_before_the_run(one_process, dataset,
                                                                 small_model, tmp_path, capsys):
    from napari_correlax.io.vindr import load_vindr

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    out = tmp_path / "out"
    shutil.copytree(one_process, out)  # same files, same settings: maps come from the cache
    records = load_vindr(data).split("test")
    records[0].path.unlink()
    records[1].path.write_bytes(b"")
    capsys.readouterr()
    assert main(["evaluate", str(data), "--out", str(out), "--model", str(small_model),
                 *MAP_ARGS]) == 0
    err = capsys.readouterr().err
    assert f"missing image file for {records[0].image_id}" in err
    assert f"left out {records[1].image_id}" in err and "empty" in err
    # listed before the first image is processed, not discovered mid-run
    assert err.index("missing image file") < err.index("image 1/")
    assert err.count(f"left out {records[1].image_id}") == 1
    report = json.loads((out / "report.json").read_text())
    assert report["missing"] == [records[0].image_id]
    assert list(report["failed"]) == [records[1].image_id]
    assert report["images_evaluated"] == N_IMAGES - 2


def test_check_readable_finds_truncated_empty_and_mismatched_files(dataset, tmp_path):
    from napari_correlax.io.vindr import check_readable, load_vindr

    record = load_vindr(dataset).split("test")[0]
    data = record.path.read_bytes()
    cases = {
        "empty": b"",
        "half": data[: len(data) // 2],
        "text": b"hello, this is not an image at all" * 10,
    }
    records = []
    for name, content in cases.items():
        path = tmp_path / f"{name}.dicom"
        path.write_bytes(content)
        records.append(dataclasses.replace(record, path=path))
    records.append(dataclasses.replace(record, height=SHAPE[0] + 1))
    records.append(dataclasses.replace(record, path=tmp_path / "absent.dicom"))
    records.append(record)
    found = check_readable(records)
    reasons = [why for _, why in found]
    assert len(found) == 5 and found[-1][0] is records[-2]
    assert "empty" in reasons[0]
    assert "cut off" in reasons[1]
    assert str(tmp_path / "text.dicom") in reasons[2]
    assert f"{SHAPE[0]}×{SHAPE[1]}" in reasons[3] and f"{SHAPE[0] + 1}×" in reasons[3]
    assert "not found" in reasons[4]
    assert check_readable([record], decode=True) == []


def test_bad_input_exits_with_one_line(tmp_path, dataset, small_model, capsys):
    assert main(["evaluate", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finding_annotations.csv" in err
    assert main(["evaluate", str(dataset), "--out", str(tmp_path / "o"), "--split", "training",
                 "--model", str(small_model)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'training' has no images" in err and "test" in err
    assert main(["evaluate", str(dataset), "--out", str(tmp_path / "o"), "--model",
                 str(tmp_path / "none.safetensors")]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err


def test_reader_report_counts_the_automatic_verdicts(one_process):
    """Without a reader's review, the report gives the automatic hit rate per label and
    rule, recounted here from pointing-verdicts.csv; nothing judged by a reader."""
    verdicts = read_table(one_process / "pointing-verdicts.csv")
    report = read_table(one_process / "reader-report.csv")
    assert report and (one_process / "reader-report.md").is_file()
    for line in report:
        members = [v for v in verdicts if v["map"] == line["Map"] and (
            v["label"] == line["Finding"] or
            (line["Finding"] == "All findings" and v["label"] != "No Finding"))]
        assert int(line["Findings"]) == len(members)
        hits = sum(v["auto_verdict"] == "hit" for v in members)
        assert float(line["Automatic hit rate"]) == pytest.approx(hits / len(members), abs=1e-4)
        assert line["Judged"] == "0" and line["Reader hit rate"] == ""
