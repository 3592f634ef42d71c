"""The working state of one phantom while it is drawn (L orientation, pixels)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._primitives import _tight_box


@dataclass
class _Canvas:
    """Working state of one phantom, in L orientation (chest wall at x = 0)."""

    mask: np.ndarray  # breast tissue (pectoral included), after retractions
    nipple: tuple[float, float]  # (y, x) of the nipple tip
    half: float  # vertical half extent of the breast (px)
    pect_edge: np.ndarray | None  # per row: x of the pectoral boundary (MLO only)
    gland: np.ndarray  # fibroglandular fraction in [0, 1]
    fine: np.ndarray  # fine texture, unit variance
    depth_scale: float  # subcutaneous fall-off length (px)
    skin_w: float  # skin line thickness (px)
    hard: bool = False  # difficulty "hard": small, faint findings, some near the skin
    pixels: np.ndarray = field(init=False)
    d: np.ndarray = field(init=False)  # depth below the skin (px), 0 off the breast
    pect_mask: np.ndarray = field(init=False)
    occupied: np.ndarray = field(init=False)  # boxes taken (grown by a gap)
    placed: dict[int, tuple[np.ndarray, int, int]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    @property
    def margin(self) -> int:
        """Distance (px) from the image edges kept free of contour findings."""
        return int(max(24, 0.08 * min(self.shape)))

    def grids(self) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.shape
        return (np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :])

    def record(self, index: int, delta: np.ndarray, r0: int, c0: int) -> None:
        """Remember finding ``index``'s change patch at (r0, c0) and reserve its box."""
        self.placed[index] = (delta.astype(np.float32, copy=False), r0, c0)
        box = _tight_box(delta)
        if box is not None:
            gap = 8
            self.occupied[max(0, r0 + box[1] - gap):max(0, r0 + box[3] + gap),
                          max(0, c0 + box[0] - gap):max(0, c0 + box[2] + gap)] = True
