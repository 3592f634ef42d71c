"""Finding labels (SPEC §3) and the VinDr-Mammo category grouping."""

from __future__ import annotations

LABELS: tuple[str, ...] = (
    "No Finding",
    "Mass",
    "Suspicious Calcification",
    "Asymmetries",
    "Architectural Distortion",
    "Suspicious Lymph Node",
    "Skin Thickening",
    "Retractions",
)
"""The eight multi-label outputs, in model output order."""

NO_FINDING = LABELS[0]

#: VinDr-Mammo ``finding_categories`` entries mapped onto :data:`LABELS`.
VINDR_GROUPS: dict[str, str] = {
    "No Finding": "No Finding",
    "Mass": "Mass",
    "Suspicious Calcification": "Suspicious Calcification",
    "Asymmetry": "Asymmetries",
    "Focal Asymmetry": "Asymmetries",
    "Global Asymmetry": "Asymmetries",
    "Architectural Distortion": "Architectural Distortion",
    "Suspicious Lymph Node": "Suspicious Lymph Node",
    "Skin Thickening": "Skin Thickening",
    "Nipple Retraction": "Retractions",
    "Skin Retraction": "Retractions",
}


def group_category(category: str) -> str | None:
    """Return the SPEC §3 label for a VinDr-Mammo category, or None if unused."""
    return VINDR_GROUPS.get(category.strip())
