"""The "Test-set reader" dock in a real napari viewer (Xvfb): review, kill-safety, resume."""

from __future__ import annotations

import csv

import pytest

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_correlax._napari._layers import layer_name  # noqa: E402

SHAPE = (384, 256)


@pytest.fixture
def dataset(tmp_path):
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path / "data", 6, seed=5, shape=SHAPE, test_fraction=1.0,
                               no_finding_fraction=0.2)


@pytest.fixture
def errors(monkeypatch):
    from napari_correlax._napari import _testset_widget

    seen: list[str] = []
    monkeypatch.setattr(_testset_widget, "show_error", seen.append)
    return seen


def open_reader(viewer, model, data, work, configure=True):
    from napari_correlax._napari._testset_widget import WITH_FINDINGS, TestSetReaderWidget

    widget = TestSetReaderWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.device_combo.setCurrentText("cpu")
    if configure:
        widget.model_edit.setText(str(model))
        widget.stride_spin.setValue(64)
        widget.masks_spin.setValue(16)
        widget.filter_combo.setCurrentText(WITH_FINDINGS)
    widget.open_dataset(data, work=work)
    return widget


def wait_for_rows(qtbot, widget):
    qtbot.waitUntil(lambda: len(widget.visible_rows()) > 0 and widget.table.rowCount() > 0,
                    timeout=120_000)
    return widget.visible_rows()


def press(viewer, key):
    """A key pressed on the canvas, resolved as napari resolves it (the selected layer's
    keymap first, then the viewer's)."""
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


def reader_layers(viewer):
    """The reader's layers on screen: (name, image id or map) of each visible one."""
    return [layer for layer in viewer.layers if layer.visible and (
        layer.name == "test set" or (layer.metadata.get("correlax") or {}).get("image")
        == "test set")]


@pytest.fixture
def pace(monkeypatch):
    """A slow stand-in for the model: every step of a map computation (model loading,
    each batch of windows or masked passes) takes ``pace["s"]`` seconds more; the image
    itself comes at once, as before."""
    import time

    from napari_correlax._napari import _testset_jobs
    from napari_correlax.evaluate.runner import Preview

    real = _testset_jobs.load_steps
    pace = {"s": 0.0}

    def slow(*args):
        steps = real(*args)
        while True:
            try:
                event = next(steps)
            except StopIteration as stop:
                return stop.value
            if not isinstance(event, Preview):
                time.sleep(pace["s"])
            yield event

    monkeypatch.setattr(_testset_jobs, "load_steps", slow)
    return pace


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_review_three_images_close_without_saving_and_everything_is_back(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path, errors
):
    from qtpy.QtCore import Qt

    from napari_correlax._napari._layers import layer_name

    work = tmp_path / "work"
    viewer = make_napari_viewer(show=True)  # shortcuts need a visible, active window
    widget = open_reader(viewer, small_model, dataset, work)
    viewer.window._qt_window.activateWindow()
    qtbot.waitUntil(widget.isVisible)
    entered = {}
    reviewed = []
    for n in range(3):
        record = widget.current
        rows = wait_for_rows(qtbot, widget)
        labels = [lab for lab in record.labels if lab != "No Finding"]
        assert [r.label for r in rows] == labels  # one line per finding
        assert widget.table.rowCount() == len(rows)
        names = [layer.name for layer in viewer.layers]
        assert names[0] == "test set"
        assert {"ground truth · test set", "maxima · test set",
                "analysed area · test set"} <= set(names)
        assert viewer.layers["analysed area · test set"].visible  # where the maps stop
        assert {f"{lab} · corr · test set" for lab in labels} <= set(names)
        maxima = viewer.layers["maxima · test set"]
        # the selected finding's maxima only (one per map), so labels never overprint
        assert len(maxima.data) == 2
        assert set(maxima.features["label"]) == {widget.verdicts.selected_label()}
        for kind, key in (("correlation", Qt.Key.Key_C), ("prediction", Qt.Key.Key_P)):
            widget.table.setFocus()
            qtbot.keyClick(widget.table, key)  # the map kind shown and judged
            rows = widget.visible_rows()
            assert [(r.label, r.kind) for r in rows] == [(lab, kind) for lab in labels]
            for k, row in enumerate(rows):
                widget.select_row(k)
                # one finding's map at a time: the selected row's
                assert [viewer.layers[layer_name("test set", kind, lab)].visible
                        for lab in labels] == [lab == row.label for lab in labels]
                verdict = ("hit", "miss", "unsure")[(n + k + len(kind)) % 3]
                if k == 0:  # by keyboard, in the dock
                    widget.table.setFocus()
                    qtbot.keyClick(widget.table, {"hit": Qt.Key.Key_H, "miss": Qt.Key.Key_M,
                                                  "unsure": Qt.Key.Key_U}[verdict])
                else:
                    widget.set_verdict(verdict)
                comment = f"image {n} row {k} {kind}" if k % 2 == 0 else ""
                if comment:
                    widget.select_row(k)
                    widget.set_comment(comment)
                entered[(record.image_id, row.label, kind)] = (verdict, comment)
        # saved at once, without any save action; a prediction verdict on both its rules
        on_disk = [((r["image_id"], r["label"], r["map"].split(">")[0]),
                    (r["reader_verdict"], r["comment"]))
                   for r in read_csv(work / "verdicts.csv") if r["image_id"] == record.image_id]
        assert len(on_disk) == 3 * len(labels)
        assert dict(on_disk) == {k: v for k, v in entered.items() if k[0] == record.image_id}
        assert widget.image_list.item(widget.position).text().startswith("●")
        reviewed.append(record.image_id)
        widget.next_image()
    stopped_at = widget.current.image_id
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert errors == []
    viewer.close()

    viewer = make_napari_viewer()
    again = open_reader(viewer, small_model, dataset, work, configure=False)
    # resumed: same model, settings, filter and image
    assert again.model_edit.text() == str(small_model)
    assert (again.stride_spin.value(), again.masks_spin.value()) == (64, 16)
    assert again.current.image_id == stopped_at
    for image_id in reviewed:
        again.jump(image_id)
        rows = again.visible_rows()  # from verdicts.csv, before any map is computed
        got = {(image_id, r.label, r.kind): (r.reader_verdict, r.comment) for r in rows}
        assert got == {k: v for k, v in entered.items()
                       if k[0] == image_id and k[2] == "correlation"}
        assert again.image_list.item(again.position).text().startswith("●")
    rows = wait_for_rows(qtbot, again)
    assert [again.table.item(k, 4).text() for k in range(len(rows))] == [
        entered[(again.current.image_id, r.label, r.kind)][0] for r in rows]
    # the same keys on the napari canvas (viewer keymap)
    keymap = {str(k): f for k, f in viewer.keymap.items()}
    again.jump(stopped_at)  # not reviewed yet
    position = again.position
    keymap["PageUp"](viewer)
    assert again.position == position - 1
    keymap["PageDown"](viewer)
    rows = wait_for_rows(qtbot, again)
    again.select_row(0)
    keymap["U"](viewer)
    assert again.visible_rows()[0].reader_verdict == "unsure"
    # on to the next line without a verdict (none after a single finding: stay)
    assert again.table.currentRow() == (1 if len(rows) > 1 else 0)
    qtbot.waitUntil(lambda: not again.busy, timeout=120_000)
    assert errors == []


def test_missing_and_unreadable_files_are_marked_up_front(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path, errors
):
    from napari_correlax.io.vindr import load_vindr

    records = [r for r in load_vindr(dataset).split("test")
               if any(lab != "No Finding" for lab in r.labels)]
    records[1].path.unlink()
    records[2].path.write_bytes(records[2].path.read_bytes()[:1000])
    viewer = make_napari_viewer()
    widget = open_reader(viewer, small_model, dataset, tmp_path / "work")
    ids = [r.image_id for r in widget.records]
    missing = ids.index(records[1].image_id)
    assert widget.image_list.item(missing).text().startswith("✗")  # before any worker ran
    qtbot.waitUntil(lambda: widget.jobs.checker is None, timeout=60_000)
    truncated = ids.index(records[2].image_id)
    assert widget.image_list.item(truncated).text().startswith("✗")
    assert "2 missing or unreadable" in widget.summary.text()
    assert "truncated" in widget.image_list.item(truncated).toolTip()
    widget.show_image(truncated)
    assert "✗" in widget.image_label.text()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert errors == []


def test_changing_the_stride_mid_load_cancels_the_old_maps_within_one_batch(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path, errors
):
    """A load with the old settings is quit at its next batch, and the image is loaded
    again with the new ones (instead of first finishing maps nobody will look at)."""
    viewer = make_napari_viewer()
    widget = open_reader(viewer, small_model, dataset, tmp_path / "work", configure=False)
    widget.model_edit.setText(str(small_model))
    widget.masks_spin.setValue(4096)  # a long CorRELAX run per image
    widget.stride_spin.setValue(32)
    widget._settings_changed()
    jobs = widget.jobs
    qtbot.waitUntil(lambda: jobs.worker is not None and jobs.worker_key == widget.review.key,
                    timeout=60_000)
    old_worker, old_key = jobs.worker, jobs.worker_key
    after: list = []
    changed: list[bool] = []

    def on_progress(event):
        if getattr(event, "stage", "") != "masks":
            return  # previews and the prediction pass
        if changed:
            after.append(event)
        elif event.done > 0:
            changed.append(event.done)
            widget.stride_spin.setValue(96)
            widget._settings_changed()  # what editingFinished does

    returned: list = []
    old_worker.yielded.connect(on_progress)
    old_worker.returned.connect(returned.append)
    qtbot.waitUntil(lambda: jobs.worker is not old_worker, timeout=120_000)
    assert changed and old_worker.abort_requested
    # The worker stops at its next yield (one batch of 128 masked passes): events it had
    # already queued for the GUI may still arrive, but it never ran on to its maps.
    assert not returned
    qtbot.waitUntil(lambda: jobs.worker is not None, timeout=30_000)
    assert jobs.worker_key != old_key  # the image is loading again with the new stride
    widget.jobs.stop()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert errors == []


def test_reader_shows_the_image_and_predictions_before_correlax_is_done(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path, errors
):
    from napari_correlax._napari._testset_widget import PREFIX

    viewer = make_napari_viewer()
    widget = open_reader(viewer, small_model, dataset, tmp_path / "work", configure=False)
    widget.model_edit.setText(str(small_model))
    widget.masks_spin.setValue(4096)  # long enough to look before it ends
    widget.stride_spin.setValue(32)
    widget._settings_changed()
    jobs = widget.jobs
    qtbot.waitUntil(lambda: jobs.worker is not None and jobs.worker_key == widget.review.key,
                    timeout=60_000)
    current = widget.current.image_id
    qtbot.waitUntil(lambda: PREFIX in viewer.layers and any(
        f"· pred · {PREFIX}" in layer.name for layer in viewer.layers), timeout=60_000)
    assert jobs.worker is not None and current not in widget.review.loaded  # still running
    assert viewer.layers[PREFIX].data.shape == (widget.current.height, widget.current.width)
    assert "refining" in widget.image_label.text()
    # then CorRELAX's coarse map (4 x the stride) while the final one is computed
    qtbot.waitUntil(lambda: "coarse CorRELAX map shown (128 px stride)"
                    in widget.image_label.text(), timeout=120_000)
    coarse = [layer for layer in viewer.layers if f"· corr · {PREFIX}" in layer.name]
    assert coarse and all(layer.metadata["correlax"]["stride"] == 128 for layer in coarse)
    assert jobs.worker is not None and current not in widget.review.loaded  # still running
    jobs.stop()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert errors == []


def test_keys_flip_map_kinds_and_a_settings_change_asks_before_hiding_verdicts(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path, errors
):
    viewer = make_napari_viewer()
    widget = open_reader(viewer, small_model, dataset, tmp_path / "work")
    wait_for_rows(qtbot, widget)
    findings = [lab for lab in widget.current.labels if lab != "No Finding"]
    widget.layers.show_kind("prediction")
    selected = widget.verdicts.selected_label()
    shown = {layer.name for layer in viewer.layers if layer.visible}
    for label in findings:  # only the selected finding's map, of the kind shown
        assert (f"{label} · pred · test set" in shown) == (label == selected)
        assert f"{label} · corr · test set" not in shown
    widget.layers.show_kind("correlation")
    assert f"{findings[0]} · corr · test set" in {
        layer.name for layer in viewer.layers if layer.visible}

    widget.set_verdict("hit")
    key = widget.review.key
    asked: list[str] = []
    widget.confirm = lambda question: asked.append(question) or False  # the reader says no
    widget.stride_spin.setValue(96)
    widget._settings_changed()
    assert asked and "Your 1 verdict was given" in asked[0]
    assert widget.review.key == key and widget.stride_spin.value() == 64  # put back
    widget.confirm = lambda question: True
    widget.stride_spin.setValue(96)
    widget._settings_changed()
    assert widget.review.key != key
    widget.jobs.stop()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert errors == []


def test_a_normal_image_is_judged_and_a_click_marks_a_false_positive(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path, errors
):
    from types import SimpleNamespace

    from napari_correlax._napari._testset_widget import ALL

    work = tmp_path / "work"
    viewer = make_napari_viewer()
    widget = open_reader(viewer, small_model, dataset, work)
    widget.filter_combo.setCurrentText(ALL)
    normal = next(k for k, r in enumerate(widget.records)
                  if all(lab == "No Finding" for lab in r.labels))
    widget.show_image(normal)
    (line,) = wait_for_rows(qtbot, widget)
    assert (line.label, line.boxes) == ("No Finding", 0)
    widget.show_kind("prediction")
    (line,) = widget.visible_rows()
    # the automatic verdicts, computed here from the maps: quiet (hit) when no lesion
    # label's prediction maximum passes the rule's threshold
    result = widget.review.loaded[widget.current.image_id].result
    lesions = [lab for lab in result.labels if lab != "No Finding"]
    top = max(result.peak("prediction", lab)[0] for lab in lesions)
    assert line.automatic() == (f"{'miss' if top >= 0.25 else 'hit'} >=0.25 · "
                                f"{'miss' if top >= 0.5 else 'hit'} >=0.50")
    widget.set_verdict("hit")
    # every line shown is judged: reviewed (the correlation line need not be)
    assert widget.image_list.item(widget.position).text().startswith("●")
    assert "1 reviewed" in widget.summary.text()
    # F arms one click; the click marks the shown label's highest window near it
    keymap = {str(k): f for k, f in viewer.keymap.items()}
    keymap["F"](viewer)
    assert widget.verdicts.mark_button.isChecked()
    (label,) = widget.layers.labels  # the lesion label with the highest prediction
    value, (row, col) = result.peak("prediction", label)
    assert value == top
    click = viewer.layers["test set"].data_to_world((row + 20, col - 10))
    (armed,) = [c for c in viewer.mouse_drag_callbacks
                if getattr(c, "__self__", None) is widget.marker]
    armed(viewer, SimpleNamespace(position=tuple(click)))  # what napari calls on a click
    assert not widget.verdicts.mark_button.isChecked()  # one click, then disarmed
    marks = viewer.layers["false positives · test set"]
    assert marks.data.tolist() == [[row, col]]
    lines = widget.visible_rows()
    assert [(x.label, x.is_mark) for x in lines] == [("No Finding", False), (label, True)]
    assert widget.table.item(1, 0).text() == f"✗ false positive ({label})"
    on_disk = [r for r in read_csv(work / "verdicts.csv") if r["reader_verdict"] ==
               "false positive"]
    assert [(r["label"], float(r["max_row"]), float(r["max_col"])) for r in on_disk] == [
        (label, row, col)]
    # the marks layer is never left selected nor in add mode
    assert viewer.layers.selection.active is viewer.layers["test set"]
    assert marks.mode == "pan_zoom"
    # P with the marks layer selected: napari's Points "P" (add points) does not take it
    viewer.layers.selection.active = marks
    press(viewer, "C")
    assert {x.kind for x in widget.visible_rows() if not x.is_mark} == {"correlation"}
    press(viewer, "P")
    assert [(x.label, x.kind) for x in widget.visible_rows()] == [
        ("No Finding", "prediction"), (label, "prediction")]
    assert marks.mode == "pan_zoom" and marks.data.tolist() == [[row, col]]  # no point added
    assert viewer.layers[layer_name("test set", "prediction", label)].visible
    widget.jobs.stop()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert errors == []


def test_page_down_while_the_maps_compute_shows_the_new_image_alone_at_once(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path, errors, pace
):
    import time

    from napari_correlax._napari._testset_widget import PREFIX

    pace["s"] = 1.5  # every batch of the map computation takes 1.5 s more
    viewer = make_napari_viewer()
    widget = open_reader(viewer, small_model, dataset, tmp_path / "work")
    first, second = widget.current, widget.review.neighbour(1)
    qtbot.waitUntil(lambda: PREFIX in viewer.layers and viewer.layers[PREFIX].visible
                    and viewer.layers[PREFIX].metadata["image_id"] == first.image_id,
                    timeout=30_000)
    qtbot.waitUntil(lambda: widget.jobs.worker_id == first.image_id, timeout=30_000)
    assert first.image_id not in widget.review.loaded  # its maps are still being made
    drawn: list[str] = []
    draw = widget.layers.draw
    widget.layers.draw = lambda loaded, *a, **k: (drawn.append(loaded.record.image_id),
                                                  draw(loaded, *a, **k))
    start = time.monotonic()
    widget.next_image()  # PageDown
    # at once: nothing of the previous image under the new header
    assert "2 / " in widget.image_label.text() and second.image_id in widget.image_label.text()
    assert reader_layers(viewer) == []
    assert widget.peaks.rowCount() == 0 and widget.table.rowCount() == 0
    assert widget.progress.isHidden() and widget.eta_label.isHidden()  # not the old one's
    qtbot.waitUntil(lambda: viewer.layers[PREFIX].visible
                    and viewer.layers[PREFIX].metadata["image_id"] == second.image_id,
                    timeout=2_000)
    assert time.monotonic() - start < 2.0
    shown = {layer.name: layer for layer in reader_layers(viewer)}
    assert set(shown) <= {PREFIX, "ground truth · test set", "maxima · test set"}
    assert viewer.layers[PREFIX].data.shape == (second.height, second.width)
    assert len(shown["ground truth · test set"].data) == len(second.boxes)
    assert "maxima · test set" not in shown or len(shown["maxima · test set"].data) == 0
    pace["s"] = 0.0
    rows = wait_for_rows(qtbot, widget)
    # only the new image was ever drawn, though the first one's worker was still running
    assert set(drawn) == {second.image_id}
    assert {r.label for r in rows} == {lab for lab in second.labels if lab != "No Finding"}
    result = widget.review.loaded[second.image_id].result
    peaks = [(widget.peaks.item(k, 0).text(), widget.peaks.item(k, 2).text())
             for k in range(widget.peaks.rowCount())]
    assert peaks == [(label, f"{value:.3f}") for label, _, value, _ in result.peaks()
                     if label != "No Finding"]
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert errors == []


def test_the_judged_map_is_visible_on_a_fresh_start_and_on_cached_images(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path, errors, pace
):
    from napari_correlax._napari._testset_widget import PREFIX

    def visible_maps():
        return {(layer.metadata["correlax"]["label"], layer.metadata["correlax"]["map"])
                for layer in reader_layers(viewer) if layer.name != PREFIX
                and layer.metadata["correlax"]["map"] in ("prediction", "correlation")}

    pace["s"] = 0.5  # time to look at the preview
    viewer = make_napari_viewer()
    widget = open_reader(viewer, small_model, dataset, tmp_path / "work")
    record = widget.current
    findings = [lab for lab in record.labels if lab != "No Finding"]

    def judged(kind):
        """The selected row's finding's map (the first finding's before a row is selected)."""
        selected = widget.verdicts.selected_label()
        return {(lab, kind) for lab in ([selected] if selected in findings else findings[:1])}
    qtbot.waitUntil(lambda: "CorRELAX refining" in widget.image_label.text(), timeout=60_000)
    # "prediction maps shown": they are, for the findings
    assert visible_maps() == judged("prediction")
    pace["s"] = 0.0
    rows = wait_for_rows(qtbot, widget)
    assert {(r.label, r.kind) for r in rows} == {(lab, "correlation") for lab in findings}
    assert visible_maps() == judged("correlation")
    widget.next_image()
    wait_for_rows(qtbot, widget)
    widget.previous_image()  # maps kept: drawn at once
    assert widget.current.image_id == record.image_id
    assert {(r.label, r.kind) for r in widget.visible_rows()} == {
        (lab, "correlation") for lab in findings}
    assert visible_maps() == judged("correlation")
    press(viewer, "P")  # the judged kind follows to the next images
    assert visible_maps() == judged("prediction")
    widget.jobs.stop()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)

    # the same folder in a new viewer: maps from the cache on disk, shown at once
    viewer = make_napari_viewer()
    again = open_reader(viewer, small_model, dataset, tmp_path / "work", configure=False)
    assert again.current.image_id == record.image_id
    rows = wait_for_rows(qtbot, again)
    assert {(r.label, r.kind) for r in rows} == {(lab, "correlation") for lab in findings}
    assert visible_maps() == judged("correlation")
    qtbot.waitUntil(lambda: not again.busy, timeout=120_000)
    assert errors == []


def test_a_false_positive_is_filed_under_the_label_of_the_map_on_screen(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path, errors
):
    from types import SimpleNamespace

    from napari_correlax._napari._testset_widget import PREFIX
    from napari_correlax.evaluate.pointing import lesion_labels

    work = tmp_path / "work"
    viewer = make_napari_viewer()
    widget = open_reader(viewer, small_model, dataset, work)
    rows = wait_for_rows(qtbot, widget)
    press(viewer, "P")
    result = widget.review.loaded[widget.current.image_id].result
    selected = rows[0].label
    widget.select_row(0)
    # the reader hides the selected row's map and shows another label's instead
    others = [lab for lab in lesion_labels(result.labels) if lab != selected]
    other = max(others, key=lambda lab: result.peak("prediction", lab)[0])
    value, (row, col) = result.peak("prediction", other)
    for r in rows:
        viewer.layers[layer_name(PREFIX, "prediction", r.label)].visible = False
    viewer.layers[layer_name(PREFIX, "prediction", other)].visible = True
    assert widget.layers.shown_labels() == [other]
    click = SimpleNamespace(position=tuple(viewer.layers[PREFIX].data_to_world((row, col))))
    press(viewer, "F")
    (armed,) = [c for c in viewer.mouse_drag_callbacks
                if getattr(c, "__self__", None) is widget.marker]
    armed(viewer, click)
    marks = [r for r in read_csv(work / "verdicts.csv") if r["reader_verdict"] ==
             "false positive"]
    if value >= 0.25:  # positive under the prediction rule: marked, on the shown label
        assert [(r["label"], float(r["max_row"]), float(r["max_col"])) for r in marks] == [
            (other, row, col)]
        assert errors == []
    else:  # the shown map is not positive anywhere: refused, said why
        assert marks == [] and len(errors) == 1 and "not positive" in errors[0]
        errors.clear()
    # no map shown: refused, nothing filed under the selected row's label
    viewer.layers[layer_name(PREFIX, "prediction", other)].visible = False
    press(viewer, "F")
    armed(viewer, click)
    assert len(errors) == 1 and "not shown" in errors[0]
    assert [r["label"] for r in read_csv(work / "verdicts.csv")
            if r["reader_verdict"] == "false positive"] == [m["label"] for m in marks]
    widget.jobs.stop()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)


CLOSE_SCRIPT = '''
import sys
import time

import napari
from qtpy.QtWidgets import QApplication

from napari_correlax._napari import _testset_jobs
from napari_correlax.evaluate.runner import Preview

real = _testset_jobs.load_steps
SLOW = {"id": ""}


def slow(record, *args):  # a slow model for the prefetched image: 0.4 s more per step
    steps = real(record, *args)
    while True:
        try:
            event = next(steps)
        except StopIteration as stop:
            return stop.value
        if not isinstance(event, Preview) and record.image_id == SLOW["id"]:
            time.sleep(0.4)
        yield event


_testset_jobs.load_steps = slow
from napari_correlax._napari._testset_widget import TestSetReaderWidget

data, work, model, comment = sys.argv[1:5]
viewer = napari.Viewer(show=True)
widget = TestSetReaderWidget(viewer)
viewer.window.add_dock_widget(widget)
widget.device_combo.setCurrentText("cpu")
widget.model_edit.setText(model)
widget.stride_spin.setValue(64)
widget.masks_spin.setValue(16)
widget.filter_combo.setCurrentText("Images with findings")
widget.open_dataset(data, work=work)
app = QApplication.instance()
following = SLOW["id"] = widget.review.neighbour(1).image_id
deadline = time.monotonic() + 240
while widget.jobs.worker_id != following:  # the next image is being prefetched
    app.processEvents()
    time.sleep(0.01)
    if time.monotonic() > deadline:
        sys.exit(3)
widget.verdicts.select_row(0)
widget.verdicts.comment_edit.setText(comment)  # typed, not yet saved by its timer
widget.verdicts.comment_edit.textEdited.emit(comment)
time.sleep(0.2)
viewer.close()
print("closed", flush=True)
'''


@pytest.mark.slow
def test_closing_the_viewer_while_the_reader_prefetches_exits_cleanly_ten_times(
    small_model, dataset, tmp_path
):
    """Fresh processes: open the reader, let it prefetch the next image with a slow
    model (0.4 s more per batch), type a comment, close the viewer. Every run ends with
    exit 0, nothing on stderr about deleted Qt objects or an abort, and the comment is
    in verdicts.csv."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import napari_correlax

    script = tmp_path / "close_while_prefetching.py"
    script.write_text(CLOSE_SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(napari_correlax.__file__).parents[1]),
           "OMP_NUM_THREADS": "1"}
    work = tmp_path / "work"  # shared: the first image's maps are cached after run 0
    for run in range(10):
        done = subprocess.run([sys.executable, str(script), str(dataset), str(work),
                               str(small_model), f"comment {run}"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (run, done.returncode, done.stderr[-3000:])
        assert "closed" in done.stdout
        for bad in ("Aborted", "RuntimeError", "Traceback", "has been deleted"):
            assert bad not in done.stderr, (run, done.stderr[-3000:])
        comments = [r["comment"] for r in read_csv(work / "verdicts.csv") if r["comment"]]
        assert comments and set(comments) == {f"comment {run}"}
