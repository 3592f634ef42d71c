"""The work on one image that every map method of a split run shares (docs/method.md §10).

``correlax evaluate`` and ``correlax compare`` run one or several map methods on each
image of a split. The methods take an image and a model and would each read the file,
find the breast, lay the window grid, fuse the channels and (prediction and CorRELAX)
run the prediction pass over the tissue windows. Here that is done once per image and
kept in an :class:`ImageWork`:

- the image, read from its file (:func:`~.split_run.read_record`, with the model's VOI
  LUT setting), and the image prepared for the run's window layout (breast ROI, window
  grid, tissue windows, CLAHE fusion:
  :func:`~napari_correlax.maps.sliding.prepare_image`), both by :func:`load_work`, which
  the split runner calls on its background thread for image ``k + 1`` while image ``k``
  computes (:class:`~.split_run.Prefetcher`);
- the prediction pass over the tissue windows (each window's features ``h`` and label
  probabilities ``ŷ``), run by the first method that needs it and kept for the others.

:func:`sharing` hands the work to the methods through the maps' seam for shared work
(:mod:`napari_correlax.maps.shared`): while it is active, in this thread,
:func:`~napari_correlax.maps.sliding.prepare_image` (as the prediction pass, CorRELAX, the
windowed CAMs and :class:`~.pointing.PeakRedraw` call it) and the prediction pass over
all tissue windows (:func:`~napari_correlax.maps.mask_engine.unmasked_pass`, which the
prediction method and CorRELAX both run) are answered from the work when they are called
with its image, its model and its window layout. Every
other call runs as usual: another image (the background thread's next one, which never
sees the seam), another layout, a subset of the windows (a coarse-first pass), the
global CAM mode. The maps are the numbers a run without sharing gives: the same
functions on the same inputs in the same batches.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..maps.methods import WINDOW_FIELDS, get_method
from ..maps.runtime import Progress
from ..maps.shared import Layout
from .split_run import read_record

if TYPE_CHECKING:
    from ..io.image import Mammogram
    from ..io.vindr import ImageRecord
    from ..maps.cache import ResultCache
    from ..maps.runtime import Runtime
    from ..maps.settings import MapSettings
    from ..maps.shared import PassSteps
    from ..maps.sliding import PreparedImage, WindowFeeder
    from ..models.protocols import ImageModelLike
    from .pointing import StoredRedraw

__all__ = ["ImageWork", "image_maps", "is_done", "lays_windows", "load_work", "sharing",
           "stored_redraw"]



def _layout(stride: int, min_tissue: float, reach: str) -> Layout:
    return (int(stride), float(min_tissue), str(reach))


def lays_windows(settings: MapSettings) -> bool:
    """Whether ``settings.method`` lays the §6 window grid over the image (prediction,
    CorRELAX, the windowed CAMs), so that a prepared image serves it."""
    uses = get_method(settings.method).uses
    return WINDOW_FIELDS <= uses and settings.option("mode", "windowed") == "windowed"


@dataclass
class ImageWork:
    """What the methods of a run share for one image (module docstring).

    ``mammogram`` is None when the file could not be read; ``error`` then says why,
    naming the file. ``prepared`` is the image prepared for ``layout`` (None when no
    method lays windows, or when preparing failed: each method then prepares it itself
    and meets the same error). ``seconds`` holds the ``read`` and ``prepare`` times.
    """

    record: ImageRecord
    mammogram: Mammogram | None = None
    error: str | None = None
    prepared: PreparedImage | None = None
    layout: Layout | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    passes: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def tissue_windows(self) -> np.ndarray:
        """Flat grid indices of the prepared image's evaluated windows, in raster order."""
        if self.prepared is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.prepared.active.ravel())


def load_work(record: ImageRecord, model: ImageModelLike, layout: MapSettings | None
              ) -> ImageWork:
    """Read ``record``'s image as the model's preprocessing asks (VOI LUT) and prepare
    it for ``layout``'s stride, minimum tissue and reach (None: read only).

    Safe on a background thread (it only reads the model's input size and preprocessing
    profile). A file that cannot be read gives a work with ``error`` set; nothing is
    raised for bad input.
    """
    from ..maps import sliding
    from ..preprocess import preprocessing_of

    work = ImageWork(record)
    t0 = time.perf_counter()
    try:
        work.mammogram = read_record(record, voi_lut=preprocessing_of(model).voi_lut)
    except CorrelaxError as exc:
        work.error = str(exc)
        return work
    except MemoryError:
        work.error = f"{record.path}: out of memory while reading the image"
        return work
    t1 = time.perf_counter()
    work.seconds["read"] = round(t1 - t0, 3)
    if layout is not None:
        try:
            work.prepared = sliding.prepare_image(
                work.mammogram, model, stride=layout.stride, min_tissue=layout.min_tissue,
                reach=layout.reach)
            work.layout = _layout(layout.stride, layout.min_tissue, layout.reach)
        except (CorrelaxError, MemoryError):
            pass  # each method prepares the image itself and records the same error
        work.seconds["prepare"] = round(time.perf_counter() - t1, 3)
    return work


def image_maps(work: ImageWork, model: ImageModelLike, settings: MapSettings,
               cache: ResultCache) -> dict[str, Any]:
    """The maps of ``work``'s image by ``settings.method``, from ``cache`` or computed
    into it (call it inside :func:`sharing`), and for a method that makes correlation
    maps the second mask draw of the peak flags (:func:`~.pointing.peak_redraw_record`).

    Returns the fields to add to the image's cache record: ``{"redraw": record or
    None}`` for a correlation method, else nothing. Raises CorrelaxError for an image
    the method cannot map (the caller records it).
    """
    from ..maps.cache import image_maps_steps
    from ..maps.runtime import drain
    from .pointing import peak_redraw_record

    if work.mammogram is None:
        raise CorrelaxError(work.error or "the image was not read", work.record.path)
    result = drain(image_maps_steps(work.mammogram, work.record.image_id, model, settings,
                                    cache))
    if not _correlation_method(settings):
        return {}
    return {"redraw": peak_redraw_record(work.mammogram, model, settings, result,
                                         work.record.boxes)}


def is_done(cache: ResultCache, image_id: str, settings: MapSettings) -> bool:
    """Whether an image needs no more work under ``cache``: its maps are done and, for a
    correlation method, the second mask draw is stored beside them (records written
    before it existed are completed from the cached maps)."""
    if not cache.is_done(image_id):
        return False
    return not _correlation_method(settings) or "redraw" in (cache.load_info(image_id) or {})


def stored_redraw(info: dict[str, Any] | None) -> StoredRedraw | None:
    """The second mask draw an image's cache record holds (:func:`image_maps`), or None
    (none, or a damaged one: the flags are then left untested)."""
    from .pointing import StoredRedraw

    doc = (info or {}).get("redraw")
    if not doc:
        return None
    try:
        return StoredRedraw(doc)
    except CorrelaxError:
        return None


def _correlation_method(settings: MapSettings) -> bool:
    return "correlation" in get_method(settings.method).kinds


@contextlib.contextmanager
def sharing(work: ImageWork, model: ImageModelLike) -> Iterator[ImageWork]:
    """Serve ``work`` to the map methods run inside the block (module docstring;
    :func:`napari_correlax.maps.shared.serving`). ``model`` is the model the methods get
    (served calls must pass this very object)."""
    from ..maps.shared import serving

    with serving(_Served(work, model)):
        yield work


def _runtime_key(rt: Runtime) -> tuple[Any, ...]:
    """What of a runtime can change the prediction pass's numbers or its batches."""
    return (rt.device, rt.precision, getattr(rt, "engine", "torch"), int(rt.batch_size))


class _Served:
    """The :class:`~napari_correlax.maps.shared.WorkServer` of :func:`sharing`: answers
    for the work's image, model and layout, None for anything else."""

    def __init__(self, work: ImageWork, model: ImageModelLike) -> None:
        self.work = work
        self.model = model

    def _ours(self, image: Any, model: Any, layout: Layout) -> bool:
        work = self.work
        return (work.prepared is not None and image is work.mammogram and model is self.model
                and layout == work.layout)

    def prepared(self, image: Any, model: Any, layout: Layout) -> PreparedImage | None:
        return self.work.prepared if self._ours(image, model, _layout(*layout)) else None

    def prediction_pass(self, feeder: WindowFeeder, todo: np.ndarray,
                        run: Callable[[WindowFeeder, np.ndarray], PassSteps]
                        ) -> PassSteps | None:
        """The prediction pass of all tissue windows of the shared image, once per
        runtime; any other pass is not served."""
        work = self.work
        if feeder.prep is not work.prepared or not np.array_equal(todo, work.tissue_windows):
            return None
        return self._kept_pass(feeder, run)

    def _kept_pass(self, feeder: WindowFeeder, run: Callable[[WindowFeeder, np.ndarray],
                                                             PassSteps]) -> PassSteps:
        every = self.work.tissue_windows
        key = _runtime_key(feeder.rt)
        if key in self.work.passes:
            yield Progress("window", len(every), len(every))
        else:
            self.work.passes[key] = yield from run(feeder, every)
        h, y = self.work.passes[key]
        return h.copy(), y.copy()


