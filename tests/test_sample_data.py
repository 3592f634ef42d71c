"""The shipped ``sample_data/`` folder: a tiny synthetic VinDr-layout data set (method §11)."""

from __future__ import annotations

import ast
import csv
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from napari_correlax.io import read_mammogram
from napari_correlax.io.vindr import load_vindr

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / "sample_data"
CSVS = ("finding_annotations.csv", "breast-level_annotations.csv")


def _rows(name: str) -> list[dict[str, str]]:
    with open(ROOT / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _script():
    """``scripts/make_sample_data.py`` imported as a module."""
    path = REPO / "scripts" / "make_sample_data.py"
    spec = importlib.util.spec_from_file_location("make_sample_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stored(path: Path) -> tuple[np.ndarray, pydicom.Dataset]:
    """Stored values of an uncompressed 16-bit DICOM, decoded with numpy alone."""
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
    values = np.frombuffer(ds.PixelData, "<u2").reshape(int(ds.Rows), int(ds.Columns))
    return values, ds


def test_sample_data_index_matches_its_csv_files():
    breast = _rows("breast-level_annotations.csv")
    findings = _rows("finding_annotations.csv")
    index = load_vindr(ROOT)
    assert index.missing == [] and index.problems == []

    # Images per split, counted from the breast-level table.
    want_split = Counter(r["split"] for r in breast)
    assert set(want_split) == {"training", "test"}
    for split, n in want_split.items():
        got = index.split(split)
        assert len(got) == n
        assert {r.image_id for r in got} == {b["image_id"] for b in breast if b["split"] == split}
    assert len(index.images) == len(breast) == len({b["image_id"] for b in breast})

    for b in breast:
        rec = index.by_id(b["image_id"])
        path = ROOT / "images" / b["study_id"] / f"{b['image_id']}.dicom"
        assert rec.path == path and path.is_file()
        assert (rec.study_id, rec.laterality, rec.view, rec.split) == (
            b["study_id"], b["laterality"], b["view_position"], b["split"])
        assert (rec.height, rec.width) == (int(b["height"]), int(b["width"]))
        assert rec.breast_birads == b["breast_birads"]
        mine = [r for r in findings if r["image_id"] == b["image_id"]]
        cats = [ast.literal_eval(r["finding_categories"]) for r in mine]
        if cats == [["No Finding"]]:
            assert rec.boxes == [] and rec.labels == ["No Finding"]
            continue
        want = Counter((c[0], *(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")),
                        r["finding_birads"]) for r, c in zip(mine, cats))
        got = Counter((x.category, x.xmin, x.ymin, x.xmax, x.ymax, x.birads) for x in rec.boxes)
        assert got == want

    every = [ast.literal_eval(r["finding_categories"])[0] for r in findings]
    assert "Mass" in every and "No Finding" in every
    # Every image file on disk is listed, and nothing else is in the folder.
    on_disk = {p.relative_to(ROOT) for p in ROOT.rglob("*") if p.is_file()}
    listed = {Path("images", b["study_id"], f"{b['image_id']}.dicom") for b in breast}
    assert on_disk == listed | {Path(name) for name in CSVS} | {Path("README.md")}


def test_every_sample_image_reads_as_its_dicom_header_says():
    photometrics = set()
    for b in _rows("breast-level_annotations.csv"):
        path = ROOT / "images" / b["study_id"] / f"{b['image_id']}.dicom"
        values, ds = _stored(path)
        photometrics.add(ds.PhotometricInterpretation)
        assert (ds.ImageLaterality, ds.ViewPosition) == (b["laterality"], b["view_position"])
        assert values.shape == (int(b["height"]), int(b["width"]))
        assert values.max() <= 2**ds.BitsStored - 1

        image = read_mammogram(path)
        assert image.pixels.dtype == np.float32 and image.pixels.shape == values.shape
        assert image.spacing_mm == tuple(float(v) for v in ds.ImagerPixelSpacing)
        # Min-max scaled, MONOCHROME1 inverted so that tissue is bright (docs/method.md §1).
        v = values.astype(np.float64)
        expected = (v - v.min()) / (v.max() - v.min())
        if ds.PhotometricInterpretation == "MONOCHROME1":
            expected = 1.0 - expected
        np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
        # The column farthest from the chest wall is background: dark.
        free = -1 if b["laterality"] == "L" else 0
        assert image.pixels[:, free].mean() < 0.05
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}


def test_regenerating_the_sample_data_gives_the_committed_files(tmp_path):
    script = _script()
    out = tmp_path / "sample_data"
    assert script.main(["--out", str(out)]) == 0
    written = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    committed = {p.relative_to(ROOT) for p in ROOT.rglob("*") if p.is_file()}
    assert written == committed - {Path("README.md")} == script.expected_files()
    for name in CSVS:
        assert (out / name).read_bytes() == (ROOT / name).read_bytes()
    for rel in written:
        if rel.suffix != ".dicom":
            continue
        new, new_ds = _stored(out / rel)
        old, old_ds = _stored(ROOT / rel)
        for key in ("SOPInstanceUID", "StudyInstanceUID", "PhotometricInterpretation",
                    "BitsStored", "ImagerPixelSpacing", "PatientOrientation"):
            assert new_ds[key].value == old_ds[key].value
        # Within one stored step, so that a last-bit difference of another platform's FFT
        # cannot fail the test.
        assert new.shape == old.shape
        assert np.abs(new.astype(np.int32) - old).max() <= 1

    # A file that is not part of the data set is reported, since the copy is then not exact.
    (out / "images" / "stray.dicom").write_bytes(b"")
    assert script.main(["--out", str(out)]) == 1


@pytest.mark.parametrize("name", CSVS)
def test_sample_csvs_have_the_vindr_columns(name):
    with open(ROOT / name, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    common = ["study_id", "series_id", "image_id", "laterality", "view_position", "height",
              "width", "breast_birads", "breast_density"]
    if name == "finding_annotations.csv":
        assert header == [*common, "finding_categories", "finding_birads", "xmin", "ymin",
                          "xmax", "ymax", "split"]
    else:
        assert header == [*common, "split"]
