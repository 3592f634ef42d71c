"""Synthetic mammograms in the VinDr-Mammo layout (SPEC §3, §11).

The credentialed VinDr-Mammo data set is never committed (SPEC §11), so tests, the demo
model and the ``correlax synth`` command use phantoms made here:

- :func:`make_phantom` draws one mammogram-like image: breast outline, skin line,
  subcutaneous fall-off, fibroglandular texture (power-law noise), a pectoral muscle in
  MLO views, and inserted findings of every SPEC §3 label, each with a tight box.
- :func:`write_dicom` stores a phantom as an uncompressed DICOM file.
- :func:`write_vindr_dataset` writes a whole data set: ``images/<study>/<image>.dicom``
  plus ``finding_annotations.csv`` and ``breast-level_annotations.csv``.

Conventions (all in pixels of the image, row ``y`` down, column ``x`` right):

- Scale: one pixel is 0.1 mm (``spacing_mm``), so finding sizes are in physical
  proportion at that scale: masses 30-150 px across, calcification dots 2-5 px.
- Orientation: laterality ``"L"`` puts the chest wall at the left edge (nipple pointing
  right), ``"R"`` is its mirror image (chest wall at the right edge); the top of a CC
  image is lateral. This is DICOM's standard mammography orientation, written into
  PatientOrientation (``A\\R``, ``A\\FR`` for L CC, MLO; ``P\\L``, ``P\\FL`` for R).
  MLO views carry the pectoral muscle in the top chest-wall corner.
- Boxes are slice style: ``(xmin, ymin, xmax, ymax)`` with the maximum exclusive, so a
  finding's pixels are ``pixels[ymin:ymax, xmin:xmax]``. A box is the bounding box of
  the pixels where the finding changes the image by at least 10 % of its peak change.
- Determinism: shape, texture, findings and noise come from four independent streams
  spawned from ``seed``, so the same seed with and without findings gives the same
  breast, texture and noise (the difference image is exactly the findings).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from .labels import LABELS, NO_FINDING, VINDR_GROUPS

__all__ = [
    "BREAST_COLUMNS",
    "CATEGORIES",
    "FINDING_COLUMNS",
    "Finding",
    "Phantom",
    "PlannedImage",
    "make_phantom",
    "plan_vindr_dataset",
    "write_dicom",
    "write_vindr_dataset",
]

#: VinDr-Mammo categories the phantom can draw, with the BI-RADS values drawn for each.
_BIRADS: dict[str, tuple[str, ...]] = {
    "Mass": ("BI-RADS 3", "BI-RADS 4", "BI-RADS 4", "BI-RADS 5"),
    "Suspicious Calcification": ("BI-RADS 4", "BI-RADS 4", "BI-RADS 5"),
    "Asymmetry": ("BI-RADS 3",),
    "Focal Asymmetry": ("BI-RADS 3", "BI-RADS 4"),
    "Global Asymmetry": ("BI-RADS 3",),
    "Architectural Distortion": ("BI-RADS 4", "BI-RADS 5"),
    "Suspicious Lymph Node": ("BI-RADS 3", "BI-RADS 4"),
    "Skin Thickening": ("BI-RADS 3", "BI-RADS 4"),
    "Nipple Retraction": ("BI-RADS 4",),
    "Skin Retraction": ("BI-RADS 4", "BI-RADS 5"),
}
CATEGORIES: tuple[str, ...] = tuple(_BIRADS)
"""VinDr-Mammo category names :func:`make_phantom` accepts."""

# Relative frequency of each category in random draws (Mass and calcifications most often,
# as in VinDr-Mammo).
_WEIGHTS: dict[str, float] = {
    "Mass": 0.34,
    "Suspicious Calcification": 0.26,
    "Asymmetry": 0.04,
    "Focal Asymmetry": 0.08,
    "Global Asymmetry": 0.02,
    "Architectural Distortion": 0.08,
    "Suspicious Lymph Node": 0.06,
    "Skin Thickening": 0.05,
    "Nipple Retraction": 0.04,
    "Skin Retraction": 0.03,
}
# One VinDr spelling per SPEC §3 label first, then the other spellings, so a data set
# covers every label (and every grouping) as soon as it has room.
_COVERAGE: tuple[str, ...] = (
    "Mass",
    "Suspicious Calcification",
    "Focal Asymmetry",
    "Architectural Distortion",
    "Suspicious Lymph Node",
    "Skin Thickening",
    "Nipple Retraction",
    "Skin Retraction",
    "Asymmetry",
    "Global Asymmetry",
)
_DENSITIES = ("DENSITY A", "DENSITY B", "DENSITY C", "DENSITY D")
_DENSITY_P = (0.06, 0.22, 0.57, 0.15)
# Threshold on the unit-variance texture field above which tissue is fibroglandular.
_DENSITY_THRESHOLD = {"DENSITY A": 1.4, "DENSITY B": 0.7, "DENSITY C": 0.05, "DENSITY D": -0.6}
_SPACING_MM = 0.1
_BOX_FRACTION = 0.1  # a box holds the pixels changed by >= 10 % of the finding's peak


@dataclass
class Finding:
    """One inserted finding and its ground-truth box (SPEC §3, §11).

    ``box`` is ``(xmin, ymin, xmax, ymax)`` in image pixels, slice style (max exclusive).
    """

    category: str
    label: str
    box: tuple[int, int, int, int]
    birads: str


@dataclass
class Phantom:
    """A synthetic mammogram: ``pixels`` float32 H×W in [0, 1], tissue bright.

    ``spacing_mm`` is (row, column) pixel spacing; ``breast_mask`` is True on tissue
    (pectoral muscle included).
    """

    pixels: np.ndarray
    findings: list[Finding]
    laterality: str
    view: str
    spacing_mm: tuple[float, float]
    density: str = "DENSITY C"
    breast_mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def labels(self) -> list[str]:
        """Grouped SPEC §3 labels present, in label order (``["No Finding"]`` if none)."""
        present = {f.label for f in self.findings}
        return [lab for lab in LABELS if lab in present] or [NO_FINDING]


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- anatomy


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


def _disk(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy = np.arange(shape[0], dtype=np.float32)[:, None]
    xx = np.arange(shape[1], dtype=np.float32)[None, :]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# --------------------------------------------------------------------------- tissue


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


# --------------------------------------------------------------------------- findings
# Each renderer returns a patch of intensity change centred on the patch centre, at a
# size multiplied by ``s`` (<= 1 when the breast is too small for the full size).


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


_BLOB_RENDERERS: dict[str, Callable[[np.random.Generator, float], np.ndarray]] = {
    "Mass": _render_mass,
    "Suspicious Calcification": _render_calcifications,
    "Asymmetry": lambda rng, s: _render_asymmetry(rng, s, "Asymmetry"),
    "Focal Asymmetry": lambda rng, s: _render_asymmetry(rng, s, "Focal Asymmetry"),
    "Global Asymmetry": lambda rng, s: _render_asymmetry(rng, s, "Global Asymmetry"),
    "Architectural Distortion": _render_distortion,
    "Suspicious Lymph Node": _render_lymph_node,
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


def _choose_categories(rng: np.random.Generator, findings: Sequence[str] | None) -> list[str]:
    if findings is None:
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


def _add_blobs(cv: _Canvas, rng: np.random.Generator, cats: list[str]) -> None:
    """Place compact findings fully inside the breast, off the pectoral, apart if possible.

    A finding too large for the breast is redrawn smaller (×0.75 at a time).
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
    for i in order:
        scale = 1.0
        for _ in range(10):
            delta = _BLOB_RENDERERS[cats[i]](rng, scale)
            free = d_place >= _extent(delta) + gap
            if free.any():
                break
            scale *= 0.75
        choices = [free & ~cv.occupied, free]
        if cats[i] == "Suspicious Lymph Node":
            choices.insert(0, choices[0] & _lymph_node_region(cv))
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


# --------------------------------------------------------------------------- phantom


def make_phantom(seed: int, shape: tuple[int, int] = (1024, 640), view: str = "CC",
                 laterality: str = "L", findings: Sequence[str] | None = None, *,
                 density: str | None = None) -> Phantom:
    """Draw one synthetic mammogram with ground-truth boxes (SPEC §3, §11).

    Args:
        seed: makes the image reproducible; the same seed gives the same breast,
            texture and noise whatever ``findings`` asks for.
        shape: (rows, columns) in pixels at 0.1 mm per pixel; both at least 128.
        view: ``"CC"`` or ``"MLO"`` (MLO adds the pectoral muscle at the top of the
            chest wall).
        laterality: ``"L"`` (chest wall at the left edge) or ``"R"`` (mirrored).
        findings: VinDr-Mammo category names to insert (see :data:`CATEGORIES`);
            ``None`` draws 0-3 random findings, ``[]`` gives a No Finding image.
        density: ``"DENSITY A"`` .. ``"DENSITY D"`` (fibroglandular fraction), drawn
            from the seed when None.

    Returns:
        A :class:`Phantom` whose findings are listed in the order requested, each with a
        box in image pixels (slice style, see the module docstring). In a small image
        findings may be drawn smaller than their usual size, or overlap.
    """
    view, laterality = view.upper(), laterality.upper()
    if view not in ("CC", "MLO"):
        raise ValueError(f"view must be 'CC' or 'MLO', not {view!r}")
    if laterality not in ("L", "R"):
        raise ValueError(f"laterality must be 'L' or 'R', not {laterality!r}")
    h, w = int(shape[0]), int(shape[1])
    if h < 128 or w < 128:
        raise ValueError(f"phantom shape must be at least 128×128, not {shape}")
    shape_rng, tex_rng, find_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    cats = _choose_categories(find_rng, findings)
    if density is None:
        density = str(shape_rng.choice(_DENSITIES, p=_DENSITY_P))
    if density not in _DENSITY_THRESHOLD:
        raise ValueError(f"density must be one of {_DENSITIES}, not {density!r}")

    mask0, nipple, pect_edge, bump, half = _outline(shape_rng, (h, w), view)
    mask_ref = mask0 | _disk((h, w), nipple[0], nipple[1] - 0.3 * bump, bump)
    gland, fine = _texture(tex_rng, (h, w), nipple, half, density)
    cv = _Canvas(mask=(mask0 if "Nipple Retraction" in cats else mask_ref).copy(),
                 nipple=nipple, half=half, pect_edge=pect_edge, gland=gland, fine=fine,
                 depth_scale=float(np.clip(0.06 * w, 8.0, 80.0)),
                 skin_w=float(np.clip(0.009 * w, 3.0, 14.0)))
    cv.occupied = np.zeros((h, w), bool)

    # Retractions change the outline, so they come before the tissue is drawn.
    d_ref = _distance(mask_ref)
    notches = _cut_retractions(cv, find_rng, cats, mask_ref, d_ref, bump)
    cv.d = _distance(cv.mask)
    cv.pixels = _tissue(cv.d, gland, fine, cv.depth_scale, cv.skin_w)
    _add_retraction_strands(cv, find_rng, notches, d_ref)
    _add_pectoral(cv)
    for i, c in enumerate(cats):
        if c == "Skin Thickening":
            _add_skin_thickening(cv, find_rng, i)
    if any(c in _BLOB_RENDERERS for c in cats):
        _add_blobs(cv, find_rng, cats)

    # Quantum noise: stronger on tissue than on the (near-black) background.
    pixels = cv.pixels
    pixels += noise_rng.standard_normal((h, w), dtype=np.float32) * np.where(
        cv.mask, np.float32(0.008), np.float32(0.003))
    np.clip(pixels, 0.0, 1.0, out=pixels)

    out: list[Finding] = []
    for i, c in enumerate(cats):
        delta, r0, c0 = cv.placed[i]
        box = _tight_box(delta)
        if box is None:  # pragma: no cover - every renderer draws something
            raise RuntimeError(f"finding {c!r} left no trace in the phantom")
        x0, y0, x1, y1 = box[0] + c0, box[1] + r0, box[2] + c0, box[3] + r0
        if laterality == "R":
            x0, x1 = w - x1, w - x0
        out.append(Finding(c, VINDR_GROUPS[c], (x0, y0, x1, y1),
                           str(find_rng.choice(_BIRADS[c]))))

    mask = cv.mask
    if laterality == "R":
        pixels = np.ascontiguousarray(pixels[:, ::-1])
        mask = np.ascontiguousarray(mask[:, ::-1])
    return Phantom(pixels=pixels.astype(np.float32, copy=False), findings=out,
                   laterality=laterality, view=view, spacing_mm=(_SPACING_MM, _SPACING_MM),
                   density=density, breast_mask=mask)


# --------------------------------------------------------------------------- DICOM


_MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix="2.25.", entropy_srcs=[str(p) for p in parts]))


def write_dicom(path: str | PathLike[str], phantom: Phantom, *,
                photometric: str = "MONOCHROME2", bits_stored: int = 16,
                study_id: str = "study", series_id: str = "series",
                image_id: str = "image") -> Path:
    """Write ``phantom`` as an uncompressed DICOM mammogram (explicit VR little endian).

    Stored values are ``round(pixels · (2**bits_stored − 1))``; for MONOCHROME1 they are
    ``(2**bits_stored − 1) − that``, so a reader that inverts MONOCHROME1 gets the
    phantom back within one quantisation step. The file carries a DICM preamble,
    ImagerPixelSpacing (mm, row then column), ImageLaterality, ViewPosition,
    PatientOrientation, a window covering the full range, rescale 1/0 and UIDs derived
    from the ids. Written atomically (SPEC §1, §11).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from .files import atomic_write

    photometric = photometric.upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, not {photometric!r}")
    if not 8 < bits_stored <= 16:
        raise ValueError(f"bits_stored must be 9..16, not {bits_stored}")
    top = (1 << bits_stored) - 1
    stored = np.rint(np.clip(phantom.pixels, 0.0, 1.0) * top).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)

    sop_uid = _uid("sop", study_id, series_id, image_id)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid("study", study_id)
    ds.SeriesInstanceUID = _uid("series", study_id, series_id)
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "napari-correlax synthetic phantom"
    ds.PatientID = study_id[:64]
    ds.PatientName = "Phantom^Synthetic"
    ds.StudyID = study_id[:16]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = phantom.laterality
    ds.Laterality = phantom.laterality
    ds.ViewPosition = phantom.view
    # Rows run nipple-ward for L (anterior) and chest-ward for R (posterior); columns run
    # from the lateral side towards the other breast, and feet-ward in MLO.
    medial = "R" if phantom.laterality == "L" else "L"
    ds.PatientOrientation = ["A" if phantom.laterality == "L" else "P",
                             "F" + medial if phantom.view == "MLO" else medial]
    ds.ImagerPixelSpacing = [f"{phantom.spacing_mm[0]:g}", f"{phantom.spacing_mm[1]:g}"]
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = f"{(top + 1) / 2:g}"
    ds.WindowWidth = f"{top + 1:g}"
    ds.PixelData = stored.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"

    def write(fh) -> None:
        pydicom.dcmwrite(fh, ds, enforce_file_format=True)

    return atomic_write(path, write)


# --------------------------------------------------------------------------- data set

FINDING_COLUMNS = ("study_id", "series_id", "image_id", "laterality", "view_position", "height",
                   "width", "breast_birads", "breast_density", "finding_categories",
                   "finding_birads", "xmin", "ymin", "xmax", "ymax", "split")
BREAST_COLUMNS = ("study_id", "series_id", "image_id", "laterality", "view_position", "height",
                  "width", "breast_birads", "breast_density", "split")
# VinDr-Mammo stores four views per study.
_STUDY_VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


def _hex_id(rng: np.random.Generator) -> str:
    return rng.bytes(16).hex()


def _assign_categories(rng: np.random.Generator, n_images: int) -> list[list[str]]:
    """1-3 categories per image, covering every label as soon as there are slots."""
    counts = [int(c) for c in rng.integers(1, 4, n_images)]
    want = min(len(_COVERAGE), 3 * n_images)
    i = 0
    while sum(counts) < want:  # make room for one of each label
        if counts[i % n_images] < 3:
            counts[i % n_images] += 1
        i += 1
    slots: list[list[str]] = [[] for _ in range(n_images)]
    # Round robin over images, so the coverage list is spread across them.
    order = [k for level in range(3) for k in range(n_images) if counts[k] > level]
    queue = list(_COVERAGE[:want])
    names = list(_WEIGHTS)
    p = np.array([_WEIGHTS[c] for c in names])
    p /= p.sum()
    for k in order:
        cat = None
        for j, c in enumerate(queue):
            if not (c == "Nipple Retraction" and c in slots[k]):
                cat = queue.pop(j)
                break
        while cat is None or (cat == "Nipple Retraction" and cat in slots[k]):
            cat = str(rng.choice(names, p=p))
        slots[k].append(cat)
    return slots


def _birads_value(text: str) -> int:
    digits = "".join(ch for ch in text if ch.isdigit())
    return int(digits) if digits else 0


@dataclass
class PlannedImage:
    """What :func:`write_vindr_dataset` writes for one image (ids are VinDr-like hex)."""

    study_id: str
    series_id: str
    image_id: str
    laterality: str
    view: str
    split: str
    density: str
    seed: int
    categories: list[str]
    photometric: str
    bits_stored: int

    def phantom(self, shape: tuple[int, int]) -> Phantom:
        """The phantom of this image (the same one the data set writer stores)."""
        return make_phantom(self.seed, shape, self.view, self.laterality, self.categories,
                            density=self.density)


def plan_vindr_dataset(n_images: int, seed: int = 0, test_fraction: float = 0.25,
                       no_finding_fraction: float = 0.3) -> list[PlannedImage]:
    """Decide ids, views, splits and findings of a synthetic data set (SPEC §11).

    Studies hold up to four images (R CC, L CC, R MLO, L MLO) and are split whole into
    ``training`` and ``test`` (about ``test_fraction`` of the studies, at least one of
    each when there are two studies or more). In each split about
    ``no_finding_fraction`` of the images are No Finding; the others carry 1-3
    findings, assigned so that every SPEC §3 label (then every VinDr spelling that
    groups into one) appears as soon as the split has room for it; further findings are
    drawn with Mass and Suspicious Calcification the most frequent. Images alternate
    MONOCHROME2/MONOCHROME1 and BitsStored 12/14/16. Deterministic in ``seed``.
    """
    if n_images < 1:
        raise ValueError("n_images must be at least 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    n_studies = math.ceil(n_images / 4)
    studies = [_hex_id(rng) for _ in range(n_studies)]
    n_test = round(n_studies * test_fraction)
    if n_studies >= 2:
        n_test = min(max(n_test, 1 if test_fraction > 0 else 0),
                     n_studies - (1 if test_fraction < 1 else 0))
    test_studies = set(rng.permutation(n_studies)[:n_test].tolist())
    densities = [str(rng.choice(_DENSITIES, p=_DENSITY_P)) for _ in range(n_studies)]

    images = range(n_images)
    split_of = ["test" if i // 4 in test_studies else "training" for i in images]
    cats: list[list[str]] = [[] for _ in images]
    for split in ("training", "test"):
        members = [i for i in images if split_of[i] == split]
        if not members:
            continue
        n_nf = round(len(members) * no_finding_fraction)
        n_nf = min(n_nf, len(members) - 1) if no_finding_fraction < 1 else len(members)
        shuffled = [members[k] for k in rng.permutation(len(members))]
        with_findings = sorted(shuffled[n_nf:])
        if with_findings:
            for i, c in zip(with_findings, _assign_categories(rng, len(with_findings))):
                cats[i] = c

    plan = []
    for i in images:
        laterality, view = _STUDY_VIEWS[i % 4]
        plan.append(PlannedImage(
            study_id=studies[i // 4], series_id=_hex_id(rng), image_id=_hex_id(rng),
            laterality=laterality, view=view, split=split_of[i], density=densities[i // 4],
            seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]),
            categories=cats[i], photometric=("MONOCHROME2", "MONOCHROME1")[i % 2],
            bits_stored=(12, 14, 16)[i % 3]))
    return plan


def write_vindr_dataset(root: str | PathLike[str], n_images: int, seed: int = 0,
                        shape: tuple[int, int] = (1024, 640), test_fraction: float = 0.25,
                        no_finding_fraction: float = 0.3) -> Path:
    """Write a synthetic data set in the VinDr-Mammo layout (SPEC §11) under ``root``.

    Files: ``root/images/<study_id>/<image_id>.dicom``, ``root/finding_annotations.csv``
    (one row per box; a No Finding image has one row with ``['No Finding']`` and empty
    box fields) and ``root/breast-level_annotations.csv`` (one row per image). What goes
    where is :func:`plan_vindr_dataset` (same arguments); each image is
    ``PlannedImage.phantom(shape)``. ``breast_birads`` is the highest finding BI-RADS of
    the image (BI-RADS 1 when none); ``breast_density`` is shared by the images of a
    study. Boxes are in image pixels, slice style (see :class:`Finding`), written as
    decimals like VinDr's. Returns ``root``.
    """
    from .files import atomic_write_text

    root = Path(root)
    finding_rows: list[list[str]] = []
    breast_rows: list[list[str]] = []
    for item in plan_vindr_dataset(n_images, seed, test_fraction, no_finding_fraction):
        ph = item.phantom(shape)
        write_dicom(root / "images" / item.study_id / f"{item.image_id}.dicom", ph,
                    photometric=item.photometric, bits_stored=item.bits_stored,
                    study_id=item.study_id, series_id=item.series_id, image_id=item.image_id)
        birads = max((f.birads for f in ph.findings), key=_birads_value, default="BI-RADS 1")
        head = [item.study_id, item.series_id, item.image_id, item.laterality, item.view,
                str(shape[0]), str(shape[1]), birads, item.density]
        breast_rows.append([*head, item.split])
        if not ph.findings:
            finding_rows.append([*head, str([NO_FINDING]), "", "", "", "", "", item.split])
        for f in ph.findings:
            finding_rows.append([*head, str([f.category]), f.birads,
                                 *(f"{float(v):.1f}" for v in f.box), item.split])

    def table(columns: Sequence[str], rows: list[list[str]]) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buf.getvalue()

    atomic_write_text(root / "finding_annotations.csv", table(FINDING_COLUMNS, finding_rows))
    atomic_write_text(root / "breast-level_annotations.csv", table(BREAST_COLUMNS, breast_rows))
    return root
