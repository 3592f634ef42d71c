"""Synthetic mammograms and the VinDr-layout writer (docs/method.md §3, §11)."""

from __future__ import annotations

import ast
import csv

import numpy as np
import pytest
from scipy import ndimage

from napari_correlax.labels import LABELS, VINDR_GROUPS
from napari_correlax.synth import (
    CATEGORIES,
    make_phantom,
    plan_vindr_dataset,
    write_dicom,
    write_vindr_dataset,
)

SMALL = (512, 320)
TINY = (256, 192)


def _diff(seed, category, view, laterality, shape=SMALL):
    """A phantom with one finding, and its difference from the same seed without it."""
    with_f = make_phantom(seed, shape, view, laterality, [category])
    without = make_phantom(seed, shape, view, laterality, [])
    return with_f, without, with_f.pixels.astype(np.float64) - without.pixels


def _box_mask(shape, box):
    x0, y0, x1, y1 = box
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("view", ["CC", "MLO"])
@pytest.mark.parametrize("laterality", ["L", "R"])
def test_pixels_are_float32_in_unit_range_with_dark_background(view, laterality):
    ph = make_phantom(3, TINY, view, laterality, None)
    assert ph.pixels.dtype == np.float32 and ph.pixels.shape == TINY
    assert ph.pixels.min() >= 0.0 and ph.pixels.max() <= 1.0
    assert ph.view == view and ph.laterality == laterality
    assert ph.spacing_mm == (0.1, 0.1)
    background = ph.pixels[~ph.breast_mask]
    tissue = ph.pixels[ph.breast_mask]
    assert background.size and tissue.size
    assert background.mean() < 0.02
    assert np.median(tissue) > 0.2


def test_same_seed_same_image_other_seed_other_image():
    a = make_phantom(7, TINY, "MLO", "L", None)
    b = make_phantom(7, TINY, "MLO", "L", None)
    c = make_phantom(8, TINY, "MLO", "L", None)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert a.findings == b.findings
    assert np.abs(a.pixels - c.pixels).mean() > 0.01


def test_random_findings_count_and_explicit_empty_list():
    counts = {len(make_phantom(s, TINY, "CC", "L", None).findings) for s in range(30)}
    assert counts <= {0, 1, 2, 3} and len(counts) >= 3
    assert make_phantom(1, TINY, "CC", "L", []).findings == []


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown finding"):
        make_phantom(0, TINY, findings=["Tumour"])
    with pytest.raises(ValueError, match="view"):
        make_phantom(0, TINY, view="ML")
    with pytest.raises(ValueError, match="one nipple"):
        make_phantom(0, TINY, findings=["Nipple Retraction", "Nipple Retraction"])


def test_r_is_the_mirror_of_l_including_boxes():
    left = make_phantom(5, SMALL, "MLO", "L", ["Mass", "Suspicious Lymph Node"])
    right = make_phantom(5, SMALL, "MLO", "R", ["Mass", "Suspicious Lymph Node"])
    np.testing.assert_array_equal(right.pixels, left.pixels[:, ::-1])
    w = SMALL[1]
    for fl, fr in zip(left.findings, right.findings):
        x0, y0, x1, y1 = fl.box
        assert fr.box == (w - x1, y0, w - x0, y1)
        assert fr.category == fl.category


def test_chest_wall_is_at_the_left_edge_for_l_and_the_right_edge_for_r():
    for lat, wall, free in (("L", 0, -1), ("R", -1, 0)):
        ph = make_phantom(2, SMALL, "CC", lat, [])
        mid = slice(SMALL[0] // 3, 2 * SMALL[0] // 3)
        assert ph.breast_mask[mid, wall].all()
        assert not ph.breast_mask[:, free].any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mlo_has_a_bright_pectoral_corner_and_cc_has_none(seed):
    h, w = SMALL
    for lat in ("L", "R"):
        cols = slice(0, w // 12) if lat == "L" else slice(w - w // 12, w)
        mlo = make_phantom(seed, SMALL, "MLO", lat, [])
        cc = make_phantom(seed, SMALL, "CC", lat, [])
        corner_mlo = mlo.pixels[: h // 12, cols]
        tissue = np.median(mlo.pixels[mlo.breast_mask])
        assert corner_mlo.mean() > tissue + 0.15
        cc_tissue = np.median(cc.pixels[cc.breast_mask])
        assert cc.pixels[: h // 12, cols].mean() < cc_tissue


@pytest.mark.parametrize("k, category", list(enumerate(CATEGORIES)))
def test_each_finding_lies_inside_its_tight_box(k, category):
    view = ("CC", "MLO")[k % 2]
    laterality = ("L", "R")[(k // 2) % 2]
    ph, _, diff = _diff(40 + k, category, view, laterality)
    (f,) = ph.findings
    assert f.category == category and f.label == VINDR_GROUPS[category]
    assert f.birads.startswith("BI-RADS ")
    h, w = ph.pixels.shape
    x0, y0, x1, y1 = f.box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    inside = _box_mask(diff.shape, f.box)
    peak = np.abs(diff[inside]).max()
    assert peak > 0.05
    # Everything the finding changed beyond the box is a faint tail.
    assert np.abs(diff[~inside]).max(initial=0.0) <= 0.15 * peak  # 0.1 before clipping
    # Tight: each edge of the box touches a clearly changed pixel.
    box = np.abs(diff[y0:y1, x0:x1]) >= 0.08 * peak
    assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()


@pytest.mark.parametrize("seed", range(4))
def test_masses_are_bright_blobs_of_30_to_150_px(seed):
    ph, _, diff = _diff(seed, "Mass", "CC", "L", (1024, 640))
    x0, y0, x1, y1 = ph.findings[0].box
    assert 25 <= max(x1 - x0, y1 - y0) <= 400  # spiculated: the spicules widen the box
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    core = ph.pixels[cy - 5:cy + 5, cx - 5:cx + 5].mean()
    ring = _box_mask(diff.shape, (x0 - 12, y0 - 12, x1 + 12, y1 + 12)) & ~_box_mask(
        diff.shape, ph.findings[0].box)
    assert core > ph.pixels[ring].mean() + 0.08
    assert diff[cy - 5:cy + 5, cx - 5:cx + 5].mean() > 0.1


@pytest.mark.parametrize("seed", range(4))
def test_calcifications_are_a_cluster_of_tiny_bright_dots(seed):
    ph, _, diff = _diff(seed, "Suspicious Calcification", "MLO", "R")
    (f,) = ph.findings
    x0, y0, x1, y1 = f.box
    assert max(x1 - x0, y1 - y0) <= 130
    dots, n = ndimage.label(diff > 0.2)
    assert 2 <= n <= 30
    for sl in ndimage.find_objects(dots):
        assert sl[0].stop - sl[0].start <= 7 and sl[1].stop - sl[1].start <= 7
    # The brightest changes (the dots' maxima) all lie in the box.
    top = np.argwhere(diff >= np.sort(diff, axis=None)[-20])
    assert ((top[:, 0] >= y0) & (top[:, 0] < y1) & (top[:, 1] >= x0) & (top[:, 1] < x1)).all()
    assert diff.max() > 0.35


def test_asymmetries_are_broad_and_faint():
    for seed, category in enumerate(["Asymmetry", "Focal Asymmetry", "Global Asymmetry"]):
        ph, _, diff = _diff(seed, category, "CC", "L")
        x0, y0, x1, y1 = ph.findings[0].box
        assert min(x1 - x0, y1 - y0) >= 30
        assert 0.04 < diff.max() < 0.15


def test_distortion_is_thin_lines_without_a_central_mass():
    for seed in range(3):
        ph, _, diff = _diff(seed, "Architectural Distortion", "CC", "L")
        x0, y0, x1, y1 = ph.findings[0].box
        region = diff[y0:y1, x0:x1]
        assert (region > 0.3 * region.max()).mean() < 0.15  # lines, not a filled blob
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        assert diff[cy - 2:cy + 3, cx - 2:cx + 3].mean() < 0.3 * region.max()


def test_lymph_node_has_a_lucent_centre_near_the_axilla():
    for seed in range(3):
        ph, _, diff = _diff(seed, "Suspicious Lymph Node", "MLO", "L")
        rim = diff > 0.5 * diff.max()
        assert ndimage.binary_fill_holes(rim).sum() > rim.sum() + 5  # a hole: the hilum
        _, y0, _, y1 = ph.findings[0].box
        assert (y0 + y1) / 2 < 0.6 * SMALL[0]


def test_skin_thickening_follows_the_skin():
    for seed in range(3):
        ph, _, diff = _diff(seed, "Skin Thickening", ("CC", "MLO")[seed % 2], "L")
        depth = ndimage.distance_transform_edt(ph.breast_mask)
        changed = np.abs(diff) > 0.03
        assert changed.sum() > 50
        assert depth[changed].max() <= 0.009 * SMALL[1] * 4.5 + 2
        x0, y0, x1, y1 = ph.findings[0].box
        assert not ph.breast_mask[y0:y1, x0:x1].all()  # the box straddles the skin


@pytest.mark.parametrize("category", ["Nipple Retraction", "Skin Retraction"])
def test_retraction_indents_the_contour_inside_the_box(category):
    for seed in range(3):
        ph, without, _ = _diff(seed, category, ("CC", "MLO")[seed % 2], ("L", "R")[seed % 2])
        lost = without.breast_mask & ~ph.breast_mask
        assert lost.sum() > 30
        assert not (ph.breast_mask & ~without.breast_mask).any()
        inside = _box_mask(lost.shape, ph.findings[0].box)
        assert not (lost & ~inside).any()


def test_all_categories_fit_in_one_small_image():
    ph = make_phantom(11, TINY, "MLO", "L", list(CATEGORIES))
    assert [f.category for f in ph.findings] == list(CATEGORIES)
    for f in ph.findings:
        x0, y0, x1, y1 = f.box
        assert 0 <= x0 < x1 <= TINY[1] and 0 <= y0 < y1 <= TINY[0]
    assert ph.labels == list(LABELS[1:])


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("bits", [12, 14, 16])
def test_dicom_round_trip_within_quantisation(tmp_path, photometric, bits):
    import pydicom

    ph = make_phantom(4, TINY, "MLO", "R", ["Mass"])
    path = write_dicom(tmp_path / "x.dicom", ph, photometric=photometric, bits_stored=bits,
                       study_id="s1", series_id="e1", image_id="i1")
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.PhotometricInterpretation == photometric
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, bits, bits - 1)
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.1, 0.1]
    assert (ds.ImageLaterality, ds.ViewPosition, ds.Modality) == ("R", "MLO", "MG")
    assert list(ds.PatientOrientation) == ["P", "FL"]  # chest wall on the right
    assert ds.SOPInstanceUID and ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    stored = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns).astype(np.float64)
    top = 2**bits - 1
    assert stored.max() <= top
    if photometric == "MONOCHROME1":
        stored = top - stored
    np.testing.assert_allclose(stored / top, ph.pixels, atol=0.5 / top + 1e-6)


def test_plan_covers_every_label_in_both_splits():
    plan = plan_vindr_dataset(24, seed=1)
    assert len(plan) == 24
    for split in ("training", "test"):
        cats = [c for p in plan if p.split == split for c in p.categories]
        assert {VINDR_GROUPS[c] for c in cats} == set(LABELS[1:])
        assert any(not p.categories for p in plan if p.split == split)
    every = [c for p in plan for c in p.categories]
    assert set(every) == set(CATEGORIES)
    studies = {}
    for p in plan:
        assert studies.setdefault(p.study_id, p.split) == p.split  # studies are not split
    assert {p.photometric for p in plan} == {"MONOCHROME1", "MONOCHROME2"}
    assert {p.bits_stored for p in plan} == {12, 14, 16}


def test_large_plans_favour_mass_and_calcification():
    every = [c for p in plan_vindr_dataset(400, seed=2) for c in p.categories]
    counts = sorted(((every.count(c), c) for c in CATEGORIES), reverse=True)
    assert {counts[0][1], counts[1][1]} == {"Mass", "Suspicious Calcification"}


def test_written_dataset_has_the_vindr_layout(tmp_path):
    import pydicom

    root = write_vindr_dataset(tmp_path / "ds", 8, seed=3, shape=TINY)
    plan = plan_vindr_dataset(8, seed=3)
    with open(root / "finding_annotations.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [dict(zip(header, r)) for r in reader]
    assert header == ["study_id", "series_id", "image_id", "laterality", "view_position",
                      "height", "width", "breast_birads", "breast_density",
                      "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax",
                      "split"]
    with open(root / "breast-level_annotations.csv", newline="") as fh:
        breast = list(csv.DictReader(fh))
    assert list(breast[0]) == ["study_id", "series_id", "image_id", "laterality",
                               "view_position", "height", "width", "breast_birads",
                               "breast_density", "split"]
    assert [b["image_id"] for b in breast] == [p.image_id for p in plan]
    for p in plan:
        mine = [r for r in rows if r["image_id"] == p.image_id]
        cats = [ast.literal_eval(r["finding_categories"]) for r in mine]
        if not p.categories:
            assert cats == [["No Finding"]]
            assert all(mine[0][k] == "" for k in ("xmin", "ymin", "xmax", "ymax",
                                                  "finding_birads"))
        else:
            assert cats == [[c] for c in p.categories]
        for r in mine:
            assert (r["study_id"], r["laterality"], r["view_position"], r["split"]) == (
                p.study_id, p.laterality, p.view, p.split)
            assert (r["height"], r["width"]) == ("256", "192")
        path = root / "images" / p.study_id / f"{p.image_id}.dicom"
        ds = pydicom.dcmread(path)
        assert (ds.Rows, ds.Columns) == TINY
        assert (ds.PhotometricInterpretation, ds.BitsStored) == (p.photometric, p.bits_stored)
        assert ds.ImageLaterality == p.laterality and ds.ViewPosition == p.view
        # The stored image is the planned phantom.
        stored = np.frombuffer(ds.PixelData, "<u2").reshape(TINY).astype(np.float64)
        top = 2**p.bits_stored - 1
        if p.photometric == "MONOCHROME1":
            stored = top - stored
        np.testing.assert_allclose(stored / top, p.phantom(TINY).pixels, atol=0.5 / top + 1e-6)
    assert not list(root.rglob("*.tmp"))
