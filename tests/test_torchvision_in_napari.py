"""A torchvision checkpoint runs in the analysis dock of a fresh napari process.

The dock once killed napari with a segmentation fault: ``import torchvision`` imports
``triton``, whose LLVM clashes with the one Mesa's OpenGL has already loaded for the
canvas. The test runs a new interpreter that imports nothing beforehand, so no earlier
import in the test process can hide the crash: viewer first (OpenGL loaded), then the
dock from napari's plugin menu, then an EfficientNetV2-S checkpoint, the product's
default backbone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

pytest.importorskip("napari")

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import napari
    from qtpy.QtWidgets import QApplication

    image_path, checkpoint, out = sys.argv[1:4]
    viewer = napari.Viewer(show=True)
    QApplication.processEvents()  # the canvas exists: OpenGL (and Mesa's LLVM) is loaded
    (image,) = viewer.open(image_path, plugin="napari-correlax")
    _, widget = viewer.window.add_plugin_dock_widget("napari-correlax", "CorRELAX analysis")
    widget.set_checkpoint(checkpoint)
    widget.device_combo.setCurrentText("cpu")
    widget.stride_spin.setValue(256)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("prediction"))
    widget.run()
    deadline = time.monotonic() + 300
    while widget.busy and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(200):  # layers are added one per event-loop turn
        QApplication.processEvents()
    layers = {layer.name: list(getattr(layer.data, "shape", [len(layer.data)]))
              for layer in viewer.layers}
    triton = sys.modules.get("triton", "absent")
    with open(out, "w") as fh:
        json.dump({"busy": widget.busy, "layers": layers,
                   "triton": "blocked" if triton is None else str(triton)}, fh)
    viewer.close()
    """
)


def test_efficientnet_checkpoint_runs_in_the_dock_of_a_fresh_napari(
    tmp_path: Path, phantom_dicom: Path
) -> None:
    import torch

    from napari_correlax.models import save_checkpoint
    from napari_correlax.models.classifier import Classifier

    torch.manual_seed(0)
    model = Classifier("efficientnet_v2_s", ["No Finding", "Mass"]).eval()
    checkpoint = save_checkpoint(model, tmp_path / "effnet.safetensors")
    out = tmp_path / "outcome.json"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(phantom_dicom), str(checkpoint), str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"napari exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    outcome = json.loads(out.read_text())
    assert outcome["busy"] is False
    assert "Mass · pred · study · L CC" in outcome["layers"], outcome["layers"]
    assert outcome["triton"] in ("blocked", "absent")
