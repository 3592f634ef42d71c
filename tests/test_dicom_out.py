"""DICOM out: Parametric Maps and a TID 1500 SR over the source image, checked against an
independent resampling, DICOM's own validator (dciodvfy), DCMTK's dcmdump and a real
Orthanc PACS on the loopback address."""

from __future__ import annotations

import csv
import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest

from napari_correlax.cli import main
from napari_correlax.evaluate.verdicts import COLUMNS, VerdictRow, VerdictStore
from napari_correlax.maps.result import MapResult
from napari_correlax.windows import WindowGrid

LABELS = ["No Finding", "Mass", "Suspicious Calcification"]
PADDING = -1000.0  # the documented value outside the analysed area
needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy (Debian package dicom3tools) is not installed")
needs_dcmdump = pytest.mark.skipif(shutil.which("dcmdump") is None,
                                   reason="dcmdump (Debian package dcmtk) is not installed")
needs_orthanc = pytest.mark.skipif(shutil.which("Orthanc") is None,
                                   reason="Orthanc (Debian package orthanc) is not installed")


def _result(image: Path, window: int = 256, stride: int = 48) -> MapResult:
    """A prediction map on a grid over the image, random values, two empty (NaN) cells."""
    header = pydicom.dcmread(image, stop_before_pixels=True)
    shape = (int(header.Rows), int(header.Columns))
    grid = WindowGrid.covering(shape, (30, 20, shape[0] - 40, shape[1] - 10),
                               window=window, stride=stride)
    rng = np.random.default_rng(7)
    prediction = rng.random((len(LABELS), *grid.shape)).astype(np.float32)
    prediction[1, 0, 0] = np.nan
    prediction[1, -1, 2] = np.nan
    return MapResult(labels=list(LABELS), grid=grid, prediction=prediction,
                     window_mask=np.ones(grid.shape, dtype=bool), spacing_mm=(0.1, 0.1),
                     meta={"sop_instance_uid": str(header.SOPInstanceUID)})


def _expected_on_image(result: MapResult, label: str) -> np.ndarray:
    """The grid map drawn as napari draws it (cell = stride × stride block centred on its
    window centre), built with np.kron and array slicing on a padded canvas."""
    grid = result.grid
    values = result.prediction[result.labels.index(label)].astype(np.float64)
    s = grid.stride
    blocks = np.kron(values, np.ones((s, s)))
    # First pixel of cell 0: the window centre (origin + (window - 1)/2) minus half a
    # stride, rounded up to a whole pixel (pixels exactly half a stride below go up).
    r0 = grid.origin[0] + math.ceil((grid.window - 1) / 2 - s / 2)
    c0 = grid.origin[1] + math.ceil((grid.window - 1) / 2 - s / 2)
    h, w = grid.image_shape
    pad = 4 * grid.window
    canvas = np.full((h + 2 * pad, w + 2 * pad), np.nan)
    canvas[pad + r0: pad + r0 + blocks.shape[0], pad + c0: pad + c0 + blocks.shape[1]] = blocks
    return canvas[pad: pad + h, pad: pad + w]


def _real_world(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Stored float pixels and their real-world values (the mapping read with pydicom)."""
    stored = ds.pixel_array.astype(np.float64)
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    return stored, stored * float(mapping.RealWorldValueSlope) + float(
        mapping.RealWorldValueIntercept)


@pytest.fixture(scope="module")
def written(tmp_path_factory, phantom_dicom) -> dict[str, Path]:
    """A Parametric Map of the Mass prediction and an SR of a verdict CSV of the phantom."""
    from napari_correlax.dicom_out import write_parametric_maps, write_verdict_report

    out = tmp_path_factory.mktemp("dicom-out")
    (pm,) = write_parametric_maps(_result(phantom_dicom), phantom_dicom, out,
                                  kinds=["prediction"], labels=["Mass"])
    verdicts = _verdict_csv(out / "verdicts.csv", image_id=phantom_dicom.stem)
    sr = write_verdict_report(verdicts, phantom_dicom, out)
    return {"pm": pm, "sr": sr}


def _verdict_csv(path: Path, image_id: str) -> Path:
    """Mass judged on the prediction map (two rules), calcification not judged yet, one
    marked false positive, and a row of another image that must stay out."""
    rows = [
        VerdictRow(image_id, "s", "test", "Mass", "prediction>=0.25", 1, "hit", "miss",
                   max_value=0.61, max_row=215.5, max_col=151.5, model="tiny"),
        VerdictRow(image_id, "s", "test", "Mass", "prediction>=0.5", 1, "miss", "miss",
                   max_value=0.61, max_row=215.5, max_col=151.5, model="tiny"),
        VerdictRow(image_id, "s", "test", "Suspicious Calcification", "prediction>=0.25", 1,
                   "miss", "", max_value=0.2, max_row=119.5, max_col=55.5, model="tiny"),
        VerdictRow(image_id, "s", "test", "Mass", "prediction@300,40", 0, "",
                   "false positive", max_value=0.4, max_row=300.0, max_col=40.0),
        VerdictRow("another", "s", "test", "Mass", "prediction>=0.25", 1, "hit", "hit",
                   max_value=0.9, max_row=10.0, max_col=10.0),
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows(row.as_csv() for row in rows)
    assert len(VerdictStore(path).rows()) == len(rows)
    return path


def test_synthetic_dicom_carries_what_derived_objects_refer_to(phantom_dicom):
    ds = pydicom.dcmread(phantom_dicom, stop_before_pixels=True)
    for name in ("FrameOfReferenceUID", "StudyInstanceUID", "SeriesInstanceUID",
                 "SOPInstanceUID", "StudyDate", "PatientOrientation", "ImagerPixelSpacing",
                 "ImageLaterality", "ViewCodeSequence", "AnatomicRegionSequence"):
        assert name in ds, name


@needs_dciodvfy
def test_synthetic_dicom_passes_dciodvfy(phantom_dicom):
    run = subprocess.run(["dciodvfy", str(phantom_dicom)], capture_output=True, text=True,
                         timeout=60)
    assert "Error" not in run.stdout + run.stderr, run.stdout + run.stderr


def test_parametric_map_values_equal_the_map_on_the_image_grid(written, phantom_dicom):
    source = pydicom.dcmread(phantom_dicom, stop_before_pixels=True)
    ds = pydicom.dcmread(written["pm"])
    stored, values = _real_world(ds)
    expected = _expected_on_image(_result(phantom_dicom), "Mass")
    assert values.shape == expected.shape == (source.Rows, source.Columns)
    inside = np.isfinite(expected)
    assert inside.sum() > 0.5 * inside.size and (~inside).sum() > 0
    assert np.max(np.abs(values[inside] - expected[inside])) < 1e-3
    assert float(ds.FloatPixelPaddingValue) == PADDING
    assert np.all(stored[~inside] == PADDING)


@pytest.mark.parametrize(("window", "stride"), [(64, 20), (33, 8)])
def test_map_on_image_matches_blocks_for_other_geometries(phantom_dicom, window, stride):
    from napari_correlax.dicom_out.parametric import map_on_image

    result = _result(phantom_dicom, window, stride)
    got = map_on_image(result, "prediction", "Mass")
    expected = _expected_on_image(result, "Mass")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)])


def test_parametric_map_refers_to_its_source(written, phantom_dicom):
    source = pydicom.dcmread(phantom_dicom, stop_before_pixels=True)
    ds = pydicom.dcmread(written["pm"], stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    referenced = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    frame = ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert frame.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    for name in ("FrameOfReferenceUID", "StudyInstanceUID", "PatientID", "PatientName"):
        assert ds[name].value == source[name].value, name
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [float(v) for v in
                                                         source.ImagerPixelSpacing]
    unit = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert unit.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert ds.ContentDescription == "Mass - prediction"


def _content_groups(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    """Measurement groups (125007, DCM) found by walking the SR tree with pydicom."""
    found, todo = [], list(ds.ContentSequence)
    while todo:
        item = todo.pop()
        if item.ConceptNameCodeSequence[0].CodeValue == "125007":
            found.append(item)
        todo += list(item.get("ContentSequence", []))
    return found


def _by_name(group: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in group.ContentSequence}


def test_sr_holds_one_group_per_finding_label_with_both_verdicts(written, phantom_dicom):
    ds = pydicom.dcmread(written["sr"])
    source = pydicom.dcmread(phantom_dicom, stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.CompletionFlag == "PARTIAL"  # the calcification is not judged yet
    groups = {}
    for group in _content_groups(ds):
        items = _by_name(group)
        finding = items["Finding"].ConceptCodeSequence[0].CodeMeaning
        verdict = items["Reader verdict"].ConceptCodeSequence[0].CodeMeaning
        groups[(finding, verdict == "false positive")] = items
    assert set(groups) == {("Mass", False), ("Suspicious Calcification", False), ("Mass", True)}
    mass = groups[("Mass", False)]
    assert mass["Reader verdict"].ConceptCodeSequence[0].CodeMeaning == "miss"
    assert mass["Automatic verdict (prediction>=0.25)"].ConceptCodeSequence[0].CodeMeaning \
        == "hit"
    assert mass["Automatic verdict (prediction>=0.5)"].ConceptCodeSequence[0].CodeMeaning \
        == "miss"
    assert mass["Measurement Method"].ConceptCodeSequence[0].CodeMeaning == "prediction"
    # DICOM puts (0, 0) at the first pixel's corner, the verdict CSV at its centre.
    assert [float(v) for v in mass["Image Region"].GraphicData] == [152.0, 216.0]
    region_source = mass["Image Region"].ContentSequence[0].ReferencedSOPSequence[0]
    assert region_source.ReferencedSOPInstanceUID == source.SOPInstanceUID
    calcification = groups[("Suspicious Calcification", False)]
    assert calcification["Reader verdict"].ConceptCodeSequence[0].CodeMeaning == "not judged"
    assert calcification["Automatic verdict (prediction>=0.25)"].ConceptCodeSequence[0] \
        .CodeMeaning == "miss"
    mark = groups[("Mass", True)]
    assert [float(v) for v in mark["Image Region"].GraphicData] == [40.5, 300.5]


def test_sr_points_read_back_in_image_pixels(written):
    from napari_correlax.dicom_out.read import read_verdict_points

    points, spacing = read_verdict_points(written["sr"])
    assert spacing == (0.1, 0.1)
    by_label = {(p.label, p.is_mark): p for p in points}
    mass = by_label[("Mass", False)]
    assert (mass.row, mass.col, mass.reader) == (215.5, 151.5, "miss")
    assert mass.automatic == {"prediction>=0.25": "hit", "prediction>=0.5": "miss"}
    assert (by_label[("Mass", True)].row, by_label[("Mass", True)].col) == (300.0, 40.0)


@needs_dciodvfy
@pytest.mark.parametrize("name", ["pm", "sr"])
def test_dciodvfy_reports_no_error(written, name):
    run = subprocess.run(["dciodvfy", str(written[name])], capture_output=True, text=True,
                         timeout=60)
    report = run.stdout + run.stderr
    assert "Error" not in report, report
    assert ("ParametricMap" if name == "pm" else "ComprehensiveSR") in report


@needs_dcmdump
@pytest.mark.parametrize(("name", "sop_class"), [("pm", "ParametricMapStorage"),
                                                 ("sr", "ComprehensiveSRStorage")])
def test_dcmdump_reads_them(written, name, sop_class):
    run = subprocess.run(["dcmdump", str(written[name])], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert sop_class in run.stdout


def test_napari_reader_puts_the_map_on_the_image_grid(written, phantom_dicom):
    from napari_correlax._napari._reader import napari_get_reader

    (image,) = napari_get_reader(str(phantom_dicom))(str(phantom_dicom))
    (layer,) = napari_get_reader(str(written["pm"]))(str(written["pm"]))
    data, kwargs, kind = layer
    assert kind == "image" and data.shape == image[0].shape
    assert tuple(kwargs["scale"]) == tuple(image[1]["scale"])
    expected = _expected_on_image(_result(phantom_dicom), "Mass")
    np.testing.assert_array_equal(np.isnan(data), np.isnan(expected))
    assert np.max(np.abs(data[np.isfinite(data)] - expected[np.isfinite(expected)])) < 1e-3
    (points,) = napari_get_reader(str(written["sr"]))(str(written["sr"]))
    coords, kwargs, kind = points
    assert kind == "points" and tuple(kwargs["scale"]) == tuple(image[1]["scale"])
    assert sorted(map(tuple, coords.tolist())) == sorted(
        [(215.5, 151.5), (119.5, 55.5), (300.0, 40.0)])


def test_png_source_is_refused_in_one_line(tmp_path, phantom_dicom, small_phantom, capsys):
    import cv2

    png = tmp_path / "phantom.png"
    cv2.imwrite(str(png), (small_phantom.pixels * 255).astype(np.uint8))
    npz = _result(phantom_dicom).save(tmp_path / "result.npz")
    out = tmp_path / "out"
    assert main(["dicom", str(npz), "--image", str(png), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "PNG" in err and "not DICOM" in err and "phantom.png" in err
    assert not out.exists()


def test_result_of_another_image_is_refused(tmp_path, phantom_dicom, capsys):
    result = _result(phantom_dicom)
    result.meta["sop_instance_uid"] = "1.2.3.4"
    npz = result.save(tmp_path / "result.npz")
    out = tmp_path / "out"
    assert main(["dicom", str(npz), "--image", str(phantom_dicom), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1.2.3.4" in err and "phantom.dcm" in err
    assert not out.exists()


def test_verdicts_of_an_image_not_in_the_csv_are_refused(tmp_path, phantom_dicom, capsys):
    verdicts = _verdict_csv(tmp_path / "verdicts.csv", image_id="someone-else")
    assert main(["dicom", "--verdicts", str(verdicts), "--image", str(phantom_dicom),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no verdicts for image 'phantom'" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_send_to_a_closed_port_fails_in_one_line_and_keeps_the_files(
        tmp_path, phantom_dicom, capsys):
    npz = _result(phantom_dicom).save(tmp_path / "result.npz")
    out = tmp_path / "out"
    status = main(["dicom", str(npz), "--image", str(phantom_dicom), "--out", str(out),
                   "--labels", "Mass", "--send", f"127.0.0.1:{_free_port()}", "--aet", "PACS"])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not be reached" in err
    assert sorted(p.name for p in out.iterdir()) == ["phantom-prediction-mass.dcm"]


# -- a real Orthanc on the loopback address -----------------------------------------------
def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture
def orthanc(tmp_path):
    """Orthanc with a temporary storage, HTTP and DICOM on free ports; killed afterwards.

    Orthanc 1.10 (Debian's) has no option to listen on one address only, so it is kept to
    the loopback by what it accepts: HTTP requests from the local host only
    (RemoteAccessAllowed false), DICOM stores only from AET CORRELAX at 127.0.0.1
    (DicomCheckModalityHost)."""
    http, dicom = _free_port(), _free_port()
    config = {
        "Name": "correlax-test", "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "storage"), "HttpPort": http, "DicomPort": dicom,
        "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowEcho": False, "DicomCheckModalityHost": True,
        "DicomModalities": {"correlax": ["CORRELAX", "127.0.0.1", 104]},
        "Plugins": [], "SaveJobs": False, "HttpsVerifyPeers": False,
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "wb")
    process = subprocess.Popen(["Orthanc", str(tmp_path / "orthanc.json")], stdout=log,
                               stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{http}"
    try:
        for _ in range(150):  # up to ~30 s
            if process.poll() is not None:
                pytest.fail("Orthanc exited: " + (tmp_path / "orthanc.log").read_text())
            try:
                _get(f"{base}/system")
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("Orthanc did not answer within 30 s")
        yield {"http": base, "dicom": dicom}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


@needs_orthanc
def test_orthanc_round_trip_returns_map_and_sr_unchanged(tmp_path, phantom_dicom, orthanc,
                                                          capsys):
    npz = _result(phantom_dicom).save(tmp_path / "result.npz")
    verdicts = _verdict_csv(tmp_path / "verdicts.csv", image_id=phantom_dicom.stem)
    out = tmp_path / "out"
    status = main(["dicom", str(npz), "--image", str(phantom_dicom), "--out", str(out),
                   "--maps", "prediction", "--labels", "Mass", "--verdicts", str(verdicts),
                   "--send", f"127.0.0.1:{orthanc['dicom']}", "--aet", "ORTHANC"])
    printed = capsys.readouterr().out
    assert status == 0
    local = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, sorted(out.iterdir()))}
    assert len(local) == 2
    assert sorted(line.split()[3] for line in printed.splitlines()
                  if line.startswith("stored")) == sorted(local)
    ids = json.loads(_get(f"{orthanc['http']}/instances"))
    remote = {}
    for instance in ids:
        data = _get(f"{orthanc['http']}/instances/{instance}/file")
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
        remote[str(ds.SOPInstanceUID)] = ds
    assert set(remote) == set(local)
    for uid, mine in local.items():
        theirs = remote[uid]
        if "FloatPixelData" in mine:
            assert theirs.FloatPixelData == mine.FloatPixelData
        else:
            assert theirs.ContentSequence == mine.ContentSequence
            assert len(_content_groups(theirs)) == 3


@needs_orthanc
def test_orthanc_refusing_a_stranger_is_one_line(tmp_path, phantom_dicom, orthanc, capsys):
    npz = _result(phantom_dicom).save(tmp_path / "result.npz")
    out = tmp_path / "out"
    status = main(["dicom", str(npz), "--image", str(phantom_dicom), "--out", str(out),
                   "--labels", "Mass", "--send", f"127.0.0.1:{orthanc['dicom']}",
                   "--aet", "ORTHANC", "--calling-aet", "STRANGER"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    # Orthanc answers an unknown calling AE title with an A-ABORT, not a rejection.
    assert "ORTHANC@127.0.0.1" in err and "STRANGER" in err
    assert "rejected the association" in err or "aborted the association" in err
    assert (out / "phantom-prediction-mass.dcm").is_file()


def test_dicom_out_loads_highdicom_and_pynetdicom_only_when_used():
    code = ("import sys, napari_correlax.dicom_out, napari_correlax.cli.dicom, "
            "napari_correlax.dicom_out.read, napari_correlax.dicom_out.send; "
            "bad = [m for m in ('highdicom', 'pynetdicom') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.gui
def test_map_and_sr_open_over_their_image(make_napari_viewer, tmp_path, phantom_dicom):
    npz = _result(phantom_dicom).save(tmp_path / "result.npz")
    verdicts = _verdict_csv(tmp_path / "verdicts.csv", image_id=phantom_dicom.stem)
    out = tmp_path / "out"
    assert main(["dicom", str(npz), "--image", str(phantom_dicom), "--out", str(out),
                 "--labels", "Mass", "--verdicts", str(verdicts)]) == 0
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    (mass,) = viewer.open(str(out / "phantom-prediction-mass.dcm"), plugin="napari-correlax")
    (points,) = viewer.open(str(out / "phantom-verdicts.dcm"), plugin="napari-correlax")
    np.testing.assert_allclose(mass.scale, image.scale)
    np.testing.assert_allclose(mass.translate, image.translate)
    assert mass.data.shape == image.data.shape
    expected = _expected_on_image(_result(phantom_dicom), "Mass")
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(mass.data), finite)
    assert np.max(np.abs(mass.data[finite] - expected[finite])) < 1e-3
    # The Mass peak (row 215.5, col 151.5) lands on the same world point in both layers.
    spacing = [float(v) for v in pydicom.dcmread(phantom_dicom).ImagerPixelSpacing]
    world = np.asarray(points.data_to_world([215.5, 151.5]))
    np.testing.assert_allclose(world, [215.5 * spacing[0], 151.5 * spacing[1]])
    np.testing.assert_allclose(image.world_to_data(world), [215.5, 151.5])
    assert sorted(points.features["label"]) == ["Mass", "Mass", "Suspicious Calcification"]


def _every_kind(image: Path) -> MapResult:
    """The Mass prediction result plus a map of every other kind ``explain`` and the CAM
    methods write: small correlation half-widths, counts, pixel maps with NaN."""
    result = _result(image)
    rng = np.random.default_rng(3)
    c, gy, gx = result.prediction.shape
    h, w = result.image_shape
    result.correlation = rng.uniform(-1, 1, (c, gy, gx)).astype(np.float32)
    result.product = result.prediction * result.correlation
    result.distance = rng.uniform(-1, 1, (gy, gx)).astype(np.float32)
    result.masks_used = rng.integers(128, 2560, (gy, gx)).astype(np.float32)
    result.relevance = rng.uniform(0.9, 1.0, (h, w)).astype(np.float32)
    saliency = rng.uniform(0, 5, (c, h, w)).astype(np.float32)
    saliency[:, :20] = np.nan
    result.extra = {"correlation_ci": rng.uniform(0.01, 0.2, (c, gy, gx)).astype(np.float32),
                    "saliency": saliency}
    return result


@needs_dciodvfy
def test_every_map_kind_passes_dciodvfy(tmp_path, phantom_dicom):
    from napari_correlax.dicom_out import write_parametric_maps

    result = _every_kind(phantom_dicom)
    paths = write_parametric_maps(result, phantom_dicom, tmp_path, labels=["Mass"])
    assert len(paths) == 8  # 6 per-label kinds for Mass, distance, masks_used, relevance
    for path in paths:
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                             timeout=60)
        assert "Error" not in run.stdout + run.stderr, (path.name, run.stdout + run.stderr)


def test_pixel_maps_are_written_as_they_are(tmp_path, phantom_dicom):
    from napari_correlax.dicom_out import write_parametric_maps

    result = _every_kind(phantom_dicom)
    (path,) = write_parametric_maps(result, phantom_dicom, tmp_path, kinds=["saliency"],
                                    labels=["Mass"])
    stored, values = _real_world(pydicom.dcmread(path))
    expected = result.extra["saliency"][result.labels.index("Mass")]
    finite = np.isfinite(expected)
    assert np.max(np.abs(values[finite] - expected[finite])) < 1e-6
    assert np.all(stored[~finite] == PADDING)
    unit = pydicom.dcmread(path).SharedFunctionalGroupsSequence[0] \
        .RealWorldValueMappingSequence[0].MeasurementUnitsCodeSequence[0]
    assert unit.CodeValue == "[arb'U]"
