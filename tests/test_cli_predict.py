"""`correlax predict` and `correlax synth` end to end (docs/method.md §12)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_correlax.cli import main
from napari_correlax.maps import load_result
from napari_correlax.models import save_checkpoint
from napari_correlax.models.classifier import Classifier


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(Classifier("tiny", input_size=64).eval(), path)


def test_synth_then_predict_writes_npz_png_json(tmp_path, tiny_ckpt, capsys):
    data = tmp_path / "data"
    assert main(["synth", str(data), "--n", "2", "--size", "384", "256", "--seed", "3"]) == 0
    images = sorted(data.glob("images/*/*.dicom"))
    assert len(images) == 2
    out = tmp_path / "out"
    argv = ["predict", *map(str, images), "--model", str(tiny_ckpt), "--out", str(out),
            "--stride", "32", "--device", "cpu"]
    assert main(argv) == 0
    for img in images:
        result = load_result(out / f"{img.stem}.npz")
        assert result.prediction.shape[0] == 8 and result.window == 64 and result.stride == 32
        assert result.spacing_mm is not None
        doc = json.loads((out / f"{img.stem}.json").read_text())
        peak = doc["prediction_peaks"]["Mass"]
        i, j = np.unravel_index(
            np.argmax(np.where(result.window_mask, result.prediction[1], -np.inf)),
            result.grid.shape,
        )
        assert peak["row"] == pytest.approx(result.origin[0] + i * 32 + 31.5)
        assert peak["col"] == pytest.approx(result.origin[1] + j * 32 + 31.5)
        assert (out / f"{img.stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, tiny_ckpt):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM" * 10)
    proc = subprocess.run(
        [sys.executable, "-m", "napari_correlax.cli", "predict", str(bad), "--model",
         str(tiny_ckpt), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "broken.dcm" in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    code = main(["predict", __file__, "--model", str(tmp_path / "none.safetensors"),
                 "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.safetensors" in err[0]


@pytest.mark.parametrize("command", ["predict", "synth"])
def test_help_works(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert command in capsys.readouterr().out


@pytest.mark.parametrize("command", ["predict", "explain"])
@pytest.mark.parametrize("stride", ["100000", "512", "0"])
def test_bad_stride_is_one_line_and_status_2(tmp_path, tiny_ckpt, phantom_dicom, capsys,
                                             command, stride):
    """Larger than the image (it once tried to allocate 80 GB), equal to the image side
    (it gave "0 windows" and a nonsense peak), larger than the window, or 0."""
    argv = [command, str(phantom_dicom), "--model", str(tiny_ckpt), "--out", str(tmp_path),
            "--stride", stride, "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stride" in err[0] and "Traceback" not in err[0], err
    assert not list(tmp_path.glob("*.npz"))


def test_text_file_named_dcm_is_not_a_dicom_file(tmp_path, tiny_ckpt, capsys):
    fake = tmp_path / "notes.dcm"
    fake.write_text("patient notes, not an image\n")
    assert main(["predict", str(fake), "--model", str(tiny_ckpt), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a DICOM file" in err[0] and str(fake) in err[0]


def test_result_file_with_python_objects_is_refused_without_numpy_advice(tmp_path):
    from napari_correlax.errors import CorrelaxError

    path = tmp_path / "objects.npz"
    np.savez(path, prediction=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CorrelaxError) as info:
        load_result(path)
    assert "allow_pickle" not in str(info.value) and "Python objects" in str(info.value)
