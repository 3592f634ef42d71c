"""One runner for every job that computes something per image of a data set split.

``correlax evaluate`` (:mod:`.runner`), ``correlax compare`` (:mod:`.compare`) and
``correlax gmic evaluate`` (:mod:`napari_correlax.gmic.evaluate`) share the same
skeleton, written here once (:func:`split_steps`):

1. read the VinDr-layout index and take the split (an empty split is an error naming
   the splits there are), keep its first ``limit`` images;
2. set aside the images whose file is missing; join the ``torchrun`` process group
   (:func:`~napari_correlax.distributed.join`, gloo) and let the job open its models
   and caches and choose the images it uses (:meth:`SplitJob.select`);
3. check those files (:func:`~napari_correlax.io.vindr.check_readable`), each rank its
   share, gather the reasons, and yield one :class:`Excluded` (the same on every rank)
   before any model work; no usable image left is an error;
4. rank ``r`` of ``N`` computes usable images ``r, r + N, r + 2N, …`` that the job has
   not cached yet (:meth:`SplitJob.is_done`, :meth:`SplitJob.compute`), yielding
   ``Progress("image", done, total)``; a job that can load an image apart from computing
   it (a ``prefetch(record)`` method, :class:`Prefetcher`) gets the next image loaded on
   a background thread while the current one computes, and receives it as
   ``compute(record, loaded)``;
5. all ranks meet at a barrier; rank 0 returns :meth:`SplitJob.merge` of the
   :class:`SplitImages`, the other ranks None.

Each image is computed alone (a job records an image's error in its cache instead of
raising), so the tables do not depend on the number of processes. :func:`read_record`
reads an image and checks its size against the CSV, for every job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import CorrelaxError

if TYPE_CHECKING:
    from ..distributed import ProcessGroup
    from ..io.image import Mammogram
    from ..io.vindr import ImageRecord, VinDrIndex
    from ..maps.runtime import Progress

__all__ = ["CHECKS", "Excluded", "Prefetcher", "SplitImages", "SplitJob", "SplitSource",
           "read_record", "split_steps"]

#: File checks before a run: ``quick`` (headers), ``decode`` (full read) or ``none``.
CHECKS = ("quick", "decode", "none")

_R = TypeVar("_R", covariant=True)


@dataclass(frozen=True)
class Excluded:
    """Yielded once by a split run before any model work: the images left out.

    ``missing`` lists image ids whose file does not exist; ``unreadable`` maps image ids
    to the reason the file check gave.
    """

    missing: list[str]
    unreadable: dict[str, str]


@dataclass(frozen=True)
class SplitSource:
    """Which images a split run works on and how it runs.

    ``data``: the VinDr-layout folder; ``split``: its split to use; ``limit``: keep the
    first N images of the split (None: all); ``check``: one of :data:`CHECKS`;
    ``device``: asked device (``auto``, ``cpu``, ``cuda``, …; each rank's is chosen by
    :func:`~napari_correlax.distributed.join`); ``timeout_hours``: how long a rank waits
    for the others at a barrier; ``scope``: words added to the "no usable image"
    message (e.g. ``" for these outputs"``).
    """

    data: str | os.PathLike[str]
    split: str = "test"
    limit: int | None = None
    check: str = "quick"
    device: str = "auto"
    timeout_hours: float = 24.0
    scope: str = ""

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise CorrelaxError(f"check must be one of {list(CHECKS)}, not {self.check!r}")


@dataclass
class SplitImages:
    """What rank 0 hands to :meth:`SplitJob.merge`.

    ``records``: the split after the limit (missing files included, in CSV order);
    ``usable``: the images the job selected that passed the file check (what the ranks
    computed); ``missing``: ids of images whose file does not exist; ``unreadable``: id →
    reason of the file check; ``seconds``: wall time since the run started.
    """

    data: Path
    index: VinDrIndex
    records: list[ImageRecord]
    usable: list[ImageRecord]
    missing: list[str]
    unreadable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class SplitJob(Protocol[_R]):
    """What a job supplies to :func:`split_steps` (one object per rank)."""

    def select(self, present: list[ImageRecord]) -> list[ImageRecord]:
        """The images (of those whose file exists, in order) this job computes."""

    def start(self, images: SplitImages, main: bool) -> None:
        """Called on every rank once the usable images are known (``images.usable``),
        before any :meth:`compute`; ``main`` is True on rank 0 (which writes shared
        files)."""

    def is_done(self, record: ImageRecord) -> bool:
        """True when the image's results are already cached."""

    def compute(self, record: ImageRecord) -> None:
        """Compute one image into the cache; record errors there rather than raise.

        A job that also has ``prefetch(record) -> loaded`` (read on a background thread,
        errors kept in what it returns rather than raised) is called as
        ``compute(record, loaded)`` (module docstring, step 4)."""

    def merge(self, images: SplitImages) -> _R:
        """Rank 0: read every usable image's cached results and write the outputs."""


def read_record(record: ImageRecord, *, voi_lut: bool = False) -> Mammogram:
    """Read an image of a data set and check its size against the CSV's.

    Raises CorrelaxError (naming the file) for an unreadable image or one whose
    height × width in pixels differs from the CSV's (boxes are in those pixels); a CSV
    height or width of 0 means unknown and is not checked.
    """
    from ..io import read_mammogram

    mammogram = read_mammogram(record.path, voi_lut=voi_lut)
    shape = mammogram.pixels.shape
    if record.height and record.width and shape != (record.height, record.width):
        raise CorrelaxError(f"image is {shape[0]}×{shape[1]} pixels but the CSV says "
                            f"{record.height}×{record.width}", record.path)
    return mammogram


def load_split(source: SplitSource) -> tuple[Path, VinDrIndex, list[ImageRecord]]:
    """The data folder, its index and the split's first ``limit`` images.

    Raises CorrelaxError for a folder that is no data set or a split without images
    (naming the splits there are).
    """
    from ..io.vindr import load_vindr

    data = Path(source.data).expanduser()
    index = load_vindr(data)
    records = index.split(source.split)
    if not records:
        splits = sorted({r.split for r in index.images})
        raise CorrelaxError(f"split {source.split!r} has no images (splits here: "
                            f"{', '.join(splits) or 'none'})", data)
    if source.limit is not None:
        records = records[: max(int(source.limit), 0)]
    return data, index, records


def shard(records: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Rank ``rank``'s share of ``records``: items ``rank, rank + world_size, …``."""
    return list(records[rank::world_size])


def _checked(records: list[ImageRecord], check: str, group: ProcessGroup
             ) -> Generator[Progress, None, dict[str, str]]:
    """File check of ``records`` shared among the ranks; every rank gets all reasons."""
    from ..io.vindr import check_readable
    from ..maps.runtime import Progress

    failures: dict[str, str] = {}
    if check != "none":
        mine = shard(records, group.rank, group.world_size)
        yield Progress("check", 0, len(mine))
        failures = {r.image_id: why for r, why in check_readable(mine, decode=check == "decode")}
        yield Progress("check", len(mine), len(mine))
    unreadable: dict[str, str] = {}
    for part in group.gather(failures):
        unreadable.update(part)
    return unreadable


def _computed(job: SplitJob[Any], usable: list[ImageRecord], group: ProcessGroup
              ) -> Generator[Progress, None, None]:
    """This rank's share of ``usable``, computed unless cached."""
    from ..maps.runtime import Progress

    mine = shard(usable, group.rank, group.world_size)
    yield Progress("image", 0, len(mine))
    pending = [not job.is_done(r) for r in mine]
    load = getattr(job, "prefetch", None)
    if load is None:
        for done, (record, due) in enumerate(zip(mine, pending), start=1):
            if due:
                job.compute(record)
            yield Progress("image", done, len(mine))
        return
    with Prefetcher(load, [r for r, due in zip(mine, pending) if due]) as ahead:
        for done, (record, due) in enumerate(zip(mine, pending), start=1):
            if due:
                job.compute(record, ahead.take(record))
            yield Progress("image", done, len(mine))


class Prefetcher:
    """``load(record)`` of a list of records, one ahead, on a background thread.

    :meth:`take` starts the load of the record after the one asked for, then returns the
    asked one's (waiting for it if needed): the thread loads image ``k + 1`` while the
    caller computes image ``k`` (depth 1: at most two loaded images are held). Records
    are taken in the order given. An exception raised by ``load`` is raised by
    :meth:`take` of that record, once. Leaving the ``with`` block (the end, an error, a
    KeyboardInterrupt or a closed generator) drops the load not started and waits for a
    running one to end, so no thread outlives it.
    """

    def __init__(self, load: Callable[[Any], Any], records: Sequence[Any]) -> None:
        self._load = load
        self._records = iter(list(records))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="correlax-prefetch")
        self._ahead = self._submit()

    def _submit(self) -> tuple[Any, Future[Any]] | None:
        record = next(self._records, None)
        return None if record is None else (record, self._pool.submit(self._load, record))

    def take(self, record: Any) -> Any:
        """The load of ``record``, which must be the next record of the list (ValueError
        otherwise)."""
        if self._ahead is None or self._ahead[0] != record:
            raise ValueError("records must be taken in the order they were given")
        ready = self._ahead[1]
        self._ahead = self._submit()
        return ready.result()

    def close(self) -> None:
        """Drop the loads not started and wait for the running one (idempotent)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_steps(
    source: SplitSource,
    open_job: Callable[[ProcessGroup], SplitJob[_R]],
) -> Generator[Progress | Excluded, None, _R | None]:
    """Run a job over a split (module docstring); yields this rank's
    ``Progress("check" | "image", done, total)`` and one :class:`Excluded`.

    ``open_job(group)`` is called once per rank after joining the process group (the
    group's ``device`` is this rank's) and returns the :class:`SplitJob`. Returns the
    job's merge on rank 0, None on the other ranks.

    Raises:
        CorrelaxError: no data set, an empty split, no usable image, or what the job
            raises when it opens.
    """
    from ..distributed import join

    t_start = time.perf_counter()
    data, index, records = load_split(source)
    missing_paths = {str(p) for p in index.missing}
    missing = [r.image_id for r in records if str(r.path) in missing_paths]
    present = [r for r in records if str(r.path) not in missing_paths]
    group = join(source.device, gpu_backend=False, timeout_hours=source.timeout_hours)
    try:
        job = open_job(group)
        wanted = job.select(present)
        unreadable = yield from _checked(wanted, source.check, group)
        usable = [r for r in wanted if r.image_id not in unreadable]
        yield Excluded(list(missing), dict(unreadable))
        if not usable:
            raise CorrelaxError(f"no usable image in split {source.split!r}{source.scope} "
                                f"({len(missing)} missing, {len(unreadable)} unreadable)", data)
        images = SplitImages(data, index, records, usable, missing, unreadable)
        job.start(images, group.main)
        yield from _computed(job, usable, group)
        group.barrier()
        if not group.main:
            return None
        images.seconds = time.perf_counter() - t_start
        return job.merge(images)
    finally:
        group.close()
