"""The exam view's hanging protocol, checked on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from napari_correlax.exam import ExamImage, hang, study_images


def _world(tile, row: float, col: float) -> tuple[float, float]:
    y, x, _ = tile.affine @ np.array([row, col, 1.0])
    return float(y), float(x)


def test_four_views_hang_right_breast_left_with_chest_walls_in_the_middle():
    # VinDr storage convention (no Patient Orientation): L has its chest wall at column 0,
    # R at its last column. Tiles are 120 × 80 pixels (the largest height and width).
    images = [
        ExamImage("rcc", "R", "CC", (100, 60)),
        ExamImage("lcc", "L", "CC", (100, 60)),
        ExamImage("rmlo", "R", "MLO", (120, 80)),
        ExamImage("lmlo", "L", "MLO", (120, 70)),
    ]
    exam = hang(images, current="lcc")
    assert exam.units == "pixels" and exam.tile_shape == (120, 80)
    assert [(t.name, t.grid, t.image.image_id) for t in exam.tiles] == [
        ("R-CC", (0, 0), "rcc"), ("L-CC", (0, 1), "lcc"),
        ("R-MLO", (1, 0), "rmlo"), ("L-MLO", (1, 1), "lmlo")]
    assert [t.current for t in exam.tiles] == [False, True, False, False]
    assert not any(t.mirrored or t.flipped for t in exam.tiles)
    rcc, lcc, rmlo, lmlo = exam.tiles
    # R-CC: right-aligned in tile x ∈ [0, 80): its left edge at 80 − 60 = 20, so pixel
    # (0, 0) is centred at (0.5, 20.5) and its chest wall column 59 at x = 79.5.
    assert _world(rcc, 0, 0) == (0.5, 20.5)
    assert _world(rcc, 99, 59) == (99.5, 79.5)
    # L-CC: left-aligned in tile x ∈ [80, 160): chest wall column 0 at x = 80.5.
    assert _world(lcc, 0, 0) == (0.5, 80.5)
    # R-MLO fills its tile, one tile down: pixel (0, 79) at (120.5, 79.5).
    assert _world(rmlo, 0, 79) == (120.5, 79.5)
    assert _world(lmlo, 119, 69) == (239.5, 149.5)


def test_images_facing_the_wrong_way_are_mirrored_and_missing_views_stay_named():
    # Patient Orientation says where increasing column goes: "P" for the left breast
    # means its chest wall is on the right, so it must be mirrored; "A" for the right
    # breast likewise. The MLO views are missing.
    images = [
        ExamImage("lcc", "L", "CC", (10, 4), patient_orientation=("P", "L")),
        ExamImage("rcc", "R", "CC", (10, 4), patient_orientation=("A", "R")),
    ]
    exam = hang(images)
    rcc, lcc = exam.tile("R-CC"), exam.tile("L-CC")
    assert rcc.mirrored and lcc.mirrored
    # Tiles 10 × 4. R-CC mirrored: its chest wall (column 0) goes to the right edge,
    # x = 4 − ½; its nipple side (column 3) to x = ½.
    assert _world(rcc, 0, 0) == (0.5, 3.5)
    assert _world(rcc, 0, 3) == (0.5, 0.5)
    # L-CC mirrored into x ∈ [4, 8): chest wall (column 3) at 4.5, column 0 at 7.5.
    assert _world(lcc, 0, 3) == (0.5, 4.5)
    assert _world(lcc, 0, 0) == (0.5, 7.5)
    for name in ("R-MLO", "L-MLO"):
        tile = exam.tile(name)
        assert tile.empty and tile.name == name
        assert tile.origin == (10.0, 0.0 if name == "R-MLO" else 4.0)


def test_upside_down_image_is_flipped_and_spacing_gives_millimetres():
    # Second Patient Orientation value "H": rows run towards the head, so the image is
    # turned upside down. 0.1 mm pixels: a 20 × 10 image is a 2 × 1 mm tile.
    image = ExamImage("lmlo", "L", "MLO", (20, 10), spacing_mm=(0.1, 0.1),
                      patient_orientation=("A", "HR"))
    exam = hang([image])
    tile = exam.tile("L-MLO")
    assert exam.units == "mm" and exam.tile_shape == (2.0, 1.0)
    assert tile.flipped and not tile.mirrored
    # Row 19 (the bottom row stored) goes to the top of the tile row at y = 2:
    # y = 2 + 0.1·(20 − ½ − 19) = 2.05; column 0 at x = 1 + 0.1·½ = 1.05.
    np.testing.assert_allclose(_world(tile, 19, 0), (2.05, 1.05))
    np.testing.assert_allclose(_world(tile, 0, 9), (3.95, 1.95))


def test_second_image_of_a_view_is_left_out_unless_current():
    images = [ExamImage("a", "R", "CC", (4, 4)), ExamImage("b", "R", "CC", (4, 4))]
    assert hang(images).tile("R-CC").image.image_id == "a"
    exam = hang(images, current="b")
    assert exam.tile("R-CC").image.image_id == "b" and exam.tile("R-CC").current
    assert [im.image_id for im in exam.unplaced] == ["a"]


def test_exam_of_a_study_from_dicom_tags(tmp_path):
    from napari_correlax.synth import make_phantom, write_dicom

    paths = []
    for lat in ("L", "R"):
        for view in ("CC", "MLO"):
            phantom = make_phantom(3, shape=(160, 128), view=view, laterality=lat)
            paths.append(write_dicom(tmp_path / f"{lat}{view}.dcm", phantom,
                                     image_id=f"{lat}{view}"))
    exam = hang([ExamImage.from_dicom(p) for p in paths], current="LCC")
    assert [(t.name, t.image.image_id) for t in exam.tiles] == [
        ("R-CC", "RCC"), ("L-CC", "LCC"), ("R-MLO", "RMLO"), ("L-MLO", "LMLO")]
    # The phantoms' Patient Orientation ("A…" for L, "P…" for R) says they already face
    # the middle; their 0.1 mm spacing makes the world millimetres.
    assert not any(t.mirrored or t.flipped for t in exam.tiles)
    assert exam.units == "mm" and exam.tile_shape == pytest.approx((16.0, 12.8))


def test_not_dicom_is_refused(tmp_path):
    from napari_correlax.errors import CorrelaxError

    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CorrelaxError, match=r"a\.png"):
        ExamImage.from_dicom(path)


def test_study_images_come_from_the_data_set_table(tmp_path):
    from napari_correlax.io.vindr import load_vindr
    from napari_correlax.synth import write_vindr_dataset

    write_vindr_dataset(tmp_path, 8, shape=(160, 128), seed=0)
    index = load_vindr(tmp_path)
    first = index.images[0]
    study = [r for r in index.images if r.study_id == first.study_id]
    exam = hang(study_images(index, first.image_id), current=first.image_id)
    hung = {t.image.image_id: t.name for t in exam.tiles if t.image is not None}
    assert hung == {r.image_id: f"{r.laterality}-{r.view}" for r in study}
    assert exam.tile(f"{first.laterality}-{first.view}").current
