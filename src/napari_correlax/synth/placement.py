"""Putting findings into the breast (L orientation, pixels): retraction notches and
their tethering strands, skin thickening along the contour, and compact findings placed
inside the tissue, off the pectoral muscle and apart from each other."""

from __future__ import annotations

import math

import numpy as np

from ._canvas import _Canvas
from ._primitives import _disk, _distance, _segments
from .anatomy import _tissue
from .findings import _BLOB_RENDERERS, _HARD_RENDERERS, _PLACE_ORDER, _extent

#: ``difficulty="hard"``: share of compact findings whose box centre lies within
#: :data:`HARD_SKIN_PX` px of the skin line (depth by the distance transform of the breast).
HARD_SKIN_SHARE = 0.4
HARD_SKIN_PX = 30.0


def _pick(rng: np.random.Generator, allowed: np.ndarray, step: int) -> tuple[int, int] | None:
    """A random True pixel of ``allowed`` sampled on a ``step`` grid, as (y, x)."""
    sub = allowed[::step, ::step]
    idx = np.flatnonzero(sub)
    if idx.size == 0:
        return None
    k = int(idx[rng.integers(idx.size)])
    return (k // sub.shape[1]) * step, (k % sub.shape[1]) * step


def _boundary_points(mask: np.ndarray, d: np.ndarray, margin: int) -> np.ndarray:
    """Skin-contour pixels (y, x) at least ``margin`` px from every image edge."""
    h, w = mask.shape
    edge = mask & (d <= 1.5)
    edge[:margin, :] = False
    edge[h - margin:, :] = False
    edge[:, :margin] = False
    edge[:, w - margin:] = False
    return np.argwhere(edge)


def _outward_normal(mask: np.ndarray, y: int, x: int, radius: int = 15) -> tuple[float, float]:
    """Unit vector (dy, dx) pointing out of the breast at contour pixel (y, x)."""
    h, w = mask.shape
    r0, r1 = max(0, y - radius), min(h, y + radius + 1)
    c0, c1 = max(0, x - radius), min(w, x + radius + 1)
    pts = np.argwhere(mask[r0:r1, c0:c1])
    if pts.size == 0:
        return 0.0, 1.0
    cy, cx = pts.mean(axis=0) + np.array([r0, c0])
    ny, nx = y - cy, x - cx
    norm = math.hypot(ny, nx) or 1.0
    return ny / norm, nx / norm


def _cut_retractions(cv: _Canvas, rng: np.random.Generator, cats: list[str],
                     mask_ref: np.ndarray, d_ref: np.ndarray,
                     bump: float) -> dict[int, tuple[float, float, float, float, float]]:
    """Bite a rounded notch out of the contour for each retraction (updates ``cv.mask``).

    Returns, per finding index, (apex y, apex x, outward normal y, x, notch half width).
    """
    h, w = cv.shape
    size = min(1.0, w / 640.0 + 0.3)
    notches = {}
    for i, c in enumerate(cats):
        if c not in ("Nipple Retraction", "Skin Retraction"):
            continue
        depth = rng.uniform(12.0, 30.0) * size
        half_w = rng.uniform(25.0, 55.0) * size
        if c == "Nipple Retraction":
            py, px = cv.nipple[0], cv.nipple[1] + 0.7 * bump
            ny, nx = 0.0, 1.0
        else:  # on the skin, away from the nipple, the chest wall and the pectoral
            pts = _boundary_points(mask_ref, d_ref, cv.margin)
            dist2 = (pts[:, 0] - cv.nipple[0]) ** 2 + (pts[:, 1] - cv.nipple[1]) ** 2
            keep = (dist2 > (3 * half_w) ** 2) & (pts[:, 1] > 0.25 * cv.nipple[1])
            if cv.pect_edge is not None:
                keep &= pts[:, 0] > np.argmin(cv.pect_edge > 0) + half_w
            pts = pts[keep] if keep.any() else pts
            py, px = (float(v) for v in pts[int(rng.integers(len(pts)))])
            ny, nx = _outward_normal(mask_ref, int(py), int(px))
        radius = (half_w**2 + depth**2) / (2.0 * depth)
        cy, cx = py + ny * (radius - depth), px + nx * (radius - depth)
        cv.mask &= ~_disk((h, w), cy, cx, radius)
        notches[i] = (py - ny * depth, px - nx * depth, ny, nx, half_w)
    return notches


def _add_retraction_strands(cv: _Canvas, rng: np.random.Generator, notches: dict,
                            d_ref: np.ndarray) -> None:
    """Tethering strands converging on each notch; record the change near the notch."""
    h, w = cv.shape
    for i, (ay, ax, ny, nx, half_w) in notches.items():
        rad = int(half_w + 2.5 * cv.depth_scale + 30)
        r0, r1 = max(0, int(ay) - rad), min(h, int(ay) + rad + 1)
        c0, c1 = max(0, int(ax) - rad), min(w, int(ax) + rad + 1)
        sl = (slice(r0, r1), slice(c0, c1))
        before = _tissue(d_ref[sl], cv.gland[sl], cv.fine[sl], cv.depth_scale, cv.skin_w)
        n = int(rng.integers(3, 7))
        ang = math.atan2(-ny, -nx) + rng.uniform(-0.6, 0.6, n)
        length = rng.uniform(25.0, 60.0, n) * min(1.0, w / 640.0 + 0.3)
        segs = np.stack([np.full(n, ay - r0 - 2 * ny), np.full(n, ax - c0 - 2 * nx),
                         ay - r0 + length * np.sin(ang), ax - c0 + length * np.cos(ang)], axis=1)
        strands = _segments(before.shape, segs, rng.uniform(0.8, 1.3, n), np.full(n, 0.12),
                            lambda t: (1.0 - t) ** 0.7)
        cv.pixels[sl] += strands * cv.mask[sl]
        cv.record(i, cv.pixels[sl] - before, r0, c0)


def _add_skin_thickening(cv: _Canvas, rng: np.random.Generator, index: int) -> None:
    """A stretch of skin line several times thicker and brighter, tapered at both ends."""
    h, w = cv.shape
    yy, xx = cv.grids()
    length = rng.uniform(80.0, 250.0) * min(1.0, w / 640.0 + 0.2)
    thick = cv.skin_w * rng.uniform(3.0, 4.5)
    amp = rng.uniform(0.1, 0.15)
    pts = _boundary_points(cv.mask, cv.d, cv.margin)
    keep = ~cv.pect_mask[pts[:, 0], pts[:, 1]] & ~cv.occupied[pts[:, 0], pts[:, 1]]
    keep &= pts[:, 1] > 0.2 * cv.nipple[1]
    pts = pts[keep] if keep.any() else pts
    py, px = (int(v) for v in pts[int(rng.integers(len(pts)))])
    rad = int(length / 2 + thick + 3)
    r0, r1 = max(0, py - rad), min(h, py + rad + 1)
    c0, c1 = max(0, px - rad), min(w, px + rad + 1)
    sl = (slice(r0, r1), slice(c0, c1))
    along = np.clip((length / 2 - np.hypot(yy[r0:r1] - py, xx[:, c0:c1] - px)) / (0.2 * length),
                    0.0, 1.0)
    band = np.clip(thick + 0.5 - cv.d[sl], 0.0, 1.0) * (cv.d[sl] > 0)
    delta = (amp * along * along * (3 - 2 * along) * band).astype(np.float32)
    cv.pixels[sl] += delta
    cv.record(index, delta, r0, c0)


def _lymph_node_region(cv: _Canvas) -> np.ndarray:
    """Where lymph nodes go: beside the pectoral (MLO) or posterior, off the nipple line."""
    h, w = cv.shape
    yy, xx = cv.grids()
    if cv.pect_edge is not None:
        return (yy < 0.55 * h) & (xx < cv.pect_edge[:, None] + 0.25 * w)
    return (xx < 0.35 * cv.nipple[1]) & (np.abs(yy - cv.nipple[0]) > 0.25 * cv.half)


def _near_skin(cv: _Canvas, d_place: np.ndarray, extent: float) -> np.ndarray:
    """Free centres within :data:`HARD_SKIN_PX` of the skin line (the breast outline), for
    a finding of ``extent`` px that stays inside the breast, off the pectoral muscle.

    2 px are kept in hand for the approximate distance transform and for a box centre
    that falls between two pixels, so an exact distance transform also finds the box
    centre within :data:`HARD_SKIN_PX`.
    """
    return (cv.d <= HARD_SKIN_PX - 2.0) & (d_place >= extent + 1.0) & ~cv.occupied


def _add_blobs(cv: _Canvas, rng: np.random.Generator, cats: list[str]) -> None:
    """Place compact findings fully inside the breast, off the pectoral, apart if possible.

    A finding too large for the breast is redrawn smaller (×0.75 at a time). In a hard
    phantom (``cv.hard``) masses and calcifications use the hard renderers and a share
    :data:`HARD_SKIN_SHARE` of the findings goes near the skin line when there is room.
    """
    h, w = cv.shape
    yy, xx = cv.grids()
    d_place = np.minimum.reduce([
        _distance(cv.mask & ~cv.pect_mask), np.broadcast_to(xx, (h, w)),
        np.broadcast_to(yy, (h, w)), np.broadcast_to(w - 1 - xx, (h, w)),
        np.broadcast_to(h - 1 - yy, (h, w))])
    gap = cv.skin_w + 4.0
    step = 4 if min(h, w) >= 256 else 2
    order = sorted((i for i, c in enumerate(cats) if c in _BLOB_RENDERERS),
                   key=lambda i: _PLACE_ORDER.index(cats[i]))
    renderers = {**_BLOB_RENDERERS, **(_HARD_RENDERERS if cv.hard else {})}
    for i in order:
        scale = 1.0
        for _ in range(10):
            delta = renderers[cats[i]](rng, scale)
            free = d_place >= _extent(delta) + gap
            if free.any():
                break
            scale *= 0.75
        choices = [free & ~cv.occupied, free]
        if cats[i] == "Suspicious Lymph Node":
            choices.insert(0, choices[0] & _lymph_node_region(cv))
        if cv.hard and rng.random() < HARD_SKIN_SHARE:
            choices.insert(0, _near_skin(cv, d_place, _extent(delta)))
        spot = next((s for s in (_pick(rng, a, step) for a in choices) if s is not None), None)
        if spot is None:  # the breast is too small even at the smallest size
            spot = np.unravel_index(int(np.argmax(d_place)), d_place.shape)
        r0 = int(spot[0]) - (delta.shape[0] - 1) // 2
        c0 = int(spot[1]) - (delta.shape[1] - 1) // 2
        # Clip the patch to the image (only needed in the too-small fallback).
        pr0, pc0 = max(0, -r0), max(0, -c0)
        pr1 = delta.shape[0] - max(0, r0 + delta.shape[0] - h)
        pc1 = delta.shape[1] - max(0, c0 + delta.shape[1] - w)
        r0, c0 = r0 + pr0, c0 + pc0
        sl = (slice(r0, r0 + pr1 - pr0), slice(c0, c0 + pc1 - pc0))
        delta = delta[pr0:pr1, pc0:pc1] * cv.mask[sl]
        cv.pixels[sl] += delta
        cv.record(i, delta, r0, c0)
