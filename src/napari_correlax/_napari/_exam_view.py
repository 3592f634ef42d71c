"""The exam view: the four views of the current image's study on one canvas.

The hanging protocol (which view goes where, mirrored so the chest walls meet) is
:func:`napari_correlax.exam.hang`; this module only turns its tiles into napari layers,
each placed by its tile's affine (data ``(row, col)`` in image pixels → world), so one
camera shows, zooms and pans all four together. Per hung view: the image, the selected
label's map of the chosen kind (when its maps are computed) and the ground-truth boxes.
Above them: the current image outlined (a Shapes rectangle) and each tile's name, with
"missing", "no maps yet" or "unreadable" where that is the case (a text-only
Points layer). Layers are named ``"<what> · exam"``; only the exam's images are held,
and closing the exam view removes its layers and shows the single image again.

:class:`ReaderExtras` adds the exam view, window/level (:mod:`._window_level`) and
*Save as DICOM…* to the test-set reader dock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exam import Exam, Tile, hang, study_images
from . import _layers
from ._testset_layers import PREFIX

EXAM = "exam"
SEP = _layers.SEP

__all__ = ["EXAM", "ExamTile", "ExamView", "ReaderExtras", "exam_layers", "reader_exam"]


@dataclass
class ExamTile:
    """What one hung view shows: its image ``pixels`` (None: unreadable), its maps
    ``result`` (None: not computed yet) and its ground-truth ``boxes`` (image pixels)."""

    pixels: np.ndarray | None
    result: Any = None
    boxes: list[Any] = field(default_factory=list)
    path: str = ""


def tile_image_name(tile: Tile) -> str:
    """The image layer name of a tile: ``"exam R-CC"``."""
    return f"{EXAM} {tile.name}"


def image_corners(tile: Tile) -> np.ndarray:
    """The world ``(y, x)`` corners (top-left, bottom-right) of a hung tile's image:
    its pixel edges ``-½`` and ``size - ½`` through the tile's affine."""
    h, w = tile.image.shape  # type: ignore[union-attr]
    corners = np.array([[-0.5, -0.5, 1.0], [h - 0.5, w - 0.5, 1.0]]) @ tile.affine.T  # type: ignore[union-attr]
    return np.sort(corners[:, :2], axis=0)


def _tile_layers(tile: Tile, shown: ExamTile, label: str, kind: str) -> list[_layers.LayerData]:
    name = tile_image_name(tile)
    out: list[_layers.LayerData] = [(shown.pixels, {
        "name": name, "affine": tile.affine, "colormap": "gray", "contrast_limits": (0.0, 1.0),
        "metadata": {"path": shown.path, "exam": {"view": tile.name, "image_id":
                                                  tile.image.image_id}}}, "image")]  # type: ignore[union-attr]
    if shown.result is not None and label in shown.result.labels:
        for data, kwargs, layer_type in _layers.result_layers(shown.result, name, [label],
                                                              image_scale=(1.0, 1.0)):
            if kwargs["metadata"]["correlax"]["map"] == kind:
                out.append((data, {**kwargs, "affine": tile.affine}, layer_type))
    if shown.boxes:
        data, kwargs, layer_type = _layers.boxes_layer(shown.boxes, name,
                                                       image_shape=shown.pixels.shape)
        out.append((data, {**kwargs, "affine": tile.affine}, layer_type))
    return out


def _tile_note(tile: Tile, shown: ExamTile | None) -> str:
    if tile.empty:
        return f"{tile.name} · missing"
    if shown is None or shown.pixels is None:
        return f"{tile.name} · unreadable"
    return tile.name if shown.result is not None else f"{tile.name} · no maps yet"


def exam_layers(exam: Exam, shown: dict[str, ExamTile], label: str, kind: str
                ) -> list[_layers.LayerData]:
    """``LayerData`` of a hung exam, bottom to top: per view its image, ``label``'s map of
    ``kind`` and its boxes (``shown``: by view name), then the current image's outline and
    the tiles' names (world coordinates of :func:`~napari_correlax.exam.hang`)."""
    out: list[_layers.LayerData] = []
    for tile in exam.tiles:
        view = shown.get(tile.name)
        if not tile.empty and view is not None and view.pixels is not None:
            out += _tile_layers(tile, view, label, kind)
    current = [image_corners(t) for t in exam.tiles if t.current and not t.empty]
    out.append(([np.array([[a[0], a[1]], [a[0], b[1]], [b[0], b[1]], [b[0], a[1]]])
                 for a, b in current], {
        "name": f"current image{SEP}{EXAM}", "shape_type": "rectangle",
        "edge_color": "#ffd000", "edge_width": max(exam.tile_shape) / 150,
        "face_color": "transparent"}, "shapes"))
    th, tw = exam.tile_shape
    places = np.array([[t.grid[0] * th + th * 0.04, (t.grid[1] + 0.5) * tw] for t in exam.tiles])
    notes = [_tile_note(t, shown.get(t.name)) for t in exam.tiles]
    out.append((places, {
        "name": f"views{SEP}{EXAM}", "size": 0.0, "features": {"view": [t.name for t in exam.tiles],
                                                              "note": notes},
        "text": {"string": "{note}", "color": "#ffd000", "size": 14, "anchor": "center"}},
        "points"))
    return out


def reader_exam(review: Any, record: Any, held: dict[str, np.ndarray] | None = None
                ) -> tuple[Exam, dict[str, ExamTile]]:
    """The exam of a review's image ``record``: its study's views from the data set's
    table, hung, with pixels (the review's loaded image, else ``held`` by image id, else
    read from the file), maps (loaded, else the review's map cache; None when not
    computed) and boxes. ``held`` is updated to hold this exam's pixels only."""
    from ..errors import CorrelaxError
    from ..evaluate.split_run import read_record
    from ..maps.cache import ResultCache

    exam = hang(study_images(review.index, record.image_id), current=record.image_id)
    cache = ResultCache(review.cache_root, review.key) if review.key and review.cache_root \
        else None
    shown: dict[str, ExamTile] = {}
    before = dict(held or {})
    if held is not None:
        held.clear()
    for tile in exam.tiles:
        if tile.empty:
            continue
        image = review.index.by_id(tile.image.image_id)  # type: ignore[union-attr]
        loaded = review.loaded.get(image.image_id)
        try:
            pixels = loaded.pixels if loaded is not None else \
                before.get(image.image_id, None)
            pixels = read_record(image).pixels if pixels is None else pixels
        except CorrelaxError:
            shown[tile.name] = ExamTile(None)
            continue
        if held is not None:
            held[image.image_id] = pixels
        result = loaded.result if loaded is not None and loaded.final else None
        if result is None and cache is not None:
            result = cache.load_maps(image.image_id, image.path)
        shown[tile.name] = ExamTile(pixels, result, list(image.boxes), str(image.path))
    return exam, shown


class ExamView:
    """Shows an exam in a viewer in place of the single-image layers whose names end in
    ``" · <hide>"`` (or are ``hide``; every other layer when ``hide`` is empty);
    :meth:`close` brings those back.

    The single-image layers are made transparent (opacity 0), not invisible, so the
    reader's own updates of them (visibility of map kinds, new maxima) go on unchanged
    while the exam is shown."""

    def __init__(self, viewer: Any, hide: str) -> None:
        self.viewer = viewer
        self.hide = hide
        self.shown = False
        self._hidden: dict[str, float] = {}
        self._study: tuple[str, ...] = ()

    def show(self, exam: Exam, tiles: dict[str, ExamTile], label: str, kind: str) -> None:
        """Draw ``exam`` (replacing the exam shown before); resets the camera when the
        study changed."""
        self._hide_single()
        self._remove()
        for data, kwargs, layer_type in exam_layers(exam, tiles, label, kind):
            getattr(self.viewer, f"add_{layer_type}")(data, **kwargs)
        study = tuple(sorted(t.image.image_id for t in exam.tiles if not t.empty))  # type: ignore[union-attr]
        if not self.shown or study != self._study:
            self.viewer.reset_view()
        self.shown, self._study = True, study

    def close(self) -> None:
        """Remove the exam's layers and show the single image's layers again."""
        self._remove()
        for name, opacity in self._hidden.items():
            if name in self.viewer.layers:
                self.viewer.layers[name].opacity = opacity
        self._hidden, self.shown, self._study = {}, False, ()
        self.viewer.reset_view()

    def layers(self) -> list[Any]:
        """The exam's layers, bottom to top."""
        return [layer for layer in self.viewer.layers if _is_exam(layer.name)]

    def _hide_single(self) -> None:
        for layer in self.viewer.layers:
            single = layer.name == self.hide or layer.name.endswith(f"{SEP}{self.hide}") \
                if self.hide else not _is_exam(layer.name)
            if single and layer.name not in self._hidden:
                self._hidden[layer.name] = layer.opacity
                layer.opacity = 0.0

    def _remove(self) -> None:
        for layer in self.layers():
            self.viewer.layers.remove(layer)


def _is_exam(name: str) -> bool:
    return name.startswith(f"{EXAM} ") or name.endswith(f"{SEP}{EXAM}") or \
        f"{SEP}{EXAM} " in name


class ReaderExtras:
    """The test-set reader's exam view (E), window/level presets (W) and *Save as
    DICOM…*, bound to the dock ``dock`` (a :class:`._testset_widget.TestSetReaderWidget`)."""

    def __init__(self, dock: Any) -> None:
        from ._window_level import WindowLevel

        self.dock = dock
        self.view = ExamView(dock.viewer, PREFIX)
        self.window = WindowLevel()
        self._pixels: dict[str, np.ndarray] = {}  # the shown exam's images, by id

    def buttons(self) -> Any:
        """The row of buttons for the dock's layout."""
        from ._forms import button_row

        return button_row((
            ("Exam view (E)", self.toggle_exam, "The four views of this image's study, "
             "R-CC | L-CC over R-MLO | L-MLO, mirrored so the chest walls meet; press again "
             "for the single image"),
            ("Window (W)", self.cycle_window, "Window/level presets: the file's DICOM window, "
             "full range, dense breast (0.5–1.0); kept from image to image"),
            ("Save as DICOM…", self.pick_dicom_folder, "This image's maps as Parametric "
             "Maps and its verdicts as a Structured Report, into a folder"),
        ))

    def keys(self) -> dict[str, Any]:
        """Keys for the dock's key map."""
        return {"E": self.toggle_exam, "W": self.cycle_window}

    # -- exam --------------------------------------------------------------------------
    def toggle_exam(self) -> None:
        """Show the exam of the current image, or go back to the single image."""
        if self.view.shown:
            self.view.close()
            self._pixels.clear()
        else:
            self.refresh_exam(force=True)

    def refresh_exam(self, force: bool = False) -> None:
        """Redraw the exam for the current image (when shown, or ``force``)."""
        dock = self.dock
        record = dock.current
        if (not self.view.shown and not force) or record is None:
            return
        exam, tiles = reader_exam(dock.review, record, self._pixels)
        selected = dock.verdicts.selected_label()  # a finding row; a normal image: its alarm
        label = selected if selected in dock.layers.labels else next(iter(dock.layers.labels), "")
        kind = dock.review.viewed_kind()
        self.view.show(exam, tiles, label, kind)
        for layer in self.view.layers():
            if layer.name.startswith(f"{EXAM} ") and hasattr(layer, "contrast_limits"):
                self.window.apply(layer)

    # -- window/level ------------------------------------------------------------------
    def cycle_window(self) -> None:
        """Next window/level preset, applied to the shown image (and the exam's)."""
        self.window.cycle()
        self.apply_window()
        from napari.utils.notifications import show_info

        show_info(self.window.describe())

    def remember_window(self) -> None:
        """Before the next image: keep a window the reader dragged on this one."""
        name = PREFIX
        if name in self.dock.viewer.layers:
            self.window.remember(self.dock.viewer.layers[name])

    def apply_window(self) -> None:
        """Apply the window/level setting to the reader's image layer and the exam's."""
        viewer, name = self.dock.viewer, PREFIX
        targets = [viewer.layers[name]] if name in viewer.layers else []
        targets += [la for la in self.view.layers() if la.name.startswith(f"{EXAM} ")
                    and hasattr(la, "contrast_limits")]
        for layer in targets:
            self.window.apply(layer)

    def after_draw(self) -> None:
        """The reader drew an image: reapply the window, follow with the exam."""
        self.apply_window()
        self.refresh_exam()

    # -- DICOM -------------------------------------------------------------------------
    def pick_dicom_folder(self) -> None:
        """Ask for a folder and save the current image's maps and verdicts there."""
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.dock, "Save as DICOM into")
        if folder:
            self.save_dicom(folder)

    def save_dicom(self, folder: str) -> list[Any]:
        """Write the current image's maps (Parametric Maps) and verdicts (SR) into
        ``folder``; the outcome is one line in the dock (also when refused)."""
        from ._dicom_save import save_reader_image

        dock = self.dock
        record = dock.current
        loaded = dock.review.loaded.get(record.image_id) if record is not None else None
        written, line = save_reader_image(dock.review, loaded, folder)
        dock.image_label.setText(dock.image_label.text().split("<br>")[0] + f"<br>{line}")
        return written



# -- the analysis dock: the open images of one study ------------------------------------
def layers_exam(viewer: Any, active: str, analyses: dict[str, Any]
                ) -> tuple[Exam, dict[str, ExamTile]]:
    """The exam of the image layer ``active`` from the DICOM image layers open in
    ``viewer`` that belong to its study (StudyInstanceUID), with the analysis dock's maps
    and boxes (``analyses``: by layer name; ``.result``, ``.boxes``). Raises
    CorrelaxError when ``active`` is not a DICOM image with a study, laterality and view."""
    from ..errors import CorrelaxError
    from ..exam import ExamImage

    def study(layer: Any) -> str:
        return str(((layer.metadata or {}).get("mammogram") or {}).get("study_instance_uid")
                   or "")

    chosen = viewer.layers[active]
    if not study(chosen):
        raise CorrelaxError("no DICOM study (StudyInstanceUID) to hang an exam from",
                            (chosen.metadata or {}).get("path") or active)
    images, held = [], {}
    for layer in viewer.layers:
        if _is_exam(layer.name) or study(layer) != study(chosen):
            continue
        try:
            image = ExamImage.from_dicom(layer.metadata["path"], image_id=layer.name)
        except CorrelaxError:
            if layer is chosen:
                raise
            continue  # an image of the study without laterality or view: left out
        analysis = analyses.get(layer.name)
        images.append(image)
        held[layer.name] = ExamTile(layer.data, getattr(analysis, "result", None),
                                    list(getattr(analysis, "boxes", []) or []),
                                    str(layer.metadata["path"]))
    exam = hang(images, current=active)
    return exam, {t.name: held[t.image.image_id] for t in exam.tiles if t.image is not None}


def shown_kind(tiles: dict[str, ExamTile]) -> str:
    """The map kind an exam of analysis results shows: correlation when a tile has it,
    else prediction."""
    has = {k for t in tiles.values() if t.result is not None for k in t.result.maps()}
    return "correlation" if "correlation" in has else "prediction"


def toggle_analysis_exam(dock: Any) -> None:
    """The analysis dock's *Exam view* button: the exam of the chosen image, or back."""
    from napari.utils.notifications import show_error

    from ..errors import CorrelaxError

    view = getattr(dock, "exam_view", None)
    if view is None:
        view = dock.exam_view = ExamView(dock.viewer, "")
    if view.shown:
        view.close()
        return
    try:
        exam, tiles = layers_exam(dock.viewer, dock.image_combo.currentText(), dock._analyses)
    except (CorrelaxError, KeyError) as exc:
        show_error(f"no exam view: {exc}")
        return
    label = next(iter(dock.chosen_labels()), "")
    view.show(exam, tiles, label, shown_kind(tiles))
