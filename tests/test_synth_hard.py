"""Hard phantoms: small faint masses, microcalcification clusters, findings near the skin
line (``difficulty="hard"``, docs/method.md §11)."""

from __future__ import annotations

import ast
import csv

import numpy as np
import pytest
from scipy import ndimage

from napari_correlax.cli import main
from napari_correlax.synth import make_phantom, placement, plan_vindr_dataset

SHAPE = (1024, 640)
HARD = ("Mass", "Suspicious Calcification")


def _diff(seed, category, view="CC", laterality="L", difficulty="hard"):
    with_f = make_phantom(seed, SHAPE, view, laterality, [category], difficulty=difficulty)
    without = make_phantom(seed, SHAPE, view, laterality, [], difficulty=difficulty)
    return with_f, with_f.pixels.astype(np.float64) - without.pixels


def _half_peak_radius(diff):
    """Radius (px) of the disk with the area of the pixels changed by >= half the peak."""
    mag = np.abs(diff)
    return float(np.sqrt((mag >= 0.5 * mag.max()).sum() / np.pi))


def _skin_depth(ph, finding):
    """Distance (px) from the finding's box centre to the skin line: the Euclidean
    distance transform of the breast mask at that pixel."""
    x0, y0, x1, y1 = finding.box
    depth = ndimage.distance_transform_edt(ph.breast_mask)
    return float(depth[round((y0 + y1 - 1) / 2), round((x0 + x1 - 1) / 2)])


@pytest.mark.parametrize("seed", range(6))
def test_hard_masses_have_radius_3_to_10_px_and_contrast_at_most_005(seed):
    ph, diff = _diff(seed, "Mass", "MLO" if seed % 2 else "CC", "RL"[seed % 2])
    assert np.abs(diff).max() <= 0.05 + 1e-6
    assert diff.max() >= 0.02  # faint, not absent
    # Radius of an ellipse of semi-axes r and up to 1.3 r: sqrt(r · 1.3 r) <= 11.4 px.
    assert 2.5 <= _half_peak_radius(diff) <= 11.5
    # Every changed pixel lies in the box.
    x0, y0, x1, y1 = ph.findings[0].box
    inside = np.zeros(diff.shape, bool)
    inside[y0:y1, x0:x1] = True
    assert np.abs(diff[~inside]).max() < 0.1 * np.abs(diff).max()
    _, standard = _diff(seed, "Mass", difficulty="standard")
    assert np.abs(standard).max() > 0.1 and _half_peak_radius(standard) > 12


@pytest.mark.parametrize("seed", range(6))
def test_hard_calcifications_are_tight_clusters_of_small_faint_dots(seed):
    ph, diff = _diff(seed, "Suspicious Calcification", "MLO", "R")
    x0, y0, x1, y1 = ph.findings[0].box
    assert max(x1 - x0, y1 - y0) <= 2 * 20 + 4
    assert 0.1 <= diff.max() <= 0.25 + 1e-6
    dots, n = ndimage.label(diff > 0.04)
    assert 2 <= n <= 15
    for sl in ndimage.find_objects(dots):
        assert sl[0].stop - sl[0].start <= 4 and sl[1].stop - sl[1].start <= 4


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_hard_findings_asked_near_the_skin_lie_within_30_px_of_it(monkeypatch, laterality):
    monkeypatch.setattr(placement, "HARD_SKIN_SHARE", 1.0)
    depths = [_skin_depth(ph, f)
              for seed in range(6)
              for ph in [make_phantom(seed, SHAPE, "MLO", laterality, list(HARD),
                                      difficulty="hard")]
              for f in ph.findings]
    assert len(depths) == 12
    assert max(depths) <= 30.0
    assert min(depths) >= 3.0  # inside the breast, not on its edge


def test_a_share_of_hard_findings_is_near_the_skin_unlike_standard_ones():
    near = {"hard": [], "standard": []}
    for seed in range(16):
        for difficulty in near:
            ph = make_phantom(seed, SHAPE, "CC", "L", list(HARD), difficulty=difficulty)
            near[difficulty] += [_skin_depth(ph, f) <= 30.0 for f in ph.findings]
    assert 0.15 <= np.mean(near["hard"]) <= 0.7
    assert np.mean(near["standard"]) <= 0.05


def test_hard_phantom_keeps_the_standard_breast_and_random_draws_are_hard_categories():
    hard = make_phantom(4, SHAPE, "CC", "L", [], difficulty="hard")
    standard = make_phantom(4, SHAPE, "CC", "L", [])
    np.testing.assert_array_equal(hard.pixels, standard.pixels)
    cats = [f.category for s in range(12)
            for f in make_phantom(s, (256, 192), difficulty="hard").findings]
    assert cats and set(cats) <= set(HARD)
    with pytest.raises(ValueError, match="difficulty"):
        make_phantom(0, (256, 192), difficulty="extreme")


def test_hard_plan_has_the_standard_ids_and_only_masses_and_calcifications():
    standard, hard = plan_vindr_dataset(24, seed=3), plan_vindr_dataset(24, seed=3,
                                                                        difficulty="hard")
    for s, h in zip(standard, hard, strict=True):
        assert (s.image_id, s.view, s.split, s.seed) == (h.image_id, h.view, h.split, h.seed)
        assert len(s.categories) == len(h.categories)
        assert set(h.categories) <= set(HARD) and h.difficulty == "hard"
    for split in ("training", "test"):
        assert {c for h in hard if h.split == split for c in h.categories} == set(HARD)


def test_synth_command_writes_a_hard_data_set(tmp_path, capsys):
    assert main(["synth", str(tmp_path), "--n", "4", "--size", "256", "192",
                 "--difficulty", "hard"]) == 0
    with open(tmp_path / "finding_annotations.csv", newline="") as fh:
        cats = [c for row in csv.DictReader(fh)
                for c in ast.literal_eval(row["finding_categories"])]
    assert set(cats) - {"No Finding"} <= set(HARD) and set(cats) & set(HARD)
    assert len(list((tmp_path / "images").rglob("*.dicom"))) == 4
