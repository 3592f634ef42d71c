"""Renderers of the compact findings and the choice of what a phantom shows (docs/method.md §3).

Each renderer returns a patch of intensity change centred on the patch centre, at a
size multiplied by ``s`` (<= 1 when the breast is too small for the full size). The
contour findings (retractions, skin thickening) change the breast itself and are drawn
by :mod:`.placement`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ._categories import _BIRADS, _WEIGHTS, CATEGORIES
from ._primitives import _grid, _segments, _smooth_blobs, _soft_ellipse, _tight_box

#: Hard masses: radius range (px) and the largest change of a pixel value they make.
HARD_MASS_RADIUS = (3.0, 10.0)
HARD_MAX_CONTRAST = 0.05


def _render_mass(rng: np.random.Generator, s: float) -> np.ndarray:
    r = rng.uniform(15.0, 75.0) * s
    kind = rng.choice(["round", "oval", "lobulated", "irregular", "spiculated"])
    aspect = {"round": rng.uniform(1.0, 1.1), "oval": rng.uniform(1.3, 1.8)}.get(
        str(kind), rng.uniform(1.0, 1.4))
    well_defined = kind in ("round", "oval", "lobulated") and rng.random() < 0.6
    edge = rng.uniform(0.8, 1.5) if well_defined else rng.uniform(2.0, 4.5)
    amp = rng.uniform(0.15, 0.25)
    angle = rng.uniform(0, np.pi)
    if kind == "lobulated":
        harmonics = [(int(rng.integers(3, 6)), rng.uniform(0.12, 0.2), rng.uniform(0, 2 * np.pi))]
    elif kind in ("irregular", "spiculated"):
        harmonics = [(k, rng.uniform(0.0, 0.07), rng.uniform(0, 2 * np.pi)) for k in range(2, 8)]
    else:
        harmonics = []
    spread = 1.0 + sum(a for _, a, _ in harmonics)
    n_spic = int(rng.integers(8, 18)) if kind == "spiculated" else 0
    spic_len = r * rng.uniform(1.7, 2.5, n_spic)
    ext = max(r * aspect * spread + 3.0 * edge + 2.0, float(spic_len.max(initial=0.0)) + 4.0)
    hs = math.ceil(ext)
    yy, xx = _grid(hs, hs)
    c, si = math.cos(angle), math.sin(angle)
    u = (xx * c + yy * si) / aspect
    v = -xx * si + yy * c
    rho = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    radius = np.full_like(rho, r)
    for k, a, p in harmonics:
        radius += r * a * np.cos(k * phi + p)
    core = 0.5 * (1.0 + np.tanh((radius - rho) / edge))
    dome = np.sqrt(np.clip(1.0 - (rho / radius) ** 2, 0.0, 1.0))
    delta = (amp * core * (0.75 + 0.25 * dome)).astype(np.float32)
    if n_spic:
        ang = np.sort(rng.uniform(0, 2 * np.pi, n_spic))
        start = 0.7 * r
        segs = np.stack([hs + start * np.sin(ang), hs + start * np.cos(ang),
                         hs + spic_len * np.sin(ang), hs + spic_len * np.cos(ang)], axis=1)
        spic = _segments(delta.shape, segs, rng.uniform(0.7, 1.3, n_spic),
                         np.full(n_spic, 0.6 * amp), lambda t: (1.0 - t) ** 0.8)
        np.maximum(delta, spic, out=delta)
    return delta


def _render_calcifications(rng: np.random.Generator, s: float) -> np.ndarray:
    n = int(rng.integers(5, 31))
    radius = rng.uniform(20.0, 60.0) * s
    linear = rng.random() < 0.3
    aspect = rng.uniform(2.5, 4.0) if linear else rng.uniform(1.0, 1.8)
    ry, rx = radius / math.sqrt(aspect), radius
    angle = rng.uniform(0, np.pi)
    hs = math.ceil(radius + 6)
    pts: list[tuple[float, float]] = []
    tries = 0
    while len(pts) < n and tries < 50 * n:
        tries += 1
        rho, th = math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        u, v = rx * rho * math.cos(th), ry * rho * math.sin(th)
        py = hs + u * math.sin(angle) + v * math.cos(angle)
        px = hs + u * math.cos(angle) - v * math.sin(angle)
        if all((py - qy) ** 2 + (px - qx) ** 2 >= 36.0 for qy, qx in pts):
            pts.append((py, px))
    delta = np.zeros((2 * hs + 1, 2 * hs + 1), np.float32)
    for py, px in pts:
        rd = rng.uniform(1.0, 2.5)
        amp = rng.uniform(0.45, 0.7)
        r0, c0 = int(py - rd - 2), int(px - rd - 2)
        r1, c1 = int(py + rd + 3), int(px + rd + 3)
        yy = np.arange(r0, r1, dtype=np.float32)[:, None]
        xx = np.arange(c0, c1, dtype=np.float32)[None, :]
        dist = np.sqrt((yy - py) ** 2 + (xx - px) ** 2)
        dot = amp * np.clip(rd + 0.5 - dist, 0.0, 1.0)
        np.maximum(delta[r0:r1, c0:c1], dot, out=delta[r0:r1, c0:c1])
    return delta


def _render_asymmetry(rng: np.random.Generator, s: float, category: str) -> np.ndarray:
    lo, hi = {"Focal Asymmetry": (25.0, 50.0), "Asymmetry": (45.0, 90.0),
              "Global Asymmetry": (100.0, 220.0)}[category]
    radius = rng.uniform(lo, hi) * s
    aspect = rng.uniform(1.0, 1.6)
    angle = rng.uniform(0, np.pi)
    amp = rng.uniform(0.08, 0.12)
    hs = math.ceil(1.3 * radius * aspect) + 2
    yy, xx = _grid(hs, hs)
    c, si = math.cos(angle), math.sin(angle)
    u = (xx * c + yy * si) / (radius * aspect)
    v = (-xx * si + yy * c) / radius
    env = np.exp(-math.log(10.0) * (u * u + v * v) ** 2)
    mod = 0.55 + 0.45 * _smooth_blobs(rng, env.shape, 6)
    return (amp * env * mod).astype(np.float32)


def _render_distortion(rng: np.random.Generator, s: float) -> np.ndarray:
    n = int(rng.integers(10, 22))
    lengths = rng.uniform(30.0, 80.0, n) * max(s, 0.5)
    r0 = rng.uniform(3.0, 7.0)
    amp = rng.uniform(0.14, 0.2)
    hs = math.ceil(lengths.max() + 5)
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(-0.2, 0.2, n)
    segs = np.stack([hs + r0 * np.sin(ang), hs + r0 * np.cos(ang),
                     hs + lengths * np.sin(ang), hs + lengths * np.cos(ang)], axis=1)
    lines = _segments((2 * hs + 1, 2 * hs + 1), segs, rng.uniform(0.7, 1.2, n),
                      amp * rng.uniform(0.7, 1.0, n),
                      lambda t: np.clip(6.0 * t, 0.0, 1.0) * (1.0 - t) ** 0.6)
    yy, xx = _grid(hs, hs)
    lucent = 0.04 * np.exp(-(yy * yy + xx * xx) / (2.0 * (1.5 * r0) ** 2))
    return (lines - lucent).astype(np.float32)


def _render_lymph_node(rng: np.random.Generator, s: float) -> np.ndarray:
    a = rng.uniform(12.0, 28.0) * max(s, 0.5)
    b = a * rng.uniform(0.55, 0.8)
    angle = rng.uniform(0, np.pi)
    amp = rng.uniform(0.2, 0.28)
    hs = math.ceil(a + 5)
    yy, xx = _grid(hs, hs)
    outer = _soft_ellipse(yy, xx, b, a, angle, 1.0)
    shift = 0.3 * a * rng.choice([-1.0, 1.0])
    hy, hx = yy - shift * math.sin(angle), xx - shift * math.cos(angle)
    scale = rng.uniform(0.4, 0.55)
    hilum = _soft_ellipse(hy, hx, b * scale, a * scale, angle, 1.0)
    return (amp * outer - (amp + 0.03) * hilum).astype(np.float32)


def _render_small_mass(rng: np.random.Generator, s: float) -> np.ndarray:
    """A hard mass: radius 3-10 px, peak change at most :data:`HARD_MAX_CONTRAST`."""
    r = rng.uniform(*HARD_MASS_RADIUS) * max(s, 0.5)
    aspect = rng.uniform(1.0, 1.3)
    edge = rng.uniform(0.6, 1.5)
    amp = rng.uniform(0.6, 1.0) * HARD_MAX_CONTRAST
    angle = rng.uniform(0, np.pi)
    hs = math.ceil(r * aspect + 3.0 * edge + 2.0)
    yy, xx = _grid(hs, hs)
    core = _soft_ellipse(yy, xx, r, r * aspect, angle, edge)
    return (amp * core).astype(np.float32)


def _render_microcalcifications(rng: np.random.Generator, s: float) -> np.ndarray:
    """A hard calcification finding: a tight cluster (radius 6-20 px) of up to 15 dots of
    0.5-1.2 px radius and 0.1-0.25 contrast, at least 5 px apart, centred on its box."""
    n = int(rng.integers(5, 16))
    radius = rng.uniform(6.0, 20.0) * max(s, 0.5)
    hs = math.ceil(radius + 4)
    pts: list[tuple[float, float]] = []
    for _ in range(50 * n):
        if len(pts) == n:
            break
        rho, th = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        py, px = hs + rho * math.sin(th), hs + rho * math.cos(th)
        if all((py - qy) ** 2 + (px - qx) ** 2 >= 25.0 for qy, qx in pts):
            pts.append((py, px))
    delta = np.zeros((2 * hs + 1, 2 * hs + 1), np.float32)
    yy, xx = _grid(hs, hs)
    for py, px in pts:
        rd, amp = rng.uniform(0.5, 1.2), rng.uniform(0.1, 0.25)
        dist = np.hypot(yy + hs - py, xx + hs - px)
        np.maximum(delta, amp * np.clip(rd + 0.5 - dist, 0.0, 1.0), out=delta)
    return _centred_on_box(delta)


def _centred_on_box(delta: np.ndarray) -> np.ndarray:
    """``delta`` padded with zeros so that its box centre is the patch centre."""
    box = _tight_box(delta)
    if box is None:
        return delta
    x0, y0, x1, y1 = box
    shift_y = (y0 + y1 - 1) - (delta.shape[0] - 1)  # twice the offset of the box centre
    shift_x = (x0 + x1 - 1) - (delta.shape[1] - 1)
    pad_y = (max(-shift_y, 0), max(shift_y, 0))  # a box centre below: rows added below
    pad_x = (max(-shift_x, 0), max(shift_x, 0))
    return np.pad(delta, (pad_y, pad_x))


_BLOB_RENDERERS: dict[str, Callable[[np.random.Generator, float], np.ndarray]] = {
    "Mass": _render_mass,
    "Suspicious Calcification": _render_calcifications,
    "Asymmetry": lambda rng, s: _render_asymmetry(rng, s, "Asymmetry"),
    "Focal Asymmetry": lambda rng, s: _render_asymmetry(rng, s, "Focal Asymmetry"),
    "Global Asymmetry": lambda rng, s: _render_asymmetry(rng, s, "Global Asymmetry"),
    "Architectural Distortion": _render_distortion,
    "Suspicious Lymph Node": _render_lymph_node,
}
#: ``difficulty="hard"``: renderers that replace the standard ones (small, faint masses and
#: clustered microcalcifications, outside what the demo model was trained on).
_HARD_RENDERERS: dict[str, Callable[[np.random.Generator, float], np.ndarray]] = {
    "Mass": _render_small_mass,
    "Suspicious Calcification": _render_microcalcifications,
}
# Larger findings are placed first so the small ones fill the gaps.
_PLACE_ORDER = ("Global Asymmetry", "Asymmetry", "Mass", "Focal Asymmetry",
                "Suspicious Calcification", "Architectural Distortion", "Suspicious Lymph Node")


def _extent(delta: np.ndarray) -> float:
    """Largest distance (px) from the patch centre to a pixel inside the finding's box."""
    box = _tight_box(delta)
    if box is None:
        return 0.0
    cy, cx = (delta.shape[0] - 1) / 2.0, (delta.shape[1] - 1) / 2.0
    x0, y0, x1, y1 = box
    dy = max(abs(y0 - cy), abs(y1 - 1 - cy))
    dx = max(abs(x0 - cx), abs(x1 - 1 - cx))
    return math.hypot(dy, dx)


def _choose_categories(rng: np.random.Generator, findings: Sequence[str] | None, *,
                       hard: bool = False) -> list[str]:
    if findings is None and hard:
        cats = [str(c) for c in rng.choice(list(_HARD_RENDERERS), size=int(rng.integers(1, 4)))]
    elif findings is None:
        names = list(_WEIGHTS)
        p = np.array([_WEIGHTS[c] for c in names])
        cats = [str(c) for c in rng.choice(names, size=int(rng.integers(0, 4)), p=p / p.sum())]
        if cats.count("Nipple Retraction") > 1:
            cats = [c for c in cats if c != "Nipple Retraction"] + ["Nipple Retraction"]
    else:
        cats = [str(c).strip() for c in findings]
    unknown = [c for c in cats if c not in _BIRADS]
    if unknown:
        raise ValueError(f"unknown finding categories {unknown}; known: {list(CATEGORIES)}")
    if cats.count("Nipple Retraction") > 1:
        raise ValueError("a breast has one nipple: at most one 'Nipple Retraction'")
    return cats
