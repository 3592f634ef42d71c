"""A seam for work that several map methods share on one image.

A split run (``correlax evaluate``, ``correlax compare``) runs several map methods on each
image, and each would prepare the image (breast, window grid, fusion) and, for prediction
and CorRELAX, run the prediction pass over the tissue windows itself. While
:func:`serving` is active, two functions first ask the :class:`WorkServer` handed to it:
:func:`~.sliding.prepare_image` (for the prepared image) and
:func:`~.mask_engine.unmasked_pass` (for the prediction pass, which
:func:`~.sliding.predict_steps` and CorRELAX both run). The server answers for the image
it holds and returns None for anything else, and the function then runs as usual.

The server is held in a context variable: it is seen by the code running in the thread
(and context) that entered :func:`serving`, generators included, and by no other
thread, so a background thread reading the next image is never served.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from .runtime import Progress
    from .sliding import PreparedImage, WindowFeeder

__all__ = ["Layout", "PassSteps", "WorkServer", "current", "serving"]

#: (stride in px, minimum tissue fraction, reach): what decides an image's window grid.
Layout = tuple[int, float, str]
#: A prediction pass: progress events, then ``(h, ŷ)`` float32 arrays of the windows.
PassSteps = Generator["Progress", None, "tuple[np.ndarray, np.ndarray]"]


class WorkServer(Protocol):
    """What :func:`serving` hands the map functions; each method returns None for an
    image, model or layout it does not hold."""

    def prepared(self, image: Any, model: Any, layout: Layout) -> PreparedImage | None:
        """The prepared image for ``image`` and ``model`` at ``layout``."""

    def prediction_pass(self, feeder: WindowFeeder, todo: np.ndarray,
                        run: Callable[[WindowFeeder, np.ndarray], PassSteps]
                        ) -> PassSteps | None:
        """The prediction pass over windows ``todo`` of ``feeder``'s image (``run``
        computes one)."""


_SERVER: ContextVar[WorkServer | None] = ContextVar("napari_correlax_work_server",
                                                    default=None)


def current() -> WorkServer | None:
    """The server of the innermost active :func:`serving` in this context, or None."""
    return _SERVER.get()


@contextlib.contextmanager
def serving(server: WorkServer) -> Iterator[WorkServer]:
    """Let the map functions called inside the block ask ``server`` first."""
    token = _SERVER.set(server)
    try:
        yield server
    finally:
        _SERVER.reset(token)
