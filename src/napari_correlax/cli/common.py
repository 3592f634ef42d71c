"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Generator, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from ..errors import CorrelaxError

if TYPE_CHECKING:
    from ..io.image import Mammogram
    from ..maps.result import MapResult
    from ..maps.runtime import Progress, Runtime
    from ..maps.settings import MapSettings

#: What each subcommand module's ``register`` receives: the action returned by
#: ``ArgumentParser.add_subparsers()``, whose ``add_parser`` makes the subcommand's parser.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_R = TypeVar("_R")


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """``IMAGE...``, ``--model``, ``--out``: shared by the map commands."""
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="DICOM, PNG, TIFF or PGM files")
    parser.add_argument("--model", default=None,
                        help="checkpoint (.safetensors); default: demo model")
    parser.add_argument("--out", required=True, type=Path, help="output folder")


def add_cam_mode_option(p: argparse.ArgumentParser) -> None:
    """``--mode``: how the CAM methods run (docs/method.md §8)."""
    from ..maps.cam import mode_title

    p.add_argument("--mode", choices=("windowed", "global"), default="windowed",
                   help=f"CAM methods: {mode_title('windowed')} (default), or "
                   f"{mode_title('global')}")


def add_map_options(parser: argparse.ArgumentParser, *, correlax: bool = True,
                    seed: bool = True) -> None:
    """The :class:`~napari_correlax.maps.settings.MapSettings` options: ``--stride`` and,
    with ``correlax``, the CorRELAX engine's; defaults come from the settings module."""
    from ..maps import settings as d

    g = parser.add_argument_group("maps")
    g.add_argument("--stride", type=int, default=d.DEFAULT_STRIDE,
                   help=f"window step in pixels (default {d.DEFAULT_STRIDE})")
    g.add_argument("--reach", choices=("border", "inside"), default=d.DEFAULT_REACH,
                   help="border (default): window centres reach the breast's border, so maps "
                   "cover the skin line and the chest wall; inside: windows stay inside the "
                   "breast's bounding box (the paper's layout)")
    if seed:
        g.add_argument("--seed", type=int, default=0, help="seed of the masks (default 0)")
    if not correlax:
        return
    g.add_argument("--masks", type=int, default=d.DEFAULT_MASKS,
                   help=f"most masks per window (default {d.DEFAULT_MASKS})")
    g.add_argument("--fixed", "--no-adaptive", dest="fixed", action="store_true",
                   help="evaluate exactly --masks masks per explained window (no adaptive "
                   "stop); the windows that measure the mask design's variance get at least "
                   "two of its blocks (docs/method.md §7)")
    g.add_argument("--min-masks", type=int, default=d.DEFAULT_MIN_MASKS,
                   help=f"fewest masks per window (default {d.DEFAULT_MIN_MASKS}: with the "
                   "default design as stable as the 256 i.i.d. masks at which the paper's "
                   "Fig. 7 finds correlations stable to 0.025; use 256 with --design iid)")
    g.add_argument("--tolerance", type=float, default=d.DEFAULT_TOLERANCE,
                   help="adaptive stop once the standard error of every correlation against "
                   f"--masks masks is at most this (default {d.DEFAULT_TOLERANCE})")
    g.add_argument("--no-focus", action="store_true",
                   help="full CorRELAX on every window (default: only around the --focus-share "
                   "most suspicious windows; the rest get --min-masks)")
    g.add_argument("--focus-share", type=float, default=d.DEFAULT_FOCUS_SHARE,
                   help="share of tissue windows, those with the highest lesion probability, "
                   "that get full CorRELAX with their neighbours (default "
                   f"{d.DEFAULT_FOCUS_SHARE})")
    g.add_argument("--design", choices=d.MASK_DESIGNS, default=d.DEFAULT_DESIGN,
                   help="how the masks are drawn together (default "
                   f"{d.DEFAULT_DESIGN}; iid: independent masks, as in the paper)")
    g.add_argument("--mask-batch", type=int, default=d.DEFAULT_MASK_BATCH,
                   help=f"masked forward passes per batch (default {d.DEFAULT_MASK_BATCH})")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision``, ``--batch-size``, ``--threads``."""
    from ..maps.settings import DEFAULT_BATCH_SIZE, ENGINES

    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    group.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="autocast precision (float32 is exact; bfloat16 helps on GPUs and AMX CPUs)",
    )
    group.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                       help=f"windows per forward pass (default {DEFAULT_BATCH_SIZE})")
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    group.add_argument("--engine", default=None, choices=ENGINES,
                       help="what runs the forward passes on a CPU: torch (default), onnx "
                       "(ONNX Runtime) or openvino; the model is exported once, beside "
                       "its checkpoint; falls back to torch with a warning when the "
                       "runtime is not installed")


def add_check_option(parser: Any) -> None:
    """``--check``: the file check before a run over a data set split."""
    from ..evaluate.split_run import CHECKS

    parser.add_argument("--check", choices=CHECKS, default="quick",
                        help="file check before the run: quick (headers, default), decode "
                        "(read every image fully) or none")


def settings_from(args: argparse.Namespace, method: str) -> MapSettings:
    """The :class:`~napari_correlax.maps.settings.MapSettings` the options ask for.

    Options a command does not define keep their defaults.
    """
    from ..maps.settings import MapSettings

    given = vars(args)
    fields = {
        "method": method,
        "stride": given.get("stride"),
        "reach": given.get("reach"),
        "seed": given.get("seed"),
        "design": given.get("design"),
        "masks": given.get("masks"),
        "adaptive": None if "fixed" not in given else not given["fixed"],
        "min_masks": given.get("min_masks"),
        "tolerance": given.get("tolerance"),
        "focus": None if "no_focus" not in given else not given["no_focus"],
        "focus_share": given.get("focus_share"),
        "mask_batch": given.get("mask_batch"),
        "device": given.get("device"),
        "precision": given.get("precision"),
        "batch_size": given.get("batch_size"),
        "threads": given.get("threads"),
        "engine": given.get("engine"),
        "coarse_first": given.get("coarse_first"),
    }
    return MapSettings(**{k: v for k, v in fields.items() if v is not None})


def runtime_from(args: argparse.Namespace) -> Runtime:
    """A :class:`Runtime` from the runtime options."""
    from ..maps.runtime import Runtime

    return Runtime(
        device=args.device, precision=args.precision, batch_size=args.batch_size,
        threads=args.threads, engine=getattr(args, "engine", None) or "torch",
    )


def existing_files(paths: Iterable[str]) -> list[Path]:
    """Paths as given, each checked to exist (CorrelaxError names the first missing)."""
    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise CorrelaxError("no such file", p)
        out.append(p)
    return out


#: Seconds between two progress lines when stderr is not a terminal (a log file, a job).
LOG_EVERY_S = 5.0


#: What ``progress_of`` of :func:`run_with_progress` returns for an event: nothing to
#: draw, a :class:`Progress`, or one with a note drawn after it (e.g. the loss).
Shown: TypeAlias = "Progress | tuple[Progress, str] | None"


class _ProgressLine:
    """Progress on stderr: a bar redrawn in place on a terminal, else a line now and then."""

    def __init__(self, label: str, every_s: float) -> None:
        from ..maps.runtime import TimeLeft

        self.label = label
        self.every_s = every_s
        self.tty = sys.stderr.isatty()
        self.left = TimeLeft()
        self.last_line = float("-inf")
        self.open = False

    def show(self, event: Progress, note: str = "") -> None:
        import time

        self.left.update(event)
        if not event.total:
            return
        eta = self.left.text() if event.done < event.total else ""
        if self.tty:
            bar = "#" * int(30 * event.done / event.total)
            sys.stderr.write(f"\r{self.label} {event.stage:<8} [{bar:<30}] {event.done}/"
                             f"{event.total}{note}  {eta:<20}")
            sys.stderr.flush()
            self.open = True
        elif time.monotonic() - self.last_line >= self.every_s or event.done == event.total:
            self.last_line = time.monotonic()
            print(f"{self.label}: {event.stage} {event.done}/{event.total} "
                  f"({event.done / event.total:.0%}){note}{', ' + eta if eta else ''}",
                  file=sys.stderr, flush=True)

    def end_line(self) -> None:
        """End a bar drawn in place, so that what is printed next starts a line."""
        if self.open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.open = False


def run_with_progress(steps: Generator[Any, None, _R], label: str, *,
                      on_event: Callable[[Any], None] | None = None,
                      progress_of: Callable[[Any], Shown] | None = None,
                      every_s: float | None = None, main_only: bool = False) -> _R:
    """Drain a generator of events and return its result, reporting progress on stderr.

    Every ``correlax`` command runs its work through this. A
    :class:`~napari_correlax.maps.runtime.Progress` event, or what ``progress_of`` makes
    of another event, is shown with the time left: on a terminal a one-line bar redrawn
    in place, otherwise (a log file, a batch job) one line at most every ``every_s``
    seconds (default :data:`LOG_EVERY_S`) and one when a stage ends. Any other event
    goes to ``on_event`` (ignored without one), after a bar being drawn is ended, so
    what it prints starts a line. Under ``torchrun`` the label starts with the rank
    (``[rank 1] ``); ``main_only`` keeps every rank but 0 silent.
    """
    from ..distributed import rank, rank_tag
    from ..maps.runtime import Progress

    silent = main_only and rank() != 0
    line = _ProgressLine(f"{rank_tag()}{label}", LOG_EVERY_S if every_s is None else every_s)
    while True:
        try:
            event = next(steps)
        except StopIteration as stop:
            line.end_line()
            return stop.value
        if silent:
            continue
        shown = event if isinstance(event, Progress) else (
            progress_of(event) if progress_of is not None else None)
        if shown is None:
            line.end_line()
            if on_event is not None:
                on_event(event)
        elif isinstance(shown, Progress):
            line.show(shown)
        else:
            line.show(*shown)


def run_split_job(steps: Generator[Any, None, _R], command: str) -> _R:
    """Run a job over a data set split (``evaluate``, ``compare``, ``gmic evaluate``)
    with :func:`run_with_progress`, a line per image.

    Rank 0 names each image left out once, on stderr: the missing and unreadable files
    when the job's :class:`~napari_correlax.evaluate.split_run.Excluded` event comes
    (before any model work), then the images that failed later (the report's ``failed``).
    Returns the job's report (None on ranks other than 0).
    """
    from ..distributed import rank
    from ..evaluate.split_run import Excluded

    named: set[str] = set()

    def left_out(image_id: str, why: str) -> None:
        named.add(image_id)
        print(f"correlax {command}: left out {image_id}: {why}", file=sys.stderr)

    def on_event(event: Any) -> None:
        if not isinstance(event, Excluded) or rank() != 0:
            return
        for image_id in event.missing:
            named.add(image_id)
            print(f"correlax {command}: missing image file for {image_id}", file=sys.stderr)
        for image_id, why in event.unreadable.items():
            left_out(image_id, why)

    report = run_with_progress(steps, f"correlax {command}", on_event=on_event, every_s=0.0)
    for image_id, why in getattr(report, "failed", {}).items():
        if image_id not in named:
            left_out(image_id, why)
    return report


def tune_cpu_allocator() -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the system.

    CNN activations of a 128-image batch are ~100 MB each; glibc serves such blocks
    with fresh ``mmap`` pages and unmaps them on free, so every batch pays page faults
    for all its activations (measured: about half of CPU forward time for the ``lite``
    backbone). Raising the mmap and trim thresholds (``mallopt``) makes them reusable
    heap memory. Process-wide, so only the command line does it. Returns True when
    applied (Linux with glibc), False otherwise.
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, ctypes.c_int(1 << 30))
        ok &= libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1))
        return bool(ok)
    except (OSError, AttributeError):
        return False


def _write_preview(write: Callable[[Path, Mammogram, MapResult], None], path: Path,
                   mammo: Mammogram, coarse: MapResult) -> Progress:
    """Hand a coarse map to ``write``; the progress line says it was written."""
    from ..maps.runtime import Progress

    write(path, mammo, coarse)
    return Progress("coarse map", 1, 1)


def map_images(args: argparse.Namespace, method: str, command: str,
               write: Callable[[Path, Mammogram, MapResult, Path], None],
               preview: Callable[[Path, Mammogram, MapResult], None] | None = None) -> int:
    """Run ``method`` on each of ``args.images`` with the options' settings and hand each
    result to ``write(image path, Mammogram, MapResult, output stem)``, and each coarse
    map a run yields (:class:`~napari_correlax.maps.coarse.MapPreview`) to
    ``preview(image path, Mammogram, coarse MapResult)`` as soon as it is made.

    An image that fails (reading, the maps, or ``write`` raising CorrelaxError) is
    reported on stderr as one line (``correlax <command>: error: <file>: <reason>``) and
    skipped. Loads the model once; on a CPU lets glibc keep freed memory. Returns the
    exit status: 2 when any image failed, else 0.
    """
    from ..io import read_mammogram
    from ..maps.coarse import on_previews
    from ..maps.methods import run_method
    from ..models import load_classifier

    paths = existing_files(args.images)
    settings = settings_from(args, method)
    runtime = settings.runtime()
    if runtime.device == "cpu":
        tune_cpu_allocator()
    model = load_classifier(args.model, device=runtime.device)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in paths:
        try:
            mammo = read_mammogram(path)
            steps = run_method(mammo, model, settings)
            if preview is not None:
                steps = on_previews(steps, partial(_write_preview, preview, path, mammo))
            result = run_with_progress(steps, path.name)
            write(path, mammo, result, args.out / path.stem)
        except CorrelaxError as exc:
            print(f"correlax {command}: error: {exc}", file=sys.stderr)
            failures += 1
    return 2 if failures else 0
