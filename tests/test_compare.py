"""Scoring pixel-resolution (saliency) maps, and ``correlax compare`` end to end.

Pointing game and FROC on hand-made maps are checked against brute-force counts written
here (a pixel loop for the maximum, a flood fill for the components); the command's
tables against a recount from its cached maps, its intervals and paired tests against
the Wilson formula and binomial sums (``math.comb``) written here on a recount of its
verdicts, ``same_as`` against a direct comparison of the cached maps, and two torchrun
processes against one.
"""

from __future__ import annotations

import csv
import math
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
TABLES = ("compare.csv", "paired.csv", "compare.md", "froc.csv", "pointing-verdicts.csv",
          "settings.json")


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


# -- intervals, paired tests, equal maps, the folder's settings ------------------------
Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


def wilson_by_hand(hits: int, n: int) -> tuple[float, float]:
    p = hits / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_by_hand(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def verdict_hits(out: Path) -> dict[str, dict[tuple[str, str], bool]]:
    """Each method's hit per (image, label) read from pointing-verdicts.csv."""
    import json

    doc = json.loads((out / "compare.json").read_text())
    method_of = {key: name for name, key in doc["keys"].items()}
    hits: dict[str, dict[tuple[str, str], bool]] = {m: {} for m in doc["methods"]}
    for row in read_table(out / "pointing-verdicts.csv"):
        if row["label"] != "No Finding":
            hits[method_of[row["settings"]]][(row["image_id"], row["label"])] = \
                row["auto_verdict"] == "hit"
    return hits


def test_compare_intervals_are_wilson_of_hits_over_support(one_process):
    rows = [r for r in read_table(one_process / "compare.csv") if int(r["support"])]
    assert rows
    for row in rows:
        low, high = wilson_by_hand(int(row["hits"]), int(row["support"]))
        assert float(row["ci_low"]) == pytest.approx(low, abs=6e-5)
        assert float(row["ci_high"]) == pytest.approx(high, abs=6e-5)
        assert float(row["ci_low"]) <= float(row["rate"]) <= float(row["ci_high"])
    md = (one_process / "compare.md").read_text()
    row = rows[0]
    low, high = wilson_by_hand(int(row["hits"]), int(row["support"]))
    assert (f"{row['hits']}/{row['support']} = {int(row['hits']) / int(row['support']):.3f} "
            f"[{low:.3f}, {high:.3f}]") in md


def test_paired_csv_recounts_from_the_verdicts_with_exact_mcnemar(one_process):
    hits = verdict_hits(one_process)
    rows = read_table(one_process / "paired.csv")
    methods = METHODS.split(",")
    pairs = {(r["method_a"], r["method_b"]) for r in rows}
    assert pairs == {(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]}
    discordant = 0
    for row in rows:
        a, b = hits[row["method_a"]], hits[row["method_b"]]
        keys = [k for k in a if k in b and row["label"] in ("all labels", k[1])]
        assert keys
        counts = {"both": 0, "a_only": 0, "b_only": 0, "neither": 0}
        for k in keys:
            if a[k] and b[k]:
                counts["both"] += 1
            elif a[k]:
                counts["a_only"] += 1
            elif b[k]:
                counts["b_only"] += 1
            else:
                counts["neither"] += 1
        assert {k: int(row[k]) for k in counts} == counts, row
        assert float(row["p_value"]) == pytest.approx(
            mcnemar_by_hand(counts["a_only"], counts["b_only"]), abs=1e-6)
        discordant += counts["a_only"] + counts["b_only"]
    assert discordant > 0  # the test saw pairs where the methods disagree
    md = (one_process / "compare.md").read_text()
    assert "- all labels: " in md and "at 5 %" in md


def cam_folder(tmp_path: Path, dataset: Path, model: Path, options: dict) -> Path:
    """Grad-CAM, XGrad-CAM and HiRes-CAM on 3 images (compare's Python API)."""
    from napari_correlax.evaluate.compare import CompareConfig, compare
    from napari_correlax.maps.settings import MapSettings

    out = tmp_path / "cams"
    compare(CompareConfig(dataset, out, ["gradcam", "xgradcam", "hirescam"], model=model,
                          settings=MapSettings(stride=64, device="cpu", threads=1),
                          options={"mode": "windowed", **options}, limit=3))
    return out


def cached_saliency(out: Path, method: str) -> list[np.ndarray]:
    import json

    from napari_correlax.maps.result import load_result

    key = json.loads((out / "compare.json").read_text())["keys"][method]
    return [load_result(p).get("saliency") for p in sorted((out / "cache" / key).glob("*.npz"))]


def test_same_as_finds_the_gradient_cams_equal_at_a_layer_feeding_gap(tmp_path, dataset,
                                                                        small_model):
    out = cam_folder(tmp_path, dataset, small_model, {})  # default layer: before the GAP
    grad, hires = cached_saliency(out, "gradcam"), cached_saliency(out, "hirescam")
    assert len(grad) == 3 and all(np.nanmax(g) > 0 for g in grad)  # real maps, not empty
    assert all(np.allclose(g, h, rtol=1e-4, atol=1e-5 * np.nanmax(np.abs(g)), equal_nan=True)
               for g, h in zip(grad, hires))
    same = {r["method"]: r["same_as"] for r in read_table(out / "compare.csv")}
    assert same == {"gradcam": "", "xgradcam": "gradcam", "hirescam": "gradcam"}
    md = (out / "compare.md").read_text()
    assert "| gradcam = xgradcam = hirescam |" in md and "| xgradcam |" not in md


def test_same_as_stays_empty_when_a_conv_follows_the_target_layer(tmp_path, dataset,
                                                                  small_model):
    out = cam_folder(tmp_path, dataset, small_model, {"target_layer": "encoder.body.5"})
    grad, hires = cached_saliency(out, "gradcam"), cached_saliency(out, "hirescam")
    assert not all(np.allclose(g, h, rtol=1e-2, equal_nan=True) for g, h in zip(grad, hires))
    assert {r["same_as"] for r in read_table(out / "compare.csv")} == {""}
    assert "| xgradcam |" in (out / "compare.md").read_text()


def test_a_folder_refuses_other_settings_unless_fresh(tmp_path, dataset, small_model,
                                                       capsys):
    import json

    out = tmp_path / "guard"
    base = ["compare", str(dataset), "--out", str(out), "--model", str(small_model),
            "--methods", "prediction", "--device", "cpu", "--threads", "1", "--limit", "2"]
    assert main([*base, "--stride", "64"]) == 0
    assert json.loads((out / "settings.json").read_text())["stride"] == 64
    # runtime-only settings (batch size, threads) and another method are no difference
    assert main([*base, "--stride", "64", "--batch-size", "7", "--methods", "gradcam"]) == 0
    capsys.readouterr()
    assert main([*base, "--stride", "32", "--reach", "inside"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "settings.json" in err[0] and "stride = 64" in err[0] and "stride = 32" in err[0]
    assert "reach" not in err[0]  # the first setting that differs only
    old_keys = {p.name for p in (out / "cache").iterdir()}
    assert main([*base, "--stride", "32", "--fresh"]) == 0
    assert json.loads((out / "settings.json").read_text())["stride"] == 32
    new_keys = {p.name for p in (out / "cache").iterdir()}
    assert not new_keys & old_keys  # the old maps were deleted, not mixed in
    assert [r["method"] for r in read_table(out / "compare.csv")][:1] == ["prediction"]


def test_maps_equal_needs_the_same_shape_empty_cells_and_values():
    from napari_correlax.evaluate.compare import maps_equal

    rng = np.random.default_rng(5)
    a = rng.random((3, 20, 16)).astype(np.float32) * 4.0
    a[:, :2] = np.nan
    assert maps_equal(a, a + np.float32(1e-7) * a)  # float32 round-off
    assert not maps_equal(a, a * 1.01)
    moved = a.copy()
    moved[0, 5, 5] = np.nan
    assert not maps_equal(a, moved)
    assert not maps_equal(a, a[:, :, :15]) and not maps_equal(a, None)


def test_the_significance_sentence_names_the_pairs_below_five_percent():
    from napari_correlax.evaluate.compare import significance_sentence
    from napari_correlax.evaluate.paired import PairedRow, paired_counts

    a = {(f"i{k}", "Mass"): True for k in range(10)}
    b = {(f"i{k}", "Mass"): k == 0 for k in range(10)}  # 9 pairs only A hits
    c = {(f"i{k}", "Mass"): k < 8 for k in range(10)}  # 2 pairs only A hits
    rows = [PairedRow("a", "b", "Mass", paired_counts(a, b)),
            PairedRow("a", "c", "Mass", paired_counts(a, c))]
    p = 2 * math.comb(9, 0) / 2**9
    text = significance_sentence("Mass", rows)
    assert text == (f"Mass: 1 of 2 pairs of methods differ at 5 % (exact McNemar on 10 "
                    f"(image, label) pairs): a vs b p = {p:.3g}.")
    calm = significance_sentence("Mass", rows[1:])
    assert "no difference" in calm and f"smallest p = {2 * math.comb(2, 0) / 2**2:.3g}" in calm
