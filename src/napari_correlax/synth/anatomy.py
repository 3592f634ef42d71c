"""The breast without findings (L orientation, chest wall at x = 0): outline and nipple,
fibroglandular texture, grey values of tissue and skin, and the MLO pectoral muscle."""

from __future__ import annotations

import numpy as np

from ._canvas import _Canvas
from ._categories import _DENSITY_THRESHOLD
from ._primitives import _power_noise


def _outline(rng: np.random.Generator, shape: tuple[int, int], view: str) -> tuple[
        np.ndarray, tuple[float, float], np.ndarray | None, float, float]:
    """Breast outline as a per-row edge ``x_edge(y)`` turned into a mask (L orientation).

    Returns (mask without nipple, nipple (y, x), pectoral edge per row or None,
    nipple bump radius, half height).
    """
    h, w = shape
    y = np.arange(h, dtype=np.float64)
    wiggle = np.ones(h)
    for k in (1, 2, 3):
        phase = rng.uniform(0, 2 * np.pi)
        wiggle += rng.uniform(0.0, 0.015) * np.sin(2 * np.pi * k * y / h + phase)
    depth = w * rng.uniform(0.72, 0.86)
    pectoral = None
    if view == "CC":
        cy = h * rng.uniform(0.46, 0.54)
        half = h * rng.uniform(0.39, 0.44)
        q = rng.uniform(2.0, 2.6)
        t = np.abs(y - cy) / half
        prof = np.where(t < 1.0, np.clip(1.0 - t**q, 0.0, 1.0) ** (1.0 / q), 0.0)
    else:
        y_max = h * rng.uniform(0.88, 0.96)
        tc = rng.uniform(0.52, 0.64)
        top = rng.uniform(0.45, 0.6)
        t = y / y_max
        upper = top + (1.0 - top) * np.sqrt(np.clip(1.0 - ((tc - t) / tc) ** 2, 0.0, 1.0))
        lower = np.sqrt(np.clip(1.0 - ((t - tc) / (1.0 - tc)) ** 2, 0.0, 1.0))
        prof = np.where(t < tc, upper, lower)
        half = 0.5 * y_max
        width_top = top * depth
        pw = width_top * rng.uniform(0.5, 0.8)
        ph = h * rng.uniform(0.35, 0.55)
        kappa = rng.uniform(0.8, 1.25)
        pectoral = pw * np.clip(1.0 - y / ph, 0.0, 1.0) ** kappa
    x_edge = depth * prof * wiggle
    ny = int(np.argmax(x_edge))
    nipple = (float(ny), float(x_edge[ny]))
    xx = np.arange(w, dtype=np.float64)[None, :]
    mask = xx < x_edge[:, None]
    bump = float(np.clip(0.016 * w, 3.0, 20.0))
    return mask, nipple, pectoral, bump, half


def _texture(rng: np.random.Generator, shape: tuple[int, int], nipple: tuple[float, float],
             half: float, density: str) -> tuple[np.ndarray, np.ndarray]:
    """(fibroglandular fraction in [0, 1], fine texture) for a breast in L orientation.

    Gland is power-law noise above a density-dependent threshold, concentrated around
    the nipple line and kept off the chest wall (retroglandular fat, ragged border).
    """
    h, w = shape
    step = max(1, round(max(h, w) / 256))
    coarse = _power_noise(rng, shape, 3.0, step)
    coarse += 0.5 * _power_noise(rng, shape, 2.0, step)
    fine = _power_noise(rng, shape, 1.6, max(1, round(max(h, w) / 1024)))
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    env_y = np.exp(-(((yy - nipple[0]) / (0.8 * half)) ** 2))
    env_x = np.clip((xx / nipple[1] - 0.12 + 0.06 * coarse) / 0.3, 0.0, 1.0)
    gland = env_y * env_x / (1.0 + np.exp(-(coarse - _DENSITY_THRESHOLD[density]) / 0.35))
    return gland.astype(np.float32), fine


def _tissue(d: np.ndarray, gland: np.ndarray, fine: np.ndarray, depth_scale: float,
            skin_w: float) -> np.ndarray:
    """Grey value of breast tissue from depth ``d`` (px from the skin) and texture.

    Fat is dark near the skin (thinner compressed tissue) and brighter inside;
    fibroglandular tissue (``gland`` in [0, 1]) adds density away from the skin;
    the skin line adds a thin bright rim. Zero where ``d == 0`` (background).
    """
    thick = np.clip(d / depth_scale, 0.0, 1.0)
    inner = np.clip(d / (2.5 * depth_scale), 0.0, 1.0)
    g = gland * inner
    val = 0.20 + 0.14 * thick * (2.0 - thick) + 0.30 * g + 0.03 * fine * (0.3 + g)
    val += 0.13 * np.clip(skin_w + 0.5 - d, 0.0, 1.0)
    return np.where(d > 0, val, 0.0).astype(np.float32)


def _add_pectoral(cv: _Canvas) -> None:
    """MLO pectoral muscle: bright, smooth, soft-edged, at the top chest-wall corner."""
    cv.pect_mask = np.zeros(cv.shape, bool)
    if cv.pect_edge is None:
        return
    yy, xx = cv.grids()
    bottom = float(np.argmin(cv.pect_edge > 0)) or float(cv.shape[0])
    muscle = 0.66 + 0.10 * np.clip(1.0 - yy / bottom, 0.0, 1.0) + 0.015 * cv.fine
    wgt = np.clip((cv.pect_edge[:, None].astype(np.float32) - xx) / 2.0, 0.0, 1.0) * cv.mask
    cv.pixels = cv.pixels * (1.0 - wgt) + muscle * wgt
    cv.pect_mask = wgt > 0
