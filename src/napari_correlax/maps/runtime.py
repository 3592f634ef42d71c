"""Where and how the model runs: device, precision, threads, batching of windows.

Shared by sliding-window prediction, CorRELAX and the CAM baselines so all of them
feed the model the same way (channels_last, optional autocast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload

import numpy as np

if TYPE_CHECKING:
    import torch

    from ..models.protocols import ImageModelLike, ModelLike

__all__ = [
    "Progress",
    "Runtime",
    "TimeLeft",
    "drain",
    "format_time_left",
    "inference_model",
    "resolve_device",
]

PRECISIONS = ("float32", "bfloat16", "float16")

_M = TypeVar("_M", bound="ModelLike")
_R = TypeVar("_R")


class Progress(NamedTuple):
    """A progress event yielded by long computations: ``(stage, done, total)``."""

    stage: str
    done: int
    total: int


def drain(steps: Generator[object, None, _R]) -> _R:
    """Run a progress generator (events such as :class:`Progress`) to the end and return
    its result: how the command line and the tests call the long computations."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


class TimeLeft:
    """Estimates the time left in the current stage of a run from its recent rate.

    Feed it every :class:`Progress` event; :meth:`seconds` is the remaining work of the
    latest event's stage divided by the rate over the last ``window_seconds`` (None until
    the stage has run for ``min_seconds`` and done some work). Stages of a run differ
    in cost per item (windows, masked passes), so each is timed on its own.

    The rate is measured up to *now*, not up to the latest event: while no event comes,
    the estimate grows instead of standing still, and an estimate never counts down to
    nothing while work remains. The recent window matters for CorRELAX, whose windows
    that stop early are counted as done at once: a rate since the stage began would
    keep the early, credit-rich pace and promise "about 10 s" for minutes at the end.
    """

    def __init__(self, min_seconds: float = 2.0, clock: Any = None,
                 window_seconds: float = 30.0) -> None:
        import time

        self.min_seconds = float(min_seconds)
        self.window_seconds = float(window_seconds)
        self.clock = clock or time.monotonic
        self._stage: str | None = None
        self._start = 0.0
        self._samples: list[tuple[float, int]] = []  # (time, done) of this stage, oldest first
        self._latest: Progress | None = None

    def update(self, event: Progress) -> None:
        """Record an event (cheap; call it for every event)."""
        now = self.clock()
        if event.stage != self._stage:
            self._stage, self._start, self._samples = event.stage, now, []
        self._samples.append((now, int(event.done)))
        # keep one sample at least window_seconds old as the anchor of the rate
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_seconds:
            self._samples.pop(0)
        self._latest = event

    def seconds(self) -> float | None:
        """Seconds left in the latest event's stage, or None when not yet measurable."""
        event = self._latest
        if event is None or not event.total or not self._samples:
            return None
        now = self.clock()
        anchor_time, anchor_done = self._samples[0]
        done = event.done - anchor_done
        if now - self._start < self.min_seconds or done <= 0:
            return None
        return max(event.total - event.done, 0) * (now - anchor_time) / done

    def text(self) -> str:
        """"about 3 min left", "about 40 s left", or "" when not yet measurable."""
        return format_time_left(self.seconds())


def format_time_left(seconds: float | None) -> str:
    """Plain words for a time left: "about 40 s left", "about 3 min left", "about 1.5 h left"."""
    if seconds is None:
        return ""
    if seconds < 90:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s left"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60):.0f} min left"
    return f"about {seconds / 3600:.1f} h left"


def resolve_device(device: str | None) -> str:
    """``"auto"``/None → ``cuda`` if available, else ``mps``, else ``cpu``."""
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from ..errors import CorrelaxError

        raise CorrelaxError(f"device {device!r} requested but CUDA is not available")
    return device


@dataclass
class Runtime:
    """How to run a model.

    Attributes
    ----------
    device:
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.
    precision:
        ``"float32"`` (exact), ``"bfloat16"`` or ``"float16"`` (autocast; float16 only
        on GPUs).
    batch_size:
        Windows per forward pass.
    threads:
        Torch intra-op threads for this computation (None: leave torch's setting); also
        the threads of a non-torch engine.
    engine:
        ``"torch"``, ``"onnx"`` (ONNX Runtime) or ``"openvino"``: what runs the forward
        passes of :func:`inference_model` (:mod:`~napari_correlax.maps.engines`).
    """

    device: str = "auto"
    precision: str = "float32"
    batch_size: int = 16
    threads: int | None = None
    engine: str = "torch"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            from ..errors import CorrelaxError

            raise CorrelaxError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        from .engines import ENGINES

        if self.engine not in ENGINES:
            from ..errors import CorrelaxError

            raise CorrelaxError(f"engine must be one of {ENGINES}, not {self.engine!r}")
        if self.batch_size < 1:
            from ..errors import CorrelaxError

            raise CorrelaxError("batch size must be at least 1")
        self.device = resolve_device(self.device)

    def prepare_model(self, model: _M) -> _M:
        """Move ``model`` to the device in eval mode and channels_last layout."""
        import torch

        model.eval()
        return model.to(self.device, memory_format=torch.channels_last)

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """``torch.inference_mode`` + autocast + thread count for the enclosed forwards."""
        import torch

        old_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        dev_type = self.device.split(":")[0]
        cast = (
            torch.autocast(dev_type, dtype=getattr(torch, self.precision))
            if self.precision != "float32"
            else contextlib.nullcontext()
        )
        try:
            with torch.inference_mode(), cast:
                yield
        finally:
            if self.threads:
                torch.set_num_threads(old_threads)

    def to_input(self, model: ImageModelLike, windows: np.ndarray) -> torch.Tensor:
        """``(B, S, S, 3)`` float32 [0, 1] windows → normalised ``(B, 3, S, S)`` tensor.

        The NHWC numpy array viewed as NCHW is already channels_last in memory, so no
        copy is made before the transfer to the device.
        """
        import torch

        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).permute(0, 3, 1, 2)
        x = x.to(self.device, non_blocking=True)
        return model.normalize(x)


class _FoldedClassifier:
    """A :class:`Classifier`'s ``features``/``head`` with BatchNorm folded into the convs."""

    def __init__(self, model: Any, encoder: Any) -> None:
        self.model = model
        self.encoder = encoder
        self.labels = model.labels
        self.input_size = model.input_size
        self.normalize = model.normalize
        self.head = model.head

    def features(self, x: Any) -> Any:
        return self.encoder(x).flatten(1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@overload
def inference_model(model: ImageModelLike, rt: Runtime | None = None) -> ImageModelLike: ...
@overload
def inference_model(model: ModelLike, rt: Runtime | None = None) -> ModelLike: ...
def inference_model(model: ModelLike, rt: Runtime | None = None) -> ModelLike:
    """The model as the maps run it: for an eval-mode :class:`Classifier`, a view whose
    backbone has every Conv→BatchNorm pair folded into one convolution (``torch.fx``),
    run by ``rt.engine`` (:func:`~napari_correlax.maps.engines.engine_model`; PyTorch
    when ``rt`` is None or asks for ``"torch"``).

    Folding is exact up to float rounding (relative differences ~1e-7 in ``h``) and saves
    the BatchNorm passes, a large share of CPU time for small backbones. Any other model,
    or one that cannot be traced, is returned unchanged.
    """
    from ..models.classifier import Classifier

    if not isinstance(model, Classifier) or model.training:
        return model
    try:
        from torch.fx.experimental.optimization import fuse

        folded: Any = _FoldedClassifier(model, fuse(model.encoder))
    except Exception:
        folded = model
    if rt is None or rt.engine == "torch":
        return folded
    from .engines import engine_model

    return engine_model(folded, rt.engine, threads=rt.threads, device=rt.device,
                        precision=rt.precision)
