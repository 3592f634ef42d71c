"""Finding labels (docs/method.md §3) and the VinDr-Mammo category grouping."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
#: The two most frequent lesion labels, shown first where room is short (the analysis
#: dock's default choice of labels, the training plot beside the macro F1).
HEADLINE_LABELS: tuple[str, ...] = (LABELS[1], LABELS[2])

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
    """Return the docs/method.md §3 label for a VinDr-Mammo category, or None if unused."""
    return VINDR_GROUPS.get(category.strip())


def lesion_labels(labels: Iterable[str]) -> list[str]:
    """The labels that name a lesion, in order: every label but "No Finding"."""
    return [lab for lab in labels if lab != NO_FINDING]


def lesion_label_indices(labels: Sequence[str]) -> list[int]:
    """Indices of :func:`lesion_labels` in ``labels`` (all indices if that leaves none)."""
    lesions = [i for i, lab in enumerate(labels) if lab != NO_FINDING]
    return lesions or list(range(len(labels)))
