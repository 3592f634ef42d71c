"""Synthetic mammograms in the VinDr-Mammo layout (docs/method.md §3, §11).

The credentialed VinDr-Mammo data set is never committed (docs/method.md §11), so tests, the demo
model and the ``correlax synth`` command use phantoms made here:

- :func:`make_phantom` draws one mammogram-like image: breast outline, skin line,
  subcutaneous fall-off, fibroglandular texture (power-law noise), a pectoral muscle in
  MLO views, and inserted findings of every docs/method.md §3 label, each with a tight box.
- :func:`write_dicom` stores a phantom as an uncompressed DICOM file.
- :func:`write_vindr_dataset` writes a whole data set: ``images/<study>/<image>.dicom``
  plus ``finding_annotations.csv`` and ``breast-level_annotations.csv``.
- ``difficulty="hard"`` (both functions) draws findings the demo model never saw in
  training: masses of radius 3-10 px with at most 0.05 contrast, tight clusters of
  microcalcifications, and some findings within 30 px of the skin line.

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

Modules: :mod:`.phantom` (:class:`Finding`, :class:`Phantom`, :func:`make_phantom`),
:mod:`.anatomy` (outline, texture, tissue, pectoral muscle), :mod:`.findings` (one
renderer per finding), :mod:`.placement` (where findings go, retractions, skin
thickening), :mod:`.dicom` (:func:`write_dicom`) and :mod:`.dataset`
(:func:`plan_vindr_dataset`, :func:`write_vindr_dataset`, the CSV columns).
"""

from .dataset import (
    BREAST_COLUMNS,
    FINDING_COLUMNS,
    PlannedImage,
    plan_vindr_dataset,
    write_vindr_dataset,
)
from .dicom import write_dicom
from .phantom import CATEGORIES, DIFFICULTIES, Finding, Phantom, make_phantom

__all__ = [
    "BREAST_COLUMNS",
    "CATEGORIES",
    "DIFFICULTIES",
    "FINDING_COLUMNS",
    "Finding",
    "Phantom",
    "PlannedImage",
    "make_phantom",
    "plan_vindr_dataset",
    "write_dicom",
    "write_vindr_dataset",
]
