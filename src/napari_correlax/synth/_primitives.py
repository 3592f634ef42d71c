"""Drawing primitives of the phantoms: power-law noise, distance transforms, patch
grids, line segments, soft ellipses, disks and tight boxes (all in pixels)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_BOX_FRACTION = 0.1  # a box holds the pixels changed by >= 10 % of the finding's peak


def _cv2():
    import cv2

    return cv2


def _power_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float,
                 step: int) -> np.ndarray:
    """Zero-mean, unit-variance 1/f^beta noise, drawn at ``shape/step`` and upsampled."""
    h, w = max(8, math.ceil(shape[0] / step)), max(8, math.ceil(shape[1] / step))
    spectrum = np.fft.rfft2(rng.standard_normal((h, w)))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freq = np.hypot(fy, fx)
    freq[0, 0] = 1.0
    spectrum *= freq ** (-beta / 2.0)
    spectrum[0, 0] = 0.0
    noise = np.fft.irfft2(spectrum, s=(h, w))
    noise = ((noise - noise.mean()) / (noise.std() + 1e-12)).astype(np.float32)
    if (h, w) != shape:
        noise = _cv2().resize(noise, (shape[1], shape[0]), interpolation=_cv2().INTER_CUBIC)
    return noise


def _distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) of each True pixel to the nearest False pixel."""
    cv2 = _cv2()
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)


def _grid(hs_y: int, hs_x: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from the centre of a (2·hs_y+1)×(2·hs_x+1) patch."""
    yy = np.arange(-hs_y, hs_y + 1, dtype=np.float32)[:, None]
    xx = np.arange(-hs_x, hs_x + 1, dtype=np.float32)[None, :]
    return yy, xx


def _smooth_blobs(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] with about ``cells`` bumps across the patch."""
    small = rng.random((cells + 2, cells + 2)).astype(np.float32)
    return _cv2().resize(small, (shape[1], shape[0]), interpolation=_cv2().INTER_CUBIC).clip(0, 1)


def _segments(shape: tuple[int, int], segs: np.ndarray, sigma: np.ndarray, amp: np.ndarray,
              taper: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Max-combine thin Gaussian-profile line segments ``(y0, x0, y1, x1)`` (patch px).

    ``taper(t)`` scales the brightness along each segment (t = 0 at the start, 1 at the end).
    """
    out = np.zeros(shape, np.float32)
    for (y0, x0, y1, x1), s, a in zip(segs, sigma, amp):
        pad = 3.0 * s + 1.0
        r0 = max(0, int(min(y0, y1) - pad))
        r1 = min(shape[0], int(max(y0, y1) + pad) + 2)
        c0 = max(0, int(min(x0, x1) - pad))
        c1 = min(shape[1], int(max(x0, x1) + pad) + 2)
        if r0 >= r1 or c0 >= c1:
            continue
        yy = np.arange(r0, r1, dtype=np.float32)[:, None]
        xx = np.arange(c0, c1, dtype=np.float32)[None, :]
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0.0, 1.0)
        dist2 = (yy - (y0 + t * dy)) ** 2 + (xx - (x0 + t * dx)) ** 2
        val = (a * taper(t) * np.exp(-0.5 * dist2 / (s * s))).astype(np.float32)
        np.maximum(out[r0:r1, c0:c1], val, out=out[r0:r1, c0:c1])
    return out


def _soft_ellipse(yy: np.ndarray, xx: np.ndarray, ry: float, rx: float, angle: float,
                  edge: float) -> np.ndarray:
    """Anti-aliased filled ellipse (1 inside, 0 outside) with an edge ``edge`` px wide."""
    c, s = math.cos(angle), math.sin(angle)
    u = (xx * c + yy * s) / rx
    v = (-xx * s + yy * c) / ry
    rho = np.sqrt(u * u + v * v)
    return 0.5 * (1.0 + np.tanh((1.0 - rho) * min(rx, ry) / edge))


def _tight_box(delta: np.ndarray) -> tuple[int, int, int, int] | None:
    """(xmin, ymin, xmax, ymax), max exclusive, of pixels >= 10 % of the peak |delta|."""
    mag = np.abs(delta)
    peak = float(mag.max()) if mag.size else 0.0
    if peak <= 0.0:
        return None
    sig = mag >= _BOX_FRACTION * peak
    rows = np.flatnonzero(sig.any(axis=1))
    cols = np.flatnonzero(sig.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _disk(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy = np.arange(shape[0], dtype=np.float32)[:, None]
    xx = np.arange(shape[1], dtype=np.float32)[None, :]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
