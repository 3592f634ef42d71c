"""Scoring pixel-resolution (saliency) maps, and ``correlax compare`` end to end.

Pointing game and FROC on hand-made maps are checked against brute-force counts written
here (a pixel loop for the maximum, a flood fill for the components); the command's
tables against a recount from its cached maps, and two torchrun processes against one.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_correlax.cli import main
from napari_correlax.evaluate.detection import GridMap, froc_curve
from napari_correlax.evaluate.pointing import GROW_PX, pointing_verdicts, rules_for
from napari_correlax.maps.result import MapResult
from napari_correlax.windows import WindowGrid

H, W = 40, 36
LABELS = ["No Finding", "Mass", "Suspicious Calcification"]


def saliency_result(maps: np.ndarray) -> MapResult:
    """A result holding only ``saliency`` (3, H, W) and a dummy one-window grid."""
    grid = WindowGrid(32, 16, (0, 0), (1, 1), (H, W))
    return MapResult(labels=list(LABELS), grid=grid, prediction=np.zeros((3, 1, 1)),
                     window_mask=np.ones((1, 1), bool), extra={"saliency": maps})


def brute_max(values: np.ndarray) -> tuple[float, int, int]:
    best = (-np.inf, -1, -1)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if np.isfinite(v) and v > best[0]:
                best = (float(v), i, j)
    return best


def test_saliency_pointing_matches_a_pixel_loop():
    rng = np.random.default_rng(4)
    rule = rules_for(("saliency",))
    assert [r.name for r in rule] == ["saliency"]  # located: no threshold
    hits = total = 0
    for trial in range(30):
        maps = rng.normal(size=(3, H, W)).astype(np.float32) - 5.0  # negative values too
        maps[:, : rng.integers(0, 10), :] = np.nan  # rows never evaluated
        boxes = [("Mass", *sorted(rng.integers(0, W, 2)), *sorted(rng.integers(0, H, 2)))]
        label, x0, x1, y0, y1 = boxes[0]
        boxes = [(label, float(x0), float(y0), float(x1), float(y1))]
        (verdict,) = pointing_verdicts(saliency_result(maps), boxes, f"t{trial}", rules=rule,
                                       grow=3.0)
        value, i, j = brute_max(maps[1])
        # pixel (i, j) has its centre at (i + 0.5, j + 0.5) in the boxes' frame
        inside = x0 - 3 <= j + 0.5 <= x1 + 3 and y0 - 3 <= i + 0.5 <= y1 + 3
        assert (verdict.value, verdict.row, verdict.col) == (pytest.approx(value), i, j)
        assert verdict.hit == inside  # whatever the (negative) value
        hits += inside
        total += 1
    assert 0 < hits < total  # both outcomes were exercised
    assert GROW_PX == 48.0


def flood_boxes(on: np.ndarray) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
    """8-connected components by flood fill: (mask, cells) per component."""
    seen = np.zeros_like(on, dtype=bool)
    out = []
    for i0 in range(on.shape[0]):
        for j0 in range(on.shape[1]):
            if not on[i0, j0] or seen[i0, j0]:
                continue
            stack, cells = [(i0, j0)], []
            seen[i0, j0] = True
            while stack:
                i, j = stack.pop()
                cells.append((i, j))
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        a, b = i + di, j + dj
                        if 0 <= a < on.shape[0] and 0 <= b < on.shape[1] and on[a, b] \
                                and not seen[a, b]:
                            seen[a, b] = True
                            stack.append((a, b))
            out.append(cells)
    return out


def iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def brute_froc(maps: list[np.ndarray], truth: list[list[tuple]], thresholds, block: int):
    out = []
    for t in thresholds:
        found = fps = 0
        for values, boxes in zip(maps, truth):
            finite = np.isfinite(values)
            lo, hi = values[finite].min(), values[finite].max()
            scaled = np.where(finite, (values - lo) / (hi - lo), np.nan)
            hb, wb = -(-H // block), -(-W // block)
            pooled = np.full((hb, wb), np.nan)
            for a in range(hb):
                for b in range(wb):
                    tile = scaled[a * block:(a + 1) * block, b * block:(b + 1) * block]
                    if np.isfinite(tile).any():
                        pooled[a, b] = np.nanmax(tile)
            on = np.isfinite(pooled) & (pooled >= t)
            hit_boxes = set()
            for cells in flood_boxes(on):
                rows = [c[0] for c in cells]
                cols = [c[1] for c in cells]
                det = (min(cols) * block, min(rows) * block, min((max(cols) + 1) * block, W),
                       min((max(rows) + 1) * block, H))
                overlaps = [k for k, g in enumerate(boxes) if iou(det, g) > 0.3]
                if overlaps:
                    hit_boxes.update(overlaps)
                else:
                    fps += 1
            found += len(hit_boxes)
        n_boxes = sum(len(b) for b in truth)
        out.append((found / n_boxes, fps / len(maps)))
    return out


@pytest.mark.parametrize("block", [1, 4])
def test_saliency_froc_matches_a_flood_fill_count(block):
    rng = np.random.default_rng(7)
    maps, truth, results = [], [], []
    for _ in range(4):
        m = rng.random((3, H, W)) * 0.3
        boxes = []
        for _ in range(2):  # two bright blobs, the first one a lesion
            r, c = rng.integers(4, H - 12), rng.integers(4, W - 12)
            m[1, r:r + 8, c:c + 8] += rng.uniform(0.6, 1.2)
            boxes.append((float(c), float(r), float(c + 8), float(r + 8)))
        m[1, :3, :] = np.nan
        results.append(saliency_result(m.astype(np.float32) * 7.0))  # raw scale: any
        maps.append(m[1] * 7.0)
        truth.append(boxes[:1])
    thresholds = (0.3, 0.5, 0.7, 0.9)
    curve = froc_curve([GridMap.from_result(r, "saliency", "Mass", block=block)
                        for r in results], truth, thresholds)
    expected = brute_froc(maps, truth, thresholds, block)
    assert [(p.tpr, p.fppi) for p in curve] == [pytest.approx(e) for e in expected]
    assert any(p.tpr > 0 for p in curve) and any(p.fppi > 0 for p in curve)


# -- the command -----------------------------------------------------------------------
SHAPE = (320, 224)
N_IMAGES = 12
METHODS = "correlax,gradcam,gradcam++,eigencam"
ARGS = ["--stride", "64", "--masks", "16", "--no-adaptive", "--no-focus", "--device", "cpu",
        "--threads", "1", "--batch-size", "32", "--methods", METHODS]
TABLES = ("compare.csv", "compare.md", "froc.csv", "pointing-verdicts.csv")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path_factory.mktemp("vindr") / "data", N_IMAGES, seed=3,
                               shape=SHAPE, test_fraction=1.0)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, dataset, small_model) -> Path:
    out = tmp_path_factory.mktemp("compare") / "one"
    assert main(["compare", str(dataset), "--out", str(out), "--model", str(small_model),
                 *ARGS]) == 0
    return out


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_compare_tables_recount_from_the_cached_maps(one_process, dataset):
    import json

    from napari_correlax.io.vindr import load_vindr
    from napari_correlax.maps.result import load_result

    doc = json.loads((one_process / "compare.json").read_text())
    records = load_vindr(dataset).split("test")
    rows = read_table(one_process / "compare.csv")
    assert {r["method"] for r in rows} == set(METHODS.split(","))
    scored = {"correlax": "correlation", "gradcam": "saliency", "gradcam++": "saliency",
              "eigencam": "saliency"}
    for method, kind in scored.items():
        cache = one_process / "cache" / doc["keys"][method]
        counts: dict[str, list[int]] = {}
        for record in records:
            result = load_result(cache / f"{record.image_id}.npz")
            for label in {b.label for b in record.boxes}:
                if label not in result.labels:
                    continue
                values = result.get(kind)[result.labels.index(label)]
                if kind == "correlation":  # grid: window centres of evaluated windows
                    masked = np.where(result.window_mask, values, -np.inf)
                    i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
                    row, col = result.grid.centres()[i, j]
                    ok = values[i, j] > 0
                else:
                    _, row, col = brute_max(values)
                    ok = True
                inside = any(b.xmin - 48 <= col + 0.5 <= b.xmax + 48 and
                             b.ymin - 48 <= row + 0.5 <= b.ymax + 48
                             for b in record.boxes if b.label == label)
                hit, n = counts.setdefault(label, [0, 0])
                counts[label] = [hit + int(inside and ok), n + 1]
        for row in (r for r in rows if r["method"] == method):
            hit, n = counts.get(row["label"], [0, 0])
            assert (int(row["support"]), int(row["hits"])) == (n, hit), (method, row)
            assert row["rate"] == ("" if n == 0 else f"{hit / n:.4f}")
    md = (one_process / "compare.md").read_text()
    assert md.count("| gradcam++ |") == 2  # one row in each table
    assert (one_process / "froc.png").stat().st_size > 1000


def test_two_torchrun_processes_give_the_same_tables_as_one(one_process, dataset, small_model,
                                                            tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "napari_correlax.cli", "compare", str(dataset), "--out", str(out),
           "--model", str(small_model), *ARGS]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[rank 1]" in done.stderr
    for name in TABLES:
        assert (out / name).read_bytes() == (one_process / name).read_bytes(), name


def test_compare_resumes_from_its_cache_and_rejects_unknown_methods(one_process, dataset,
                                                                     small_model, capsys):
    before = {p: p.stat().st_mtime_ns for p in (one_process / "cache").rglob("*.npz")}
    assert main(["compare", str(dataset), "--out", str(one_process), "--model",
                 str(small_model), *ARGS]) == 0
    assert {p: p.stat().st_mtime_ns for p in (one_process / "cache").rglob("*.npz")} == before
    capsys.readouterr()
    assert main(["compare", str(dataset), "--out", str(one_process), "--methods",
                 "correlax,nocam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nocam" in err[0]
