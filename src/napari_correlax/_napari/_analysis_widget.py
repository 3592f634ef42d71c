"""The "CorRELAX analysis" dock: gather parameters, run in a worker, draw the maps.

The computation is the core's progress generator (:func:`analysis_steps` wraps
``predict_steps`` / ``explain_steps``) driven by a napari ``create_worker``: the event
loop never waits on the model, the dock's own progress bar shows the stage and its
count done / total (twice a second at most: repaints cost the model CPU time, see
:mod:`._progress`), and Cancel asks the worker to stop at the next yield (between
batches). CorRELAX runs coarse to fine (:mod:`napari_correlax.maps.coarse`): its first
map, at 4 × the stride with the mask floor, is drawn as soon as it is made, and the final
map replaces it in the same layers when the run ends (the progress line says
"refining"). Otherwise layers are only added when the worker returns; a cancelled or
failed run leaves nothing behind (a coarse map drawn before is taken down again, and
the image's earlier maps come back). Layers are added one per event-loop turn, since
napari takes a good fraction of a second to set up each new layer.
Errors caused by user input (a broken checkpoint, an image that is not 2-D grey)
become an error notification without a traceback.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QWidget,
)

from ..errors import CorrelaxError, JobFailure
from ..labels import LABELS
from ..maps.coarse import MapPreview
from ..maps.kinds import kind as map_kind
from ..maps.runtime import Progress
from ..maps.settings import MapSettings
from . import _layers
from ._analysis_form import build_dock
from ._analysis_jobs import (
    AnalysisRequest,
    analysis_steps,
    checkpoint_summary,
    image_layer_for,
    image_pixels,
    model_badge,
)
from ._closing import stop_worker, when_window_closes
from ._forms import ask_path
from ._gmic_layers import crops_layer, outputs_text, patches_layer
from ._layer_queue import LayerQueue

log = logging.getLogger(__name__)



@dataclass
class _Analysis:
    """Every method's result on one image (by method, in the order they were run), the
    image's pixels and its ground-truth boxes."""

    results: dict[str, Any]
    pixels: np.ndarray
    boxes: list[Any] = field(default_factory=list)
    _breast: np.ndarray | None = None

    @classmethod
    def of(cls, result: Any, pixels: np.ndarray, boxes: list[Any] | None = None) -> _Analysis:
        """An analysis holding one result."""
        return cls({_method_of(result): result}, pixels, list(boxes or []))

    @property
    def result(self) -> Any:
        """The result of the method run last."""
        return list(self.results.values())[-1]

    def holds(self, pixels: np.ndarray) -> bool:
        """Whether this analysis is of these pixels (the same image)."""
        return self.pixels.shape == pixels.shape and np.array_equal(self.pixels, pixels)

    def add(self, result: Any) -> None:
        """Keep ``result`` beside the other methods' (replacing the same method's)."""
        method = _method_of(result)
        self.results.pop(method, None)
        self.results[method] = result

    @property
    def breast(self) -> np.ndarray | None:
        """The breast outline of the image (maps are transparent outside it)."""
        if self._breast is None and self.pixels.any():
            from ..preprocess import breast_roi

            mask = breast_roi(self.pixels).mask
            self._breast = mask if mask.any() else None
        return self._breast


def _method_of(result: Any) -> str:
    return str(getattr(result.stats, "method", "") or "maps")


class AnalysisWidget(QWidget):
    """Dock widget "CorRELAX analysis" (see module docstring)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker: Any = None
        self._request_sent: AnalysisRequest | None = None
        self._analyses: dict[str, _Analysis] = {}
        self.layer_queue = LayerQueue(self.viewer, self, self._layers_added)
        self._shown: list[str] = []
        self._order: list[str] = []  # layers of the last draw, bottom to top
        self._cancel_reason = ""
        #: (image name, method) of a coarse map on screen that no final result replaced yet
        self._preview_of: tuple[str, str] | None = None
        #: seconds per evaluated window and window side of the last run, per model+settings
        self._rates: dict[str, tuple[float, int]] = {}
        self._build()
        self.viewer.layers.selection.events.active.connect(self._active_changed)
        self._set_labels(list(LABELS))
        self._model_changed()
        self._image_changed()
        when_window_closes(napari_viewer, self, self._close_down)

    def _close_down(self) -> None:
        """Before the window closes: stop and await the worker (:mod:`._closing`)."""
        stop_worker(self._worker)
        self._worker = None
        self.layer_queue.timer.stop()

    # -- construction ------------------------------------------------------------------
    def _build(self) -> None:
        build_dock(self)

    def _set_labels(self, labels: list[str]) -> None:
        self.labels_list.set_labels(labels, self.chosen_labels() or None)

    # -- public ------------------------------------------------------------------------
    def set_checkpoint(self, path: str) -> None:
        """Use the classifier checkpoint at ``path`` (empty: the demo model)."""
        self.model_edit.setText(str(path) if path else "")
        self._model_changed()

    def chosen_labels(self) -> list[str]:
        """Labels whose maps are shown, in model order."""
        return self.labels_list.checked()

    @property
    def busy(self) -> bool:
        """True while a worker computes or result layers are still being added."""
        return self._worker is not None or self.layer_queue.pending

    def run(self) -> None:
        """Start an analysis of the chosen image layer with the dock's settings."""
        if self.busy:
            return
        try:
            request = self._request()
        except CorrelaxError as exc:
            show_error(str(exc))
            return
        from napari.qt.threading import create_worker

        worker = create_worker(analysis_steps, request, _start_thread=False)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._request_sent = request
        self.progress.reset("starting…")
        self.run_button.setText("Cancel")
        units = " (pixel units: no pixel spacing)" if request.spacing_mm is None else ""
        self.status.setText(f"Running on {request.image_name!r}{units}…"
                            + self._estimate(request))
        worker.start()

    def _rate_key(self, request: AnalysisRequest) -> str:
        return repr((request.checkpoint, request.settings.device,
                     sorted(request.settings.map_fields().items())))

    def _estimate(self, request: AnalysisRequest) -> str:
        """" about 3 min left" from the last run's seconds per window with this model and
        these settings, times this image's tissue windows ("" before any such run)."""
        from ..maps.runtime import format_time_left
        from ..maps.sliding import window_layout

        known = self._rates.get(self._rate_key(request))
        if known is None:
            return ""
        per_window, window = known
        s = request.settings
        *_, active = window_layout(request.pixels, window, s.stride, s.reach, s.min_tissue)
        return f" {format_time_left(per_window * int(active.sum()))} (at the last run's rate)"

    def cancel(self) -> None:
        """Ask the running worker to stop at its next yield (between batches)."""
        if self._worker is not None:
            self._worker.quit()
            self.run_button.setEnabled(False)
            self.run_button.setText("Cancelling…")

    def save_results(self, stem: str | Path) -> list[Path]:
        """Write every method's analysis of the chosen image: ``.npz``, ``-windows.csv``
        and ``.png`` each, under ``<stem>-<method>`` when several methods were run on it
        (CorRELAX, then Grad-CAM: both kept), else under ``<stem>``."""
        from ..export import export_analysis

        analysis = self._analyses.get(self.image_combo.currentText())
        if analysis is None:
            raise CorrelaxError("no analysis of this image to save yet: run it or open one first")
        stem = Path(stem)
        if stem.suffix.lower() in (".npz", ".csv", ".png"):
            stem = stem.with_suffix("")
        several = len(analysis.results) > 1
        written: list[Path] = []
        for method, result in analysis.results.items():
            target = stem.with_name(f"{stem.name}-{method}") if several else stem
            written += export_analysis(result, target, pixels=analysis.pixels,
                                       labels=self.chosen_labels() or None, boxes=analysis.boxes,
                                       **self._figure_heading(result))
        return written

    def save_dicom(self, folder: str | Path) -> list[Path]:
        """Write every map of the chosen image's analysis as a DICOM Parametric Map over
        its source file into ``folder``; the outcome (or why nothing was written: a
        source that is not DICOM) is the status line."""
        from ._dicom_save import save_analysis

        name = self.image_combo.currentText()
        analysis = self._analyses.get(name)
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        source = (layer.metadata or {}).get("path") if layer is not None else None
        results = list(analysis.results.values()) if analysis is not None else []
        written, line = save_analysis(results, source, folder)
        self.status.setText(line)
        return written

    def _figure_heading(self, result: Any) -> dict[str, str]:
        """Title (image, method, model) and demo-model warning of a saved figure."""
        from ..figures import PHANTOM_WARNING
        from ..maps.methods import METHODS
        from ..models.checkpoint import model_summary

        method = _method_of(result)
        shown = METHODS[method].title if method in METHODS else method
        try:
            summary = model_summary(self.model_edit.text().strip() or None)
        except CorrelaxError:
            return {"title": f"{self.image_combo.currentText()} · {shown}"}
        return {"title": f"{self.image_combo.currentText()} · {shown} · model: {summary.name}",
                "warning": PHANTOM_WARNING if summary.phantoms_only else ""}

    def open_results(self, path: str | Path) -> None:
        """Bring a saved analysis (``MapResult`` .npz) or saved map layers back as layers."""
        from ..export import read_maps
        from ..maps import load_result

        try:
            result = load_result(path)
        except CorrelaxError:
            self._show(_layers.layers_from_maps(read_maps(path)))
            return
        name = image_layer_for(self.viewer.layers, result, path)
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        pixels = (
            image_pixels(layer) if layer is not None else np.zeros(result.image_shape, np.float32)
        )
        self._keep(name, result, pixels)
        self._draw(name)

    def load_boxes(self, csv_path: str | Path | None = None) -> None:
        """Show the chosen image's ground-truth boxes from a VinDr CSV (found if not given)."""
        layer = self._image_layer()
        path = (layer.metadata or {}).get("path")
        if path is None:
            raise CorrelaxError(f"layer {layer.name!r} has no file path to look up boxes for")
        boxes = _layers.boxes_for_image(path, csv_path)
        if not boxes:
            show_info(f"no ground-truth boxes for {Path(path).name}")
            return
        if layer.name in self._analyses:
            self._analyses[layer.name].boxes = boxes
        self._show([_layers.boxes_layer_over(layer, boxes)])

    # -- worker callbacks ----------------------------------------------------------------
    def _on_progress(self, event: Progress) -> None:
        if self._worker is None:
            return
        if isinstance(event, MapPreview):
            self._draw_preview(event.result)
            return
        if self._preview_of is not None and event.stage in ("window", "masks"):
            event = Progress(f"refining {event.stage}", event.done, event.total)
        self.progress.update(event)  # shown at most twice a second (see _progress)

    def _draw_preview(self, result: Any) -> None:
        """Draw a coarse-to-fine run's first map in the layers its final map will use."""
        request = self._request_sent
        if request is None or request.image_name not in self.viewer.layers:
            return
        name = request.image_name
        kept = self._analyses.get(name)
        if kept is not None and kept.holds(request.pixels):
            analysis = dataclasses.replace(kept, results=dict(kept.results))
            analysis.add(result)
        else:
            analysis = _Analysis.of(result, request.pixels,
                                    self._known_boxes(self.viewer.layers[name]))
        self._preview_of = (name, _method_of(result))
        self._draw(name, analysis)
        self.progress.update(Progress("coarse map", 1, 1))

    def _take_down_preview(self) -> None:
        """A run that ended without a result: remove its coarse map, redraw what was kept."""
        if self._preview_of is None:
            return
        name, method = self._preview_of
        self._preview_of = None

        def of_preview(metadata: Any) -> bool:
            info = (metadata or {}).get("correlax") or {}
            return info.get("image") == name and (
                info.get("method") == method or info.get("map") == "analysed area")

        names = [layer.name for layer in self.viewer.layers if of_preview(layer.metadata)]
        names += [kw["name"] for _, kw, _ in self.layer_queue.items
                  if of_preview(kw.get("metadata"))]
        self.layer_queue.discard(names)
        _layers.remove_layers(self.viewer, names)
        if name in self._analyses and name in self.viewer.layers:
            self._draw(name)

    def _on_returned(self, outcome: Any) -> None:
        self.progress.stop()  # no late refresh may overwrite the outcome's status text
        if isinstance(outcome, JobFailure):
            self._take_down_preview()
            self.status.setText("Failed.")
            show_error(outcome.message)
            return
        name, outcome = outcome.image_name, outcome.result
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None:
            self.status.setText(f"Image layer {name!r} was closed; results dropped.")
            return
        pixels = (
            self._request_sent.pixels if self._request_sent is not None else image_pixels(layer)
        )
        self._keep(name, outcome, pixels, self._known_boxes(layer))
        self._preview_of = None  # the final maps go into the coarse map's layers
        self._draw(name)
        st = outcome.stats
        design = f" Masks: {st.design_line}." if st.design_line else ""
        self.status.setText(outputs_text(outcome) or f"Done: {st.windows_evaluated} windows "
                            f"in {st.seconds_total:.1f} s on {st.device}.{design}")
        for warning in st.warnings:  # e.g. the mask design helps less than tabled
            show_warning(warning)
        if self._request_sent is not None and st.windows_evaluated:
            self._rates[self._rate_key(self._request_sent)] = (
                st.seconds_total / st.windows_evaluated, outcome.window)

    def _on_finished(self) -> None:
        aborted = self._worker is not None and self._worker.abort_requested
        self._worker = None
        self._request_sent = None
        self.progress.reset("cancelled" if aborted else "")
        preview = self._preview_of is not None
        self._take_down_preview()  # a worker that ended without a result
        if aborted:
            self.status.setText(self._cancel_reason or (
                "Cancelled; the coarse map was taken down." if preview
                else "Cancelled; no layers were changed."))
        self._cancel_reason = ""
        if self.layer_queue.pending:
            self.run_button.setText("Drawing…")
            self.run_button.setEnabled(False)
        else:
            self._ready()

    def _ready(self) -> None:
        self.run_button.setEnabled(True)
        self.run_button.setText("Run")

    def _keep(self, name: str, result: Any, pixels: np.ndarray,
              boxes: list[Any] | None = None) -> None:
        """Add ``result`` to the image's analysis (a new one when the image changed)."""
        kept = self._analyses.get(name)
        if kept is None or not kept.holds(pixels):
            self._analyses[name] = _Analysis.of(result, pixels, boxes)
            return
        kept.add(result)
        if boxes:
            kept.boxes = list(boxes)

    # -- drawing -----------------------------------------------------------------------
    def _show(self, data: list[_layers.LayerData]) -> None:
        self.layer_queue.add(data)

    def _layers_added(self) -> None:
        _layers.order_layers(self.viewer, self._order)
        _layers.present(self.viewer, self._shown)
        self._active_changed()  # the help line states the range the colours span now
        if self._worker is None:
            self._ready()

    def _active_changed(self, event: Any = None) -> None:
        text = _layers.meaning(self.viewer.layers.selection.active)
        self.help.setText(text or "Select a map layer to read what it shows.")

    def _draw(self, image_name: str, analysis: _Analysis | None = None) -> None:
        """(Re)draw every method's maps of an image: the last run's shown, the older
        methods' kept hidden, the analysed area's outline above them, boxes on top.
        ``analysis``: what to draw instead of the kept analysis (a coarse map)."""
        analysis = analysis or self._analyses[image_name]
        layer = self.viewer.layers[image_name] if image_name in self.viewer.layers else None
        if layer is not None:
            scale, translate = _layers.image_transform(layer)
        else:
            scale, translate = None, (0.0, 0.0)
        chosen = self.chosen_labels()
        contrast = self.contrast_combo.currentData() or "fixed"
        latest = analysis.result
        data: list[_layers.LayerData] = []
        for result in analysis.results.values():
            maps = _layers.map_arrays(result, image_name, chosen, image_scale=scale,
                                      image_translate=translate, breast=analysis.breast)
            data += _layers.layers_from_maps(
                maps, visible=None if result is latest else [], contrast=contrast)
        stale = [
            _layers.layer_name(image_name, kind, lab, result.stats.method)
            for result in analysis.results.values()
            for lab in result.labels
            if lab not in chosen
            for kind in result.maps()
            if map_kind(kind).per_label
        ]
        _layers.remove_layers(self.viewer, stale)
        self.layer_queue.discard(stale)
        data.append(_layers.outline_layer(latest, image_name, image_scale=scale,
                                          image_translate=translate, breast=analysis.breast))
        if analysis.boxes and layer is not None:
            data.append(_layers.boxes_layer_over(layer, analysis.boxes))
        patches = patches_layer(latest, image_name, image_scale=scale or (1.0, 1.0),
                                image_translate=translate)
        if patches is not None:
            data.append(patches)
            crops = crops_layer(latest, getattr(layer, "data", None), image_name,
                                image_scale=scale or (1.0, 1.0), image_translate=translate)
            if crops is not None:
                data.append(crops)
        if layer is not None:
            self.peaks.show_result(latest, layer, chosen)
        self._shown = [kw["name"] for _, kw, kind in data if kind == "image" and kw["visible"]]
        self._order = [kw["name"] for _, kw, _ in data]
        self._show(data)

    def _contrast_changed(self, _index: int = 0) -> None:
        """Redraw the chosen image's maps with the contrast the dock now shows."""
        name = self.image_combo.currentText()
        if name in self._analyses and not self.busy:
            self._draw(name)

    def _image_changed(self, _index: int = 0) -> None:
        """Say in the dock whether the chosen image is in millimetres or pixel units."""
        name = self.image_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None:
            self.units.setText("")
            return
        spacing = _layers.spacing_of(layer)
        self.units.setText(
            f"Units: mm ({spacing[0]:.3g} × {spacing[1]:.3g} mm per pixel)" if spacing else
            "Units: pixel units: the file gives no pixel spacing, so sizes and positions "
            "are in image pixels, not mm.")

    def _known_boxes(self, layer: Any) -> list[Any]:
        try:
            return _layers.known_boxes(self.viewer, layer)
        except CorrelaxError as exc:
            show_error(str(exc))
            return []

    # -- GUI glue ----------------------------------------------------------------------
    def _image_layer(self) -> Any:
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise CorrelaxError("open a mammogram (an image layer) first")
        return self.viewer.layers[name]

    def _request(self) -> AnalysisRequest:
        layer = self._image_layer()
        meta = dict((layer.metadata or {}).get("mammogram") or {})
        return AnalysisRequest(
            image_name=layer.name,
            pixels=image_pixels(layer),
            spacing_mm=_layers.spacing_of(layer),
            meta=meta,
            path=(layer.metadata or {}).get("path"),
            checkpoint=self.model_edit.text().strip() or None,
            # CorRELAX runs coarse to fine: a first map early, the same final maps
            settings=self.settings().with_(coarse_first=True),
        )

    def settings(self) -> MapSettings:
        """The map settings the dock's controls show."""
        return self.form.settings()

    def _run_or_cancel(self) -> None:
        if self._worker is not None:
            self.cancel()
        else:
            self.run()

    def _settings_changed(self) -> None:
        """A run with other settings than the controls show is not worth finishing."""
        if self._worker is not None and not self._worker.abort_requested:
            self._cancel_reason = "Settings changed: the run was cancelled; press Run."
            self.cancel()

    def _method_changed(self, _index: int = 0) -> None:
        """Enable the controls the chosen method's maps depend on."""
        from ..maps.methods import get_method

        method = get_method(self.settings().method)
        for name, widget in self.form.widgets.items():
            if name in ("masks", "adaptive", "focus"):
                widget.setEnabled(name in method.uses)
            elif name in ("mode", "cam", "retrieval_cam", "laterality"):
                widget.setEnabled(name in method.options)

    def _labels_changed(self, item: Any = None) -> None:
        name = self.image_combo.currentText()
        if name in self._analyses:
            self._draw(name)

    def _model_changed(self) -> None:
        """Show what the model is and offer its labels (the header is read in a worker)."""
        from napari.qt.threading import create_worker

        worker = create_worker(checkpoint_summary, self.model_edit.text().strip() or None)
        worker.returned.connect(self._model_read)
        worker.start()

    def _model_read(self, summary: Any) -> None:
        self.model_badge.setText(model_badge(summary))
        self._set_labels(list(LABELS) if isinstance(summary, str) else summary.labels)

    def _browse_checkpoint(self) -> None:
        path = ask_path(self, "Classifier checkpoint", "Checkpoints (*.safetensors)")
        if path:
            self.set_checkpoint(path)

    def _pick_boxes(self) -> None:
        path = ask_path(self, "VinDr annotations", "CSV (*.csv)")
        if path:
            self._guarded(self.load_boxes, path)

    def _pick_save(self) -> None:
        path = ask_path(self, "Save analysis", "Analysis (*.npz)", save=True)
        written = self._guarded(self.save_results, path) if path else None
        if written:
            show_info("saved " + ", ".join(p.name for p in written))

    def _pick_dicom(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self, "Save as DICOM into")
        if folder:
            self.save_dicom(folder)

    def _pick_open(self) -> None:
        path = ask_path(self, "Open results", "Results (*.npz *.tif *.tiff)")
        if path:
            self._guarded(self.open_results, path)

    def _guarded(self, action: Any, *args: Any) -> Any:
        try:
            return action(*args)
        except CorrelaxError as exc:
            show_error(str(exc))
            return None
