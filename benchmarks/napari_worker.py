"""How the analysis dock behaves inside napari: event-loop latency and model throughput.

Run by hand under a display (``xvfb-run`` or ``Xvfb :99 & DISPLAY=:99``)::

    python benchmarks/napari_worker.py [--backbone lite] [--stride 32] [--masks 64]

Prints, for one model and a 1024×640 phantom:

1. *cold start*: the worst delay of a 10 ms ``QTimer`` while the dock runs its first
   prediction in a fresh process (torch is imported inside the worker then);
2. windows/s of sliding-window prediction drained in the main thread and inside a
   napari ``create_worker`` thread (torch's default threads there, and the main
   thread's thread count set explicitly in the worker), interleaved, median of repeats;
3. the timer's delays while the dock runs a CorRELAX analysis in its worker and then
   adds the result layers (one per event-loop turn), and the longest single addition.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_MAKE_CHECKPOINT = """
import sys, torch
from napari_correlax.models import save_checkpoint
from napari_correlax.models.classifier import Classifier
torch.manual_seed(0)
save_checkpoint(Classifier(sys.argv[1]).eval(), sys.argv[2])
"""


def timed_run(widget, *, explain: bool) -> dict[str, float]:
    """Run the dock until its last layer is drawn; timer delays and layer timings (ms)."""
    from qtpy.QtCore import QElapsedTimer, QEventLoop, QTimer

    gaps: list[tuple[bool, float]] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    def tick() -> None:
        now = clock.nsecsElapsed()
        gaps.append((widget._worker is not None, (now - last[0]) / 1e6 - 10.0))
        last[0] = now

    add_ms: list[float] = []
    add_next = widget.layer_queue.add_next

    def timed_add() -> None:
        t = time.perf_counter()
        add_next()
        add_ms.append((time.perf_counter() - t) * 1e3)

    widget.layer_queue.timer.timeout.disconnect()
    widget.layer_queue.timer.timeout.connect(timed_add)
    slots: dict[str, float] = {}

    def timed(name: str, method=None):
        method = method or getattr(widget, name)

        def call(*args) -> None:
            t = time.perf_counter()
            method(*args)
            slots[name] = max(slots.get(name, 0.0), (time.perf_counter() - t) * 1e3)

        return call

    for name in ("_on_progress", "_on_returned", "_on_finished"):
        setattr(widget, name, timed(name))
    refresh = widget.progress._timer  # the throttled progress refresh (see _napari._progress)
    refresh.timeout.disconnect()
    refresh.timeout.connect(timed("progress refresh", widget.progress.flush))
    widget.method_combo.setCurrentIndex(
        widget.method_combo.findData("correlax" if explain else "prediction"))
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    done = QTimer()
    done.setInterval(50)
    loop = QEventLoop()
    done.timeout.connect(lambda: None if widget.busy else loop.quit())
    t0 = time.perf_counter()
    widget.run()
    timer.start()
    done.start()
    loop.exec()
    timer.stop()
    widget.layer_queue.timer.timeout.disconnect()
    widget.layer_queue.timer.timeout.connect(add_next)
    refresh.timeout.disconnect()
    refresh.timeout.connect(widget.progress.flush)
    for name in ("_on_progress", "_on_returned", "_on_finished"):
        delattr(widget, name)
    arr = np.asarray([g for _, g in gaps[1:]])
    computing = np.asarray([g for w, g in gaps[1:] if w] or [0.0])
    return {
        "wall_s": time.perf_counter() - t0,
        "ticks": len(arr),
        "median": float(np.median(arr)),
        "p99": float(np.percentile(arr, 99)),
        "worst": float(arr.max()),
        "worst_computing": float(computing.max()),
        "layers": len(add_ms),
        "add_total": float(sum(add_ms)),
        "add_max": float(max(add_ms, default=0.0)),
        "slots": slots,
    }


def describe(stats: dict[str, float]) -> str:
    return (
        f"{stats['wall_s']:.1f} s wall; 10 ms timer: {stats['ticks']} ticks, extra delay "
        f"median {stats['median']:.1f} ms, p99 {stats['p99']:.1f} ms, "
        f"worst {stats['worst']:.0f} ms (while computing {stats['worst_computing']:.0f} ms); "
        f"{stats['layers']} layers added in {stats['add_total']:.0f} ms, "
        f"longest {stats['add_max']:.0f} ms; longest slot calls: "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in stats["slots"].items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lite")
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--masks", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    ckpt = folder / "model.safetensors"
    subprocess.run([sys.executable, "-c", _MAKE_CHECKPOINT, args.backbone, str(ckpt)], check=True)

    import napari

    from napari_correlax._napari._analysis_widget import AnalysisWidget
    from napari_correlax.synth import make_phantom

    phantom = make_phantom(0, shape=(1024, 640), findings=["Mass"])
    viewer = napari.Viewer(show=True)
    layer = viewer.add_image(
        phantom.pixels,
        name="phantom",
        scale=phantom.spacing_mm,
        metadata={"spacing_mm": phantom.spacing_mm},
    )
    widget = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(str(ckpt))
    widget.device_combo.setCurrentText("cpu")
    widget.stride_spin.setValue(args.stride)
    widget.masks_spin.setValue(args.masks)
    widget.adaptive_check.setChecked(False)
    widget.focus_check.setChecked(False)
    widget.image_combo.setCurrentText(layer.name)
    assert "torch" not in sys.modules
    print(
        f"cold first run (prediction, torch imported in the worker): "
        f"{describe(timed_run(widget, explain=False))}"
    )

    import torch
    from napari.qt.threading import create_worker
    from qtpy.QtCore import QEventLoop

    from napari_correlax.maps import drain, predict_steps
    from napari_correlax.maps.settings import MapSettings
    from napari_correlax.models import load_classifier

    model = load_classifier(ckpt, device="cpu")
    main_threads = torch.get_num_threads()

    def rate(result) -> float:
        return result.stats.windows_evaluated / result.stats.seconds["predict"]

    def in_main() -> float:
        settings = MapSettings(method="prediction", stride=args.stride, device="cpu",
                               batch_size=32)
        return rate(drain(predict_steps(phantom, model, settings)))

    seen_threads: list[int] = []

    def in_worker(threads: int | None) -> float:
        out: dict[str, object] = {}

        def steps():
            seen_threads.append(torch.get_num_threads())
            settings = MapSettings(method="prediction", stride=args.stride, device="cpu",
                                   batch_size=32, threads=threads)
            return (yield from predict_steps(phantom, model, settings))

        worker = create_worker(steps)
        worker.returned.connect(lambda r: out.setdefault("result", r))
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        worker.start()
        loop.exec()
        return rate(out["result"])

    runs = {
        "main thread": in_main,
        "worker": lambda: in_worker(None),
        f"worker, threads={main_threads}": lambda: in_worker(main_threads),
    }
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for k in range(args.repeats):
        for name in list(runs) if k % 2 == 0 else list(runs)[::-1]:
            rates[name].append(runs[name]())
    print(
        f"torch {torch.__version__}: {main_threads} intra-op threads in the main thread, "
        f"{sorted(set(seen_threads))} in the worker"
    )
    print(
        "predict windows/s, median of",
        args.repeats,
        "interleaved runs: "
        + ", ".join(
            f"{name} {np.median(v):.1f} (range {min(v):.0f}-{max(v):.0f})"
            for name, v in rates.items()
        ),
    )

    stats = timed_run(widget, explain=True)
    result = widget._analyses["phantom"].result
    print(
        f"CorRELAX in the dock, {result.stats.windows_evaluated} windows x {args.masks} "
        f"masks ({result.stats.masked_passes_per_second:.0f} masked passes/s): "
        f"{describe(stats)}"
    )
    viewer.close()


if __name__ == "__main__":
    main()
