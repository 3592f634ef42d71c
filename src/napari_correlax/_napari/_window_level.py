"""Window/level for the test-set reader: presets, a key to cycle them, and the setting
kept from one image to the next.

Pixels are min–max scaled to [0, 1] with tissue bright (:class:`~napari_correlax.io.Mammogram`),
so every window is a pair of contrast limits ``(lo, hi)`` on that scale:

* ``file``: the file's own DICOM window (Window Center/Width, first value), as
  :func:`~napari_correlax.io.read_mammogram` maps it onto [0, 1]; full range for a file
  without one (PNG, a DICOM without a window).
* ``full``: ``(0, 1)``, every stored value.
* ``dense``: ``(0.5, 1.0)``, the brightest half of the scaled range: in a dense breast
  the fibroglandular tissue fills that half, and this preset spreads the whole grey
  scale over it (fat and background go black) so masses and calcifications inside
  dense tissue stand out.

A drag of the layer's contrast limits (napari's layer controls) becomes the setting
itself (``custom``) until a preset is chosen again; either way the setting is reapplied
to every new image the reader shows.
"""

from __future__ import annotations

from typing import Any

PRESETS: tuple[str, ...] = ("file", "full", "dense")
FULL_RANGE = (0.0, 1.0)
DENSE_BREAST = (0.5, 1.0)

__all__ = ["DENSE_BREAST", "FULL_RANGE", "PRESETS", "WindowLevel", "file_window"]


def file_window(path: str) -> tuple[float, float]:
    """The DICOM window of the image file ``path`` on the [0, 1] pixel scale (full range
    when the file has none or cannot be read)."""
    from ..errors import CorrelaxError
    from ..io import read_mammogram

    try:
        limits = read_mammogram(path).meta.get("contrast_limits")
    except CorrelaxError:
        return FULL_RANGE
    return (float(limits[0]), float(limits[1])) if limits is not None else FULL_RANGE


class WindowLevel:
    """The reader's window/level setting: a preset name, or ``custom`` limits."""

    def __init__(self) -> None:
        self.preset = "file"
        self.custom: tuple[float, float] | None = None
        self._file_windows: dict[str, tuple[float, float]] = {}
        self._shown: tuple[float, ...] | None = None

    def limits(self, path: str) -> tuple[float, float]:
        """The contrast limits of the setting for the image file ``path``."""
        if self.custom is not None:
            return self.custom
        if self.preset == "full":
            return FULL_RANGE
        if self.preset == "dense":
            return DENSE_BREAST
        if path not in self._file_windows:
            self._file_windows = {path: file_window(path)}  # the shown image's only
        return self._file_windows[path]

    def cycle(self) -> str:
        """Switch to the next preset (a custom setting ends: back to the presets)."""
        if self.custom is None:
            self.preset = PRESETS[(PRESETS.index(self.preset) + 1) % len(PRESETS)]
        self.custom = None
        return self.preset

    def describe(self) -> str:
        """One line for the dock: ``"window: dense (0.50–1.00)"``."""
        if self.custom is not None:
            return f"window: custom ({self.custom[0]:.2f}–{self.custom[1]:.2f})"
        return f"window: {self.preset}"

    def remember(self, layer: Any) -> None:
        """Take the image ``layer``'s contrast limits as the setting when the reader
        changed them since :meth:`apply` (a drag in napari's layer controls); call it
        before the next image replaces the layer's data."""
        limits = tuple(float(v) for v in layer.contrast_limits)
        if self._shown is not None and limits != self._shown:
            self.custom = limits  # type: ignore[assignment]

    def apply(self, layer: Any) -> None:
        """Set the image ``layer``'s contrast limits to the setting."""
        limits = self.limits(str((layer.metadata or {}).get("path", "")))
        layer.contrast_limits_range = FULL_RANGE
        layer.contrast_limits = limits
        self._shown = tuple(float(v) for v in layer.contrast_limits)
