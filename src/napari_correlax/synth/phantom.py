"""One synthetic mammogram with ground-truth boxes: :func:`make_phantom` (method §3, §11)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..labels import LABELS, NO_FINDING, VINDR_GROUPS
from ._canvas import _Canvas
from ._categories import _BIRADS, _DENSITIES, _DENSITY_P, _DENSITY_THRESHOLD, CATEGORIES
from ._primitives import _disk, _distance, _tight_box
from .anatomy import _add_pectoral, _outline, _texture, _tissue
from .findings import _BLOB_RENDERERS, _choose_categories
from .placement import (
    _add_blobs,
    _add_retraction_strands,
    _add_skin_thickening,
    _cut_retractions,
)

__all__ = ["CATEGORIES", "DIFFICULTIES", "Finding", "Phantom", "make_phantom"]

_SPACING_MM = 0.1
#: What :func:`make_phantom`'s ``difficulty`` accepts.
DIFFICULTIES = ("standard", "hard")


@dataclass
class Finding:
    """One inserted finding and its ground-truth box (docs/method.md §3, §11).

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
        """Grouped docs/method.md §3 labels present, in label order (``["No Finding"]`` if none)."""
        present = {f.label for f in self.findings}
        return [lab for lab in LABELS if lab in present] or [NO_FINDING]


def make_phantom(seed: int, shape: tuple[int, int] = (1024, 640), view: str = "CC",
                 laterality: str = "L", findings: Sequence[str] | None = None, *,
                 density: str | None = None, difficulty: str = "standard") -> Phantom:
    """Draw one synthetic mammogram with ground-truth boxes (docs/method.md §3, §11).

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
        difficulty: ``"standard"`` (the findings the demo model was trained on) or
            ``"hard"``: masses of radius 3-10 px that change pixel values by at most
            0.05, tight clusters of microcalcifications (dots of 0.5-1.2 px radius, 5 px apart,
            contrast 0.1-0.25), and about 40 % of the compact findings with their box
            centre within 30 px of the skin line; ``None`` findings then draws 1-3 masses
            and calcifications. Other categories are drawn as in ``"standard"``. The
            breast, texture and noise are the same as the standard phantom of the seed.

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
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, not {difficulty!r}")
    hard = difficulty == "hard"
    cats = _choose_categories(find_rng, findings, hard=hard)
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
                 skin_w=float(np.clip(0.009 * w, 3.0, 14.0)), hard=hard)
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
