"""A synthetic data set in the VinDr-Mammo layout (docs/method.md §11): what goes where
(:func:`plan_vindr_dataset`) and the writer (:func:`write_vindr_dataset`)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from ..labels import NO_FINDING
from ._categories import _COVERAGE, _DENSITIES, _DENSITY_P, _WEIGHTS
from .dicom import write_dicom
from .findings import _HARD_RENDERERS
from .phantom import DIFFICULTIES, Phantom, make_phantom

__all__ = [
    "BREAST_COLUMNS",
    "FINDING_COLUMNS",
    "PlannedImage",
    "plan_vindr_dataset",
    "write_vindr_dataset",
]

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


def _hard_categories(assigned: list[list[str]]) -> list[list[str]]:
    """The same number of findings per image, alternating Mass and Suspicious
    Calcification over the data set (so both appear as soon as there are two findings)."""
    names = list(_HARD_RENDERERS)
    out, k = [], 0
    for slots in assigned:
        out.append([names[(k + j) % len(names)] for j in range(len(slots))])
        k += len(slots)
    return out


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
    difficulty: str = "standard"

    def phantom(self, shape: tuple[int, int]) -> Phantom:
        """The phantom of this image (the same one the data set writer stores)."""
        return make_phantom(self.seed, shape, self.view, self.laterality, self.categories,
                            density=self.density, difficulty=self.difficulty)


def plan_vindr_dataset(n_images: int, seed: int = 0, test_fraction: float = 0.25,
                       no_finding_fraction: float = 0.3, difficulty: str = "standard"
                       ) -> list[PlannedImage]:
    """Decide ids, views, splits and findings of a synthetic data set (docs/method.md §11).

    Studies hold up to four images (R CC, L CC, R MLO, L MLO) and are split whole into
    ``training`` and ``test`` (about ``test_fraction`` of the studies, at least one of
    each when there are two studies or more). In each split about
    ``no_finding_fraction`` of the images are No Finding; the others carry 1-3
    findings, assigned so that every docs/method.md §3 label (then every VinDr spelling that
    groups into one) appears as soon as the split has room for it; further findings are
    drawn with Mass and Suspicious Calcification the most frequent. Images alternate
    MONOCHROME2/MONOCHROME1 and BitsStored 12/14/16. Deterministic in ``seed``.

    ``difficulty="hard"`` (see :func:`~napari_correlax.synth.make_phantom`): images with
    findings carry 1-3 hard masses and microcalcification clusters, both present as soon
    as the split has two findings; ids, views, splits and breasts are those of the
    standard plan of the same seed.
    """
    if n_images < 1:
        raise ValueError("n_images must be at least 1")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, not {difficulty!r}")
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
            assigned = _assign_categories(rng, len(with_findings))
            if difficulty == "hard":
                assigned = _hard_categories(assigned)
            for i, c in zip(with_findings, assigned):
                cats[i] = c

    plan = []
    for i in images:
        laterality, view = _STUDY_VIEWS[i % 4]
        plan.append(PlannedImage(
            study_id=studies[i // 4], series_id=_hex_id(rng), image_id=_hex_id(rng),
            laterality=laterality, view=view, split=split_of[i], density=densities[i // 4],
            seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]),
            categories=cats[i], photometric=("MONOCHROME2", "MONOCHROME1")[i % 2],
            bits_stored=(12, 14, 16)[i % 3], difficulty=difficulty))
    return plan


def write_vindr_dataset(root: str | PathLike[str], n_images: int, seed: int = 0,
                        shape: tuple[int, int] = (1024, 640), test_fraction: float = 0.25,
                        no_finding_fraction: float = 0.3, difficulty: str = "standard") -> Path:
    """Write a synthetic data set in the VinDr-Mammo layout (docs/method.md §11) under ``root``.

    Files: ``root/images/<study_id>/<image_id>.dicom``, ``root/finding_annotations.csv``
    (one row per box; a No Finding image has one row with ``['No Finding']`` and empty
    box fields) and ``root/breast-level_annotations.csv`` (one row per image). What goes
    where is :func:`plan_vindr_dataset` (same arguments); each image is
    ``PlannedImage.phantom(shape)``. ``breast_birads`` is the highest finding BI-RADS of
    the image (BI-RADS 1 when none); ``breast_density`` is shared by the images of a
    study. Boxes are in image pixels, slice style (see :class:`Finding`), written as
    decimals like VinDr's. Returns ``root``.
    """
    from ..files import atomic_write_text

    root = Path(root)
    finding_rows: list[list[str]] = []
    breast_rows: list[list[str]] = []
    for item in plan_vindr_dataset(n_images, seed, test_fraction, no_finding_fraction,
                                   difficulty):
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
