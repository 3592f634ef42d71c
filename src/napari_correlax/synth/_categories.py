"""What the phantoms can show: finding categories, their BI-RADS values and frequencies,
and the breast densities (docs/method.md §3, §11)."""

from __future__ import annotations

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
# One VinDr spelling per docs/method.md §3 label first, then the other spellings, so a data set
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
