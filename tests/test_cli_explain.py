"""`correlax explain` and `correlax mask-sensitivity` end to end (docs/method.md §7, §12)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from napari_correlax.cli import main
from napari_correlax.maps import load_result
from napari_correlax.maps.masks import DESIGN_VARIANCE_BOUND
from napari_correlax.maps.settings import DEFAULT_DESIGN
from napari_correlax.models import save_checkpoint
from napari_correlax.models.classifier import Classifier

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(Classifier("tiny", input_size=64).eval(), path)


@pytest.fixture(scope="module")
def phantom_png(tmp_path_factory):
    from napari_correlax.synth import make_phantom

    pixels = make_phantom(4, shape=(256, 192), findings=["Mass"]).pixels
    path = tmp_path_factory.mktemp("img") / "breast.png"
    cv2.imwrite(str(path), np.round(pixels * 65535).astype(np.uint16))
    return path


def test_explain_writes_every_map_png_and_summary(tmp_path, tiny_ckpt, phantom_png, capsys):
    out = tmp_path / "out"
    argv = ["explain", str(phantom_png), "--model", str(tiny_ckpt), "--out", str(out),
            "--masks", "256", "--min-masks", "32", "--stride", "32", *FAST]
    assert main(argv) == 0
    res = load_result(out / "breast.npz")
    gy, gx = res.grid.shape
    assert res.correlation.shape == res.product.shape == (8, gy, gx)
    assert res.distance.shape == res.masks_used.shape == (gy, gx)
    assert res.relevance.shape == (256, 192)
    used = res.masks_used
    assert np.all(used[~res.window_mask] == 0)
    assert np.all((used[res.window_mask] >= 32) & (used[res.window_mask] <= 256))

    doc = json.loads((out / "breast.json").read_text())
    assert {"prepare", "predict", "correlax", "total"} <= set(doc["timings_s"])
    assert doc["masks"]["total"] == int(used.sum())
    assert doc["masks"]["mean"] == pytest.approx(used[res.window_mask].mean())
    assert doc["windows"]["skipped_tissue"] == gy * gx - int(res.window_mask.sum())
    assert doc["windows"]["focus"] + doc["windows"]["minimum_only"] == int(res.window_mask.sum())
    assert doc["settings"]["adaptive"] is True and doc["settings"]["focus"] is True
    assert doc["design_factor"] == {
        "used": res.stats.design_factor, "measured": res.stats.design_factor_measured,
        "dof": res.stats.design_factor_dof, "tabled": res.stats.design_factor_tabled}
    # the largest factor used over the correlations, measured in the run, within the bound
    assert res.stats.design_factor == max(res.stats.design_factors)
    assert res.stats.design_factor_dof > 0 and res.stats.design_factor_measured is not None
    assert res.stats.design_factor <= DESIGN_VARIANCE_BOUND[DEFAULT_DESIGN]
    assert res.get("relevance_uncertainty").shape == res.relevance.shape
    assert (out / "breast.png").read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert "breast.npz" in printed and res.stats.design_line in printed


def test_explain_fixed_without_focus_uses_exactly_n_masks(tmp_path, tiny_ckpt, phantom_png):
    """Exactly --masks per window, except the calibration windows (the coarse grid's), which
    get two blocks of the default design to measure its variance (docs/method.md §7)."""
    out = tmp_path / "out"
    argv = ["explain", str(phantom_png), "--model", str(tiny_ckpt), "--out", str(out),
            "--masks", "48", "--fixed", "--no-focus", "--stride", "32", "--seed", "3", *FAST]
    assert main(argv) == 0
    res = load_result(out / "breast.npz")
    # calibration: the tissue windows on the 4x-stride grid and, as they are fewer than 16,
    # 16 tissue windows spread evenly in raster order
    todo = np.flatnonzero(res.window_mask.ravel())
    coarse = np.zeros(res.window_mask.shape, dtype=bool)
    coarse[::4, ::4] = True
    assert coarse.ravel()[todo].sum() < 16 < len(todo)
    spread = np.unique(np.linspace(0, len(todo) - 1, 16).round().astype(int))
    expected = np.where(res.window_mask, 48, 0).ravel()
    expected[todo[coarse.ravel()[todo]]] = 256
    expected[todo[spread]] = 256
    np.testing.assert_array_equal(res.masks_used, expected.reshape(res.window_mask.shape))
    doc = json.loads((out / "breast.json").read_text())
    assert doc["settings"]["adaptive"] is False and doc["settings"]["seed"] == 3


def test_explain_bad_input_is_one_line_naming_the_file(tmp_path, tiny_ckpt, capsys):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM" * 10)
    assert main(["explain", str(bad), "--model", str(tiny_ckpt), "--out", str(tmp_path)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "broken.dcm" in err[0]
    assert main(["explain", str(tmp_path / "missing.png"), "--model", str(tiny_ckpt),
                 "--out", str(tmp_path)]) == 2


def test_mask_sensitivity_table_matches_its_stored_correlations(
    tmp_path, tiny_ckpt, phantom_png, capsys
):
    out = tmp_path / "sens"
    argv = ["mask-sensitivity", str(phantom_png), "--model", str(tiny_ckpt), "--out", str(out),
            "--counts", "32", "64", "--reference", "96", "--windows", "3", "--stride", "32",
            *FAST]
    assert main(argv) == 0
    with np.load(out / "mask_sensitivity.npz") as z:
        rho = z["rho"]
        names = [str(n) for n in z["names"]]
        assert list(z["counts"]) == [32, 64] and int(z["reference"]) == 96
    assert rho.shape == (3, 3, 9) and names[0] == "distance"
    rows = list(csv.DictReader((out / "mask_sensitivity.csv").open()))
    # distance first (paper Fig. 7), then the labels pooled, then each label
    blocks = ["distance", "all labels", *names[1:]]
    assert [r["correlation"] for r in rows] == [b for b in blocks for _ in range(2)]
    assert [int(r["masks"]) for r in rows[:2]] == [32, 64]
    for k, row in enumerate(rows[:2]):
        diffs = np.abs(rho[:, k, 0] - rho[:, -1, 0])
        assert int(row["values"]) == 3
        assert float(row["mean"]) == pytest.approx(diffs.mean())
        assert float(row["max"]) == pytest.approx(diffs.max())
    for k, row in enumerate(rows[2:4]):
        diffs = np.abs(rho[:, k, 1:] - rho[:, -1, 1:])
        assert int(row["values"]) == 3 * 8
        assert float(row["mean"]) == pytest.approx(diffs.mean())
    doc = json.loads((out / "mask_sensitivity.json").read_text())
    assert doc["correlations"][0] == "distance"
    keys = list(doc)
    assert keys.index("table_distance") < keys.index("table_labels")
    assert [r["mean"] for r in doc["table_distance"]] == pytest.approx(
        [float(r["mean"]) for r in rows[:2]])
    assert (out / "mask_sensitivity.png").read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert printed.index("distance") < printed.index("label correlations")
