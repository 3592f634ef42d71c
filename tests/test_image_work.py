"""One image's work shared by every method of a ``correlax compare`` / ``evaluate`` run,
the next image prefetched, and the peak flags' second mask draw stored with the maps.

Sharing is checked by counting the calls of the functions that read, prepare and predict
(wrappers of the real ones, installed here) and by comparing a shared run's files with a
run whose methods do all their work themselves. The peak flags are checked against
:class:`~napari_correlax.evaluate.pointing.PeakRedraw` called directly on the image, with
the peak and runner-up found here by a loop over the cached map.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import threading
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from napari_correlax.cli import main
from napari_correlax.evaluate import compare as compare_module
from napari_correlax.evaluate import image_work
from napari_correlax.evaluate.split_run import Prefetcher

SHAPE = (320, 224)
N_IMAGES = 3
METHODS = "prediction,correlax,gradcam"
ARGS = ["--stride", "64", "--masks", "16", "--no-adaptive", "--no-focus", "--device", "cpu",
        "--threads", "1", "--batch-size", "32", "--methods", METHODS]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path_factory.mktemp("shared") / "data", N_IMAGES, seed=11,
                               shape=SHAPE, test_fraction=1.0)


class Calls:
    """Counting wrappers of what reads, prepares and predicts: the file read, the
    preparation's own work (``as_pixels``, which a prepared image served from the shared
    work never reaches) and the prediction pass (``run_unmasked``, which the prediction
    method and CorRELAX both run unless it is served)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from napari_correlax.maps import mask_engine, sliding

        self.read: Counter[str] = Counter()
        self.prepare: Counter[str] = Counter()
        self.predict: Counter[str] = Counter()
        real_read, real_pixels = image_work.read_record, sliding.as_pixels
        real_pass = mask_engine.run_unmasked

        def read(record, **kwargs):
            self.read[Path(record.path).stem] += 1
            return real_read(record, **kwargs)

        def pixels(image):
            self.prepare[Path(image.path).stem] += 1
            return real_pixels(image)

        def full_pass(feeder, todo):
            self.predict[Path(feeder.prep.meta["source"]).stem] += 1
            return (yield from real_pass(feeder, todo))

        monkeypatch.setattr(image_work, "read_record", read)
        monkeypatch.setattr(sliding, "as_pixels", pixels)
        monkeypatch.setattr(mask_engine, "run_unmasked", full_pass)


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory, dataset, small_model):
    """A compare run of three methods, counting reads, preparations and prediction passes."""
    out = tmp_path_factory.mktemp("shared") / "out"
    with pytest.MonkeyPatch.context() as mp:
        calls = Calls(mp)
        assert main(["compare", str(dataset), "--out", str(out), "--model", str(small_model),
                     *ARGS]) == 0
    return out, calls


def test_each_image_is_read_prepared_and_predicted_once_for_three_methods(shared_run):
    _, calls = shared_run
    assert len(calls.read) == N_IMAGES
    assert set(calls.read) == set(calls.prepare) == set(calls.predict)
    # Without sharing: 3 preparations (one per method) + 1 for the second mask draw, and
    # 2 prediction passes (the prediction method's and CorRELAX's).
    assert list(calls.read.values()) == [1] * N_IMAGES
    assert list(calls.prepare.values()) == [1] * N_IMAGES
    assert list(calls.predict.values()) == [1] * N_IMAGES


@contextlib.contextmanager
def nothing_shared(work, model):
    yield work


def test_a_shared_run_writes_what_a_run_without_sharing_writes(shared_run, dataset,
                                                              small_model, tmp_path,
                                                              monkeypatch):
    shared, _ = shared_run
    # Every method does its own work: no image prepared ahead, nothing served.
    monkeypatch.setattr(compare_module, "sharing", nothing_shared)
    monkeypatch.setattr(compare_module, "lays_windows", lambda settings: False)
    alone = tmp_path / "alone"
    assert main(["compare", str(dataset), "--out", str(alone), "--model", str(small_model),
                 *ARGS]) == 0
    for name in ("compare.csv", "paired.csv", "pointing-verdicts.csv"):
        assert (shared / name).read_text() == (alone / name).read_text(), name
    files = sorted(p.relative_to(shared) for p in (shared / "cache").rglob("*.npz"))
    assert len(files) == 3 * N_IMAGES
    for rel in files:
        with np.load(shared / rel) as a, np.load(alone / rel) as b:
            arrays = [k for k in a.files if a[k].dtype.kind in "fiub"]
            assert "prediction" in arrays
            for key in arrays:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{rel}: {key}")


def test_a_bad_file_in_the_middle_is_reported_once_and_skipped(dataset, small_model,
                                                               tmp_path, monkeypatch):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    bad = sorted((data / "images").rglob("*.dicom"))[1]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated after the header
    calls = Calls(monkeypatch)
    out = tmp_path / "out"
    assert main(["compare", str(data), "--out", str(out), "--model", str(small_model),
                 "--check", "none", *ARGS]) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert list(doc["failed"]) == [bad.stem]
    assert str(bad) in doc["failed"][bad.stem]
    assert len(calls.read) == N_IMAGES and set(calls.read.values()) == {1}
    assert bad.stem not in calls.prepare and len(calls.prepare) == N_IMAGES - 1
    verdicts = {row["image_id"] for row in csv.DictReader(
        open(out / "pointing-verdicts.csv", encoding="utf-8"))}
    assert bad.stem not in verdicts and len(verdicts) == N_IMAGES - 1


# -- the prefetcher ---------------------------------------------------------------------
def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("correlax-prefetch")]


def test_the_next_record_loads_while_the_current_one_computes():
    started = {name: threading.Event() for name in "abc"}

    def load(name):
        started[name].set()
        return name.upper()

    with Prefetcher(load, list("abc")) as ahead:
        assert ahead.take("a") == "A"
        # b's load runs on the other thread while "a" is being computed here
        assert started["b"].wait(timeout=30)
        assert ahead.take("b") == "B"
        with pytest.raises(ValueError, match="order"):
            ahead.take("a")
        assert ahead.take("c") == "C"
    assert not prefetch_threads()


def test_an_interrupt_leaves_no_prefetch_thread_and_skips_the_rest():
    loaded = []

    def load(name):
        loaded.append(name)
        return name

    with pytest.raises(KeyboardInterrupt), Prefetcher(load, list("abcd")) as ahead:
        ahead.take("a")
        raise KeyboardInterrupt
    assert not prefetch_threads()
    assert loaded in (["a"], ["a", "b"])  # at most one ahead, nothing after the stop


def test_a_load_error_is_raised_once_by_its_take():
    def load(name):
        if name == "b":
            raise RuntimeError("broken b")
        return name

    with Prefetcher(load, list("abc")) as ahead:
        assert ahead.take("a") == "a"
        with pytest.raises(RuntimeError, match="broken b"):
            ahead.take("b")
        assert ahead.take("c") == "c"


def test_closing_a_compare_run_midway_leaves_no_prefetch_thread(dataset, small_model,
                                                                tmp_path):
    from napari_correlax.evaluate.compare import CompareConfig, compare_steps
    from napari_correlax.maps.runtime import Progress
    from napari_correlax.maps.settings import MapSettings

    config = CompareConfig(dataset, tmp_path / "out", ["prediction"], model=small_model,
                           settings=MapSettings(stride=64, device="cpu", threads=1))
    steps = compare_steps(config)
    for event in steps:
        if event == Progress("image", 1, N_IMAGES):
            break
    steps.close()
    assert not prefetch_threads()
    done = [p for p in (tmp_path / "out" / "cache").rglob("*.json")
            if p.name != "settings.json"]
    assert len(done) == 1


# -- the peak flags ---------------------------------------------------------------------
def peak_and_runner_up(values: np.ndarray, mask: np.ndarray, apart: int):
    """By a loop: the evaluated cell with the largest value (first in raster order), and
    the largest among evaluated cells at least ``apart`` cells away in row or column."""
    cells = [(i, j) for i in range(values.shape[0]) for j in range(values.shape[1])
             if mask[i, j]]
    peak = max(cells, key=lambda c: (values[c], -c[0], -c[1]))
    far = [c for c in cells if max(abs(c[0] - peak[0]), abs(c[1] - peak[1])) >= apart]
    other = max(far, key=lambda c: (values[c], -c[0], -c[1])) if far else None
    return peak, other


def flag_text(value: bool | None) -> str:
    return "" if value is None else str(value).lower()


def test_compare_peak_flags_match_a_direct_second_draw(shared_run, small_model):
    from napari_correlax.evaluate.pointing import PeakRedraw
    from napari_correlax.io import read_mammogram
    from napari_correlax.io.vindr import load_vindr
    from napari_correlax.maps.settings import MapSettings
    from napari_correlax.models import load_classifier

    out, _ = shared_run
    doc = json.loads((out / "compare.json").read_text())
    settings = MapSettings.from_dict(doc["settings"]["correlax"])
    key = doc["keys"]["correlax"]
    model = load_classifier(small_model, device="cpu")
    records = {r.image_id: r for r in load_vindr(Path(doc["data"])).split("test")}
    rows = list(csv.DictReader(open(out / "pointing-verdicts.csv", encoding="utf-8")))
    checked = 0
    for row in rows:
        if row["settings"] != key or row["label"] == "No Finding":
            assert row["nonzero"] == row["separated"] == ""  # other kinds, normal rows
            continue
        assert row["map"] == "correlation>0"
        record = records[row["image_id"]]
        with np.load(out / "cache" / key / f"{row['image_id']}.npz") as z:
            names = [str(v) for v in z["labels"]]
            c = names.index(row["label"])
            apart = math.ceil(int(z["window"]) / int(z["stride"]))
            peak, other = peak_and_runner_up(z["correlation"][c], z["window_mask"], apart)
        redraw = PeakRedraw(read_mammogram(record.path), model, settings)
        fresh = redraw([peak] if other is None else [peak, other])
        value, ci = fresh[0][0][c], fresh[0][1][c]
        assert row["nonzero"] == flag_text(bool(abs(value) > ci))
        separated = None if other is None else bool(value - ci > fresh[1][0][c]
                                                    + fresh[1][1][c])
        assert row["separated"] == flag_text(separated)
        checked += 1
    assert checked >= 2
    assert {r["nonzero"] for r in rows if r["settings"] == key
            and r["label"] != "No Finding"} <= {"true", "false"}


class FixedSecondDraw:
    """Stand-in for ``explain_windows``: every window's correlation and half-width are
    ``rho`` and ``half`` for every label."""

    def __init__(self, rho: float, half: float) -> None:
        self.rho, self.half = rho, half
        self.windows = 0

    def __call__(self, model, crops, **kwargs):
        n = (len(crops), len(model.labels))
        self.windows += len(crops)
        return types.SimpleNamespace(correlation=np.full(n, self.rho, np.float32),
                                     correlation_ci=np.full(n, self.half, np.float32))


def sure_first_draw(monkeypatch):
    """Make the map's own intervals tiny, so every first-draw interval excludes 0."""
    from napari_correlax.maps import image_explain

    real = image_explain.explain_steps

    def steps(image, model, settings):
        result = yield from real(image, model, settings)
        result.extra["correlation_ci"] = np.full_like(result.extra["correlation_ci"], 1e-9)
        return result

    monkeypatch.setattr(image_explain, "explain_steps", steps)


@pytest.mark.parametrize(("rho", "half", "nonzero"), [(0.01, 0.5, "false"),
                                                      (0.9, 0.1, "true")])
def test_nonzero_follows_the_second_draw_not_the_first(rho, half, nonzero, dataset,
                                                       small_model, tmp_path, monkeypatch):
    from napari_correlax.maps import correlax

    sure_first_draw(monkeypatch)
    second = FixedSecondDraw(rho, half)
    monkeypatch.setattr(correlax, "explain_windows", second)
    out = tmp_path / "eval"
    assert main(["evaluate", str(dataset), "--out", str(out), "--model", str(small_model),
                 "--no-froc", *ARGS[:-2]]) == 0
    every = list(csv.DictReader(open(out / "pointing-verdicts.csv", encoding="utf-8")))
    rows = [r for r in every if r["map"] == "correlation>0" and r["label"] != "No Finding"]
    assert rows and second.windows > 0
    for row in rows:
        assert abs(float(row["max_value"])) > float(row["ci"])  # the first draw excludes 0
        assert row["nonzero"] == nonzero
    assert all(r["nonzero"] == "" for r in every if r["map"].startswith("prediction"))
    # resumed: the stored draw is read back, nothing is drawn again
    second.windows = 0
    assert main(["evaluate", str(dataset), "--out", str(out), "--model", str(small_model),
                 "--no-froc", *ARGS[:-2]]) == 0
    again = [r for r in csv.DictReader(open(out / "pointing-verdicts.csv", encoding="utf-8"))
             if r["map"] == "correlation>0" and r["label"] != "No Finding"]
    assert second.windows == 0 and again == rows


def test_a_record_without_the_second_draw_gets_it_from_the_cached_maps(dataset, small_model,
                                                                        tmp_path, monkeypatch):
    from napari_correlax.maps import correlax, image_explain

    out = tmp_path / "eval"
    args = ["evaluate", str(dataset), "--out", str(out), "--model", str(small_model),
            "--no-froc", *ARGS[:-2]]
    assert main(args) == 0
    records = [p for p in (out / "cache").rglob("*.json") if p.name != "settings.json"]
    for path in records:  # as a cache written before the second draw existed
        doc = json.loads(path.read_text())
        doc.pop("redraw")
        path.write_text(json.dumps(doc))
    maps_made = []
    real_steps = image_explain.explain_steps

    def counted(image, model, settings):
        maps_made.append(1)
        return (yield from real_steps(image, model, settings))

    monkeypatch.setattr(image_explain, "explain_steps", counted)
    second = FixedSecondDraw(0.9, 0.1)
    monkeypatch.setattr(correlax, "explain_windows", second)
    assert main(args) == 0
    assert not maps_made and second.windows > 0  # maps from the cache, a fresh draw
    stored = [json.loads(p.read_text())["redraw"] for p in records]
    assert any(stored) and all(
        np.allclose(doc["correlation"], 0.9) and np.allclose(doc["ci"], 0.1)
        for doc in stored if doc)  # the stand-in's draw, stored


def test_the_shared_work_seam_serves_only_the_thread_that_entered_it():
    from concurrent.futures import ThreadPoolExecutor

    from napari_correlax.maps import shared, sliding

    class Server:
        def __init__(self):
            self.asked = []

        def prepared(self, image, model, layout):
            self.asked.append(layout)
            return "kept"

    class Model:
        input_size = 32

    server = Server()
    image = np.zeros((64, 48), np.float32)
    with shared.serving(server):
        assert sliding.prepare_image(image, Model(), stride=16) == "kept"
        with ThreadPoolExecutor(1) as pool:  # another thread: prepared as usual
            other = pool.submit(sliding.prepare_image, image, Model(), stride=16).result()
    assert other != "kept" and other.grid.stride == 16
    assert server.asked == [(16, sliding.DEFAULT_MIN_TISSUE, sliding.DEFAULT_REACH)]
    assert shared.current() is None  # left when the block ends
