"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeVar

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
                   help="evaluate exactly --masks masks per explained window (no adaptive stop)")
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
    from ..maps.settings import DEFAULT_BATCH_SIZE

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
    }
    return MapSettings(**{k: v for k, v in fields.items() if v is not None})


def runtime_from(args: argparse.Namespace) -> Runtime:
    """A :class:`Runtime` from the runtime options."""
    from ..maps.runtime import Runtime

    return Runtime(
        device=args.device, precision=args.precision, batch_size=args.batch_size,
        threads=args.threads,
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


def run_with_progress(steps: Generator[Progress, None, _R], label: str) -> _R:
    """Drain a progress generator, reporting on stderr with the time left.

    On a terminal: a one-line bar redrawn in place. Otherwise (a log file, a batch job):
    one line every :data:`LOG_EVERY_S` seconds and one when a stage ends.
    """
    import time

    from ..maps.runtime import TimeLeft

    tty = sys.stderr.isatty()
    left = TimeLeft()
    last_line = 0.0
    while True:
        try:
            event = next(steps)
        except StopIteration as stop:
            if tty:
                sys.stderr.write("\n")
            return stop.value
        left.update(event)
        if not event.total:
            continue
        eta = left.text()
        if tty:
            bar = "#" * int(30 * event.done / event.total)
            sys.stderr.write(f"\r{label} {event.stage:<8} [{bar:<30}] {event.done}/{event.total}"
                             f"  {eta:<20}")
            sys.stderr.flush()
        elif time.monotonic() - last_line >= LOG_EVERY_S or event.done == event.total:
            last_line = time.monotonic()
            print(f"{label}: {event.stage} {event.done}/{event.total} "
                  f"({event.done / event.total:.0%}){', ' + eta if eta else ''}",
                  file=sys.stderr, flush=True)


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


def map_images(args: argparse.Namespace, method: str, command: str,
               write: Callable[[Path, Mammogram, MapResult, Path], None]) -> int:
    """Run ``method`` on each of ``args.images`` with the options' settings and hand each
    result to ``write(image path, Mammogram, MapResult, output stem)``.

    An image that fails (reading, the maps, or ``write`` raising CorrelaxError) is
    reported on stderr as one line (``correlax <command>: error: <file>: <reason>``) and
    skipped. Loads the model once; on a CPU lets glibc keep freed memory. Returns the
    exit status: 2 when any image failed, else 0.
    """
    from ..io import read_mammogram
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
            result = run_with_progress(run_method(mammo, model, settings), path.name)
            write(path, mammo, result, args.out / path.stem)
        except CorrelaxError as exc:
            print(f"correlax {command}: error: {exc}", file=sys.stderr)
            failures += 1
    return 2 if failures else 0
