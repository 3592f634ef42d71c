"""VinDr-Mammo data set index (docs/method.md §3, §11)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from napari_correlax.errors import CorrelaxError
from napari_correlax.io.vindr import REQUIRED_COLUMNS, load_vindr
from napari_correlax.synth import plan_vindr_dataset, write_vindr_dataset

TINY = (256, 192)
HEADER = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
          "breast_birads", "breast_density", "finding_categories", "finding_birads", "xmin",
          "ymin", "xmax", "ymax", "split"]


def _row(image="i1", study="s1", cats="['Mass']", box=("10.5", "20", "110", "220.25"),
         split="training", lat="L", view="CC", birads="BI-RADS 4"):
    return [study, "e1", image, lat, view, "3518", "2800", "BI-RADS 4", "DENSITY C", cats,
            birads, *box, split]


def _write(root: Path, rows, header=HEADER, name="finding_annotations.csv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("vindr")
    write_vindr_dataset(root, 8, seed=11, shape=TINY)
    return root, plan_vindr_dataset(8, seed=11)


def test_generated_dataset_gives_back_exactly_the_written_boxes(dataset):
    root, plan = dataset
    index = load_vindr(root)
    assert index.missing == [] and index.problems == []
    assert [r.image_id for r in index.images] == [p.image_id for p in plan]
    for p in plan:
        rec = index.by_id(p.image_id)
        assert (rec.study_id, rec.laterality, rec.view, rec.split) == (
            p.study_id, p.laterality, p.view, p.split)
        assert (rec.height, rec.width) == TINY
        assert rec.path == root / "images" / p.study_id / f"{p.image_id}.dicom"
        phantom = p.phantom(TINY)
        got = Counter((b.category, b.label, b.xmin, b.ymin, b.xmax, b.ymax, b.birads)
                      for b in rec.boxes)
        want = Counter((f.category, f.label, *map(float, f.box), f.birads)
                       for f in phantom.findings)
        assert got == want
        assert rec.labels == phantom.labels
        expected_birads = max((f.birads for f in phantom.findings), default="BI-RADS 1")
        assert rec.breast_birads == expected_birads
    assert len(index.split("train")) + len(index.split("test")) == 8
    assert index.split("training") == index.split("train")


def test_missing_image_files_are_listed(tmp_path, dataset):
    src, plan = dataset
    root = tmp_path / "copy"
    for f in src.rglob("*"):
        if f.is_file():
            (root / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (root / f.relative_to(src)).write_bytes(f.read_bytes())
    gone = root / "images" / plan[2].study_id / f"{plan[2].image_id}.dicom"
    gone.unlink()
    index = load_vindr(root)
    assert index.missing == [gone]
    assert len(index.images) == 8  # still indexed
    assert load_vindr(root, check_files=False).missing == []


def test_missing_csv_raises_naming_the_file(tmp_path):
    with pytest.raises(CorrelaxError, match=r"finding_annotations\.csv") as err:
        load_vindr(tmp_path)
    assert err.value.path.endswith("finding_annotations.csv")


@pytest.mark.parametrize("column", ["xmin", "finding_categories", "split", "image_id"])
def test_missing_column_raises_naming_file_and_column(tmp_path, column):
    header = [c for c in HEADER if c != column]
    rows = [[v for c, v in zip(HEADER, _row()) if c != column]]
    _write(tmp_path, rows, header)
    with pytest.raises(CorrelaxError, match=f"'{column}'") as err:
        load_vindr(tmp_path)
    assert "finding_annotations.csv" in str(err.value)


def test_empty_csv_raises(tmp_path):
    (tmp_path / "finding_annotations.csv").write_text("")
    with pytest.raises(CorrelaxError, match="empty"):
        load_vindr(tmp_path)


def test_header_only_gives_an_empty_index(tmp_path):
    _write(tmp_path, [])
    index = load_vindr(tmp_path)
    assert index.images == [] and index.missing == []


def test_rows_are_merged_grouped_and_multi_category_boxes_split(tmp_path):
    rows = [
        _row("i1", cats="['Mass', 'Suspicious Calcification']"),
        _row("i1", cats="['Focal Asymmetry']", box=("1", "2", "3", "4"), birads="BI-RADS 3"),
        _row("i1", cats="['Skin Retraction']", box=("5", "6", "70", "80")),
        _row("i2", cats="['No Finding']", box=("", "", "", ""), birads="", view="MLO"),
    ]
    index = load_vindr(_write(tmp_path, rows), check_files=False)
    assert [r.image_id for r in index.images] == ["i1", "i2"]
    i1 = index.by_id("i1")
    assert [(b.category, b.label) for b in i1.boxes] == [
        ("Mass", "Mass"), ("Suspicious Calcification", "Suspicious Calcification"),
        ("Focal Asymmetry", "Asymmetries"), ("Skin Retraction", "Retractions")]
    assert (i1.boxes[0].xmin, i1.boxes[0].ymin, i1.boxes[0].xmax, i1.boxes[0].ymax) == (
        10.5, 20.0, 110.0, 220.25)
    assert i1.boxes[1].xmin == 10.5 and i1.boxes[2].birads == "BI-RADS 3"
    assert i1.labels == ["Mass", "Suspicious Calcification", "Asymmetries", "Retractions"]
    i2 = index.by_id("i2")
    assert i2.boxes == [] and i2.labels == ["No Finding"] and i2.view == "MLO"
    assert (i2.height, i2.width, i2.breast_birads) == (3518, 2800, "BI-RADS 4")
    assert index.problems == []


def test_bad_rows_become_problems_not_crashes(tmp_path):
    rows = [
        _row("i1", cats="['Mass'"),  # malformed literal
        _row("i2", cats="['Other', 'Mass']"),  # unknown category, kept Mass
        _row("i3", cats="['Mass']", box=("", "", "", "")),  # finding without a box
        _row("i4", cats="['Mass']", box=("1", "x", "3", "4")),
        _row("i5", cats="['Mass']", box=("9", "9", "3", "4")),  # inverted
        _row("i6", cats="__import__('os')"),
        _row("i7", split="dev"),
    ]
    index = load_vindr(_write(tmp_path, rows), check_files=False)
    assert [r.image_id for r in index.images] == [f"i{k}" for k in range(1, 8)]
    assert [len(r.boxes) for r in index.images] == [0, 1, 0, 0, 0, 0, 1]
    text = "\n".join(index.problems)
    assert "line 2" in text and "not a list literal" in text
    assert "'Other'" in text
    assert "line 4" in text and "no box" in text
    assert "line 5" in text and "line 6" in text and "line 7" in text
    assert "'dev'" in text
    assert index.by_id("i7").split == "dev"


def test_split_spellings_and_lookup(tmp_path):
    rows = [_row("a", split="train"), _row("b", split="Training"), _row("c", split="test")]
    index = load_vindr(_write(tmp_path, rows), check_files=False)
    assert [r.image_id for r in index.split("training")] == ["a", "b"]
    assert [r.image_id for r in index.split("train")] == ["a", "b"]
    assert [r.image_id for r in index.split("test")] == ["c"]
    with pytest.raises(CorrelaxError, match="'zzz'"):
        index.by_id("zzz")


def test_image_file_lookup_accepts_converted_copies(tmp_path):
    _write(tmp_path, [_row("a", study="s"), _row("b", study="s"), _row("c", study="t")])
    (tmp_path / "images" / "s").mkdir(parents=True)
    (tmp_path / "images" / "s" / "a.dicom").write_bytes(b"x")
    (tmp_path / "images" / "s" / "b.png").write_bytes(b"x")
    index = load_vindr(tmp_path)
    assert index.by_id("a").path.name == "a.dicom"
    assert index.by_id("b").path.name == "b.png"
    assert index.missing == [tmp_path / "images" / "t" / "c.dicom"]


def test_breast_level_table_fills_birads_and_csv_path_is_accepted(tmp_path):
    row = _row("a")
    header = [c for c in HEADER if c != "breast_birads"]
    _write(tmp_path, [[v for c, v in zip(HEADER, row) if c != "breast_birads"]], header)
    _write(tmp_path, [["s1", "e1", "a", "L", "CC", "1", "1", "BI-RADS 5", "DENSITY C",
                       "training"],
                      ["s1", "e1", "zz", "L", "CC", "1", "1", "BI-RADS 1", "DENSITY C",
                       "training"]],
           ["study_id", "series_id", "image_id", "laterality", "view_position", "height",
            "width", "breast_birads", "breast_density", "split"],
           name="breast-level_annotations.csv")
    index = load_vindr(tmp_path / "finding_annotations.csv", check_files=False)
    assert index.root == tmp_path
    assert index.by_id("a").breast_birads == "BI-RADS 5"
    assert [r.image_id for r in index.images] == ["a"]
    assert any("not in finding_annotations.csv" in p for p in index.problems)


def test_bom_and_whitespace_in_header_are_tolerated(tmp_path):
    path = tmp_path / "finding_annotations.csv"
    text = ",".join(f" {h} " for h in HEADER) + "\n" + ",".join(
        f'"{v}"' for v in _row("a")) + "\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    index = load_vindr(tmp_path, check_files=False)
    assert index.by_id("a").boxes[0].category == "Mass"


def test_many_rows_are_indexed(tmp_path):
    cats = ["['Mass']", "['Suspicious Calcification']", "['Global Asymmetry']",
            "['Nipple Retraction']"]
    rows = [_row(f"img{i // 4}", study=f"st{i // 16}", cats=cats[i % 4],
                 box=(str(i), "1", str(i + 5), "9"), split=("training", "test")[i // 4 % 2])
            for i in range(5000)]
    index = load_vindr(_write(tmp_path, rows), check_files=False)
    assert len(index.images) == 1250
    assert sum(len(r.boxes) for r in index.images) == 5000
    assert index.by_id("img17").labels == ["Mass", "Suspicious Calcification", "Asymmetries",
                                           "Retractions"]
    assert index.by_id("img17").boxes[2].xmin == 70.0
    assert len(index.split("test")) == 625


def test_required_columns_are_a_subset_of_the_vindr_header():
    assert set(REQUIRED_COLUMNS) <= set(HEADER)


def test_two_categories_of_one_group_in_a_row_are_one_finding(tmp_path):
    rows = [
        _row("i1", cats="['Nipple Retraction', 'Skin Retraction']"),
        _row("i2", cats="['Skin Retraction', 'Mass', 'Focal Asymmetry', 'Global Asymmetry']",
             box=("5", "6", "70", "80")),
        _row("i3", cats="['Skin Retraction']", box=("1", "2", "30", "40")),
        _row("i3", cats="['Nipple Retraction']", box=("1", "2", "30", "40")),
    ]
    index = load_vindr(_write(tmp_path, rows), check_files=False)
    assert [(b.label, b.category) for b in index.by_id("i1").boxes] == [
        ("Retractions", "Nipple Retraction; Skin Retraction")]
    i2 = index.by_id("i2").boxes
    assert [(b.label, b.category) for b in i2] == [
        ("Retractions", "Skin Retraction"), ("Mass", "Mass"),
        ("Asymmetries", "Focal Asymmetry; Global Asymmetry")]
    assert {b.corners for b in i2} == {(5.0, 6.0, 70.0, 80.0)}
    # Two rows are two findings, even with the same box (the data set's annotators
    # drew them separately).
    assert [b.category for b in index.by_id("i3").boxes] == [
        "Skin Retraction", "Nipple Retraction"]
    assert index.problems == []
