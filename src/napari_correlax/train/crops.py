"""The crop data set of docs/method.md §5 (paper §3.3): one sample per box, re-drawn every epoch.

Coordinates: image pixels of the stored image, ``x`` = column, ``y`` = row, continuous
with pixel ``i`` covering ``[i, i + 1)`` (so a VinDr box ``xmin..xmax`` covers columns
``xmin`` to ``xmax`` exclusive and its centre is ``(xmin + xmax) / 2``).

Samples (:func:`build_samples`):

- Every annotated box is one multi-label sample; boxes of one image with the same
  corners (VinDr writes one row per box with a category list) are one sample holding
  all their labels.
- Every No Finding image (no usable box) is one negative sample with the target
  ``No Finding``; its crop centre is drawn anew each epoch, uniformly over the breast.

Crop windows (:func:`draw_window`), re-drawn every epoch around the box centre:

- area = ``s`` × box area with ``s`` uniform in [0.05, 5], aspect ratio (width /
  height) ``r`` log-uniform in [0.33, 1.66] (torchvision ``RandomResizedCrop``'s
  convention); width ``√(area·r)``, height ``√(area/r)``, centred on the box centre.
- Negatives use the same distribution around a reference box whose width and height
  are the medians of the training boxes.
- A window that reaches past the image border is *padded*, not shifted: the part
  outside the image is black (0), so the box centre stays the crop centre and the
  scale is exact. The cache keeps the breast region plus a margin (see
  :class:`FusedImageCache`); beyond it the image is background and also reads as 0.

Augmentations at training time (docs/method.md §5), each with probability 0.5, drawn from a
generator seeded by ``(seed, epoch, sample index)`` so a sample's crop does not depend
on worker order and a resumed run sees exactly the crops an uninterrupted one would:
horizontal flip, vertical flip, rotation by an angle uniform in ±30° about the crop
centre (the rotated window is sampled from the image, so its corners hold image
content, not fill), and colour jitter (brightness, contrast and saturation factors
uniform in [0.8, 1.2], hue shift uniform in ±0.05 of the colour circle, applied in that
order). Flips, rotation and the resize to ``input_size`` × ``input_size`` are one
bilinear affine resampling (OpenCV ``warpAffine``) of the CLAHE-fused image
(:func:`~napari_correlax.preprocess.fuse_channels`).

Window-scale samples (opt-in, off by default; not part of the paper's recipe). Sliding-window
inference (docs/method.md §6) sees ``input_size`` × ``input_size`` windows of native pixels, where
small lesions look much smaller than in the box crops above and most windows hold only
normal tissue. Two options of :class:`CropConfig` add training samples at that scale:

- ``window_share`` (probability in [0, 1]): a positive sample is, with this probability,
  a window of exactly ``input_size`` native pixels (no resize) whose centre is offset
  from the box centre by ``(dx, dy)``, each uniform in ``±window_central · input_size / 2``,
  so the box centre lies in the central ``window_central`` part of the window and a small
  lesion is fully or mostly inside. Its labels are the box's labels. Flips, rotation and
  jitter apply as above (rotation about the window centre keeps the box centre inside).
- ``window_negatives`` (``K``): every training epoch adds ``K`` items after the samples
  (indices ``N … N + K − 1``), each a native-scale window of ``input_size`` pixels on a
  training image drawn uniformly, centred on a point uniform over its breast, whose
  tissue fraction (share of the window's ``step``-pixel cells that lie on the breast) is
  at least ``window_tissue`` and which overlaps no annotated box of that image (any
  label). Up to 32 centres are tried; the non-overlapping one with the most tissue is
  kept (the last try if none is free). Target: ``No Finding``.

All these draws come from the same per-item generator seeded by ``(seed, epoch, index)``.

Validation/test crops: the box itself; for a No Finding image a window of the median
training box size centred on the breast's centroid; resized, nothing else.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import CorrelaxError
from ..files import atomic_write, atomic_write_text
from ..labels import NO_FINDING
from ..preprocess import Preprocessing
from .settings import CropConfig

if TYPE_CHECKING:
    from ..io.vindr import ImageRecord

__all__ = [
    "CachedImage",
    "CropConfig",
    "CropDataset",
    "CropSample",
    "FusedImageCache",
    "Window",
    "build_samples",
    "color_jitter",
    "draw_window",
    "epoch_indices",
    "median_box_size",
    "render_window",
    "sample_weights",
    "shard_indices",
]


#: The recipe's crops (docs/method.md §5).
DEFAULT_CROP = CropConfig()


@dataclass(frozen=True)
class Window:
    """A crop window: centre ``(cx, cy)`` and size ``(width, height)`` in image pixels."""

    cx: float
    cy: float
    width: float
    height: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` before any rotation."""
        return (self.cx - self.width / 2, self.cy - self.height / 2,
                self.cx + self.width / 2, self.cy + self.height / 2)


@dataclass
class CropSample:
    """One sample: an image (index into the record list) and a box, or a negative.

    ``box`` is ``(xmin, ymin, xmax, ymax)`` in image pixels, None for a No Finding
    image; ``target`` is the ``(C,)`` float32 multi-hot label vector.
    """

    image: int
    box: tuple[float, float, float, float] | None
    target: np.ndarray = field(repr=False)


# --------------------------------------------------------------------------- samples


def _is_negative(record: Any, labels: Sequence[str]) -> bool:
    return not any(b.label in labels and b.label != NO_FINDING for b in record.boxes)


def build_samples(records: Sequence[ImageRecord], labels: Sequence[str]) -> list[CropSample]:
    """Samples of docs/method.md §5 from :class:`~napari_correlax.io.vindr.ImageRecord` s.

    Boxes whose label is not in ``labels`` are ignored. A No Finding image gives a
    negative sample only when ``labels`` holds ``"No Finding"``; an image whose boxes
    all carry labels outside ``labels`` gives no sample.
    """
    labels = list(labels)
    column = {lab: i for i, lab in enumerate(labels)}
    samples: list[CropSample] = []
    for index, record in enumerate(records):
        if _is_negative(record, labels):
            if NO_FINDING in column and not record.boxes:
                target = np.zeros(len(labels), dtype=np.float32)
                target[column[NO_FINDING]] = 1.0
                samples.append(CropSample(index, None, target))
            continue
        grouped: dict[tuple[float, float, float, float], np.ndarray] = {}
        for b in record.boxes:
            if b.label not in column or b.label == NO_FINDING:
                continue
            corners = (float(b.xmin), float(b.ymin), float(b.xmax), float(b.ymax))
            target = grouped.setdefault(corners, np.zeros(len(labels), dtype=np.float32))
            target[column[b.label]] = 1.0
        samples.extend(CropSample(index, corners, t) for corners, t in grouped.items())
    return samples


def sample_weights(targets: np.ndarray) -> np.ndarray:
    """Inverse-label-frequency sampling weights (docs/method.md §5).

    ``targets`` is ``(N, C)`` multi-hot. Label ``c`` has frequency ``n_c`` (number of
    samples holding it); a sample's weight is ``1 / n_c`` for its label, and for a sample
    with several labels the largest of those (its rarest label). With these weights every
    label present is drawn about equally often. A sample with no label gets weight 0.
    """
    t = np.asarray(targets) > 0
    counts = t.sum(axis=0).astype(np.float64)
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    return np.where(t, inverse[None, :], 0.0).max(axis=1, initial=0.0)


def median_box_size(samples: Sequence[CropSample]) -> tuple[float, float] | None:
    """Median ``(width, height)`` of the samples' boxes in pixels; None without boxes."""
    boxes = np.array([s.box for s in samples if s.box is not None], dtype=np.float64)
    if not len(boxes):
        return None
    return (float(np.median(boxes[:, 2] - boxes[:, 0])),
            float(np.median(boxes[:, 3] - boxes[:, 1])))


def epoch_indices(weights: np.ndarray, num_samples: int, generator: torch.Generator,
                  rank: int = 0, world_size: int = 1, extra: int = 0) -> list[int]:
    """This rank's share of one epoch of weighted draws (with replacement).

    Every rank draws the same ``num_samples`` indices from its own copy of the shared
    ``generator`` (a ``torch.Generator`` seeded alike on every rank), pads them by
    wrapping to a multiple of ``world_size`` and keeps every ``world_size``-th from
    ``rank``: a ``DistributedSampler`` over a ``WeightedRandomSampler``. With ``extra`` > 0
    the indices ``len(weights) … len(weights) + extra − 1`` (window-scale negatives of
    :class:`CropDataset`) are appended once each and the whole list is shuffled with the
    same generator before sharding.
    """
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    drawn = torch.multinomial(w, num_samples, replacement=True, generator=generator).tolist()
    if extra > 0:
        drawn += list(range(len(w), len(w) + int(extra)))
        drawn = [drawn[i] for i in torch.randperm(len(drawn), generator=generator).tolist()]
    return shard_indices(drawn, rank, world_size)


def shard_indices(indices: Sequence[int], rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's share of an epoch's ``indices`` (the same list on every rank): padded by
    wrapping to a multiple of ``world_size``, then every ``world_size``-th from ``rank``,
    as ``DistributedSampler`` shards."""
    drawn = list(indices)
    per_rank = math.ceil(len(drawn) / world_size)
    drawn += drawn[: per_rank * world_size - len(drawn)]
    return drawn[rank::world_size]


# --------------------------------------------------------------------------- geometry


def draw_window(centre: tuple[float, float], size: tuple[float, float], rng: np.random.Generator,
                config: CropConfig = DEFAULT_CROP) -> Window:
    """A crop window around ``centre`` = ``(cx, cy)`` for a reference box of ``size``.

    ``size`` = ``(width, height)`` in pixels. The area is ``s · width · height`` with
    ``s`` uniform in ``config.scale``, the aspect ratio (window width / height) is
    log-uniform in ``config.aspect``; two values are drawn from ``rng``.
    """
    area = float(size[0]) * float(size[1]) * rng.uniform(*config.scale)
    lo, hi = np.log(config.aspect[0]), np.log(config.aspect[1])
    ratio = float(np.exp(rng.uniform(lo, hi)))
    return Window(float(centre[0]), float(centre[1]), math.sqrt(area * ratio),
                  math.sqrt(area / ratio))


def render_window(region: np.ndarray, offset: tuple[int, int], window: Window, out_size: int,
                  angle_deg: float = 0.0, flip_h: bool = False, flip_v: bool = False) -> np.ndarray:
    """Resample ``window`` of an image into an ``out_size`` × ``out_size`` float32 array.

    ``region`` is ``(h, w, 3)`` (uint8 0–255 or float [0, 1]) holding image rows
    ``offset[0]…`` and columns ``offset[1]…``; pixels outside it read as 0. The window is
    rotated by ``angle_deg`` about its centre and optionally mirrored; sampling is
    bilinear. Returns ``(out_size, out_size, 3)`` float32 in [0, 1].
    """
    import cv2

    s = int(out_size)
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    fx = -1.0 if flip_h else 1.0
    fy = -1.0 if flip_v else 1.0
    sx, sy = window.width * fx / s, window.height * fy / s
    tx, ty = window.width * fx * (0.5 / s - 0.5), window.height * fy * (0.5 / s - 0.5)
    # Output pixel (col j, row i) -> source position in OpenCV coordinates (pixel centres
    # on integers) of the region array.
    cx = window.cx - offset[1] - 0.5
    cy = window.cy - offset[0] - 0.5
    m = np.array([[cos * sx, -sin * sy, cos * tx - sin * ty + cx],
                  [sin * sx, cos * sy, sin * tx + cos * ty + cy]], dtype=np.float64)
    corners = np.array([[-0.5, -0.5, 1], [s - 0.5, -0.5, 1], [-0.5, s - 0.5, 1],
                        [s - 0.5, s - 0.5, 1]], dtype=np.float64)
    src = corners @ m.T
    x0 = max(int(np.floor(src[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(src[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(src[:, 0].max())) + 2, region.shape[1])
    y1 = min(int(np.ceil(src[:, 1].max())) + 2, region.shape[0])
    if x1 <= x0 or y1 <= y0:
        return np.zeros((s, s, 3), dtype=np.float32)
    patch = np.asarray(region[y0:y1, x0:x1], dtype=np.float32)
    if region.dtype == np.uint8:
        patch *= 1.0 / 255.0
    m[0, 2] -= x0
    m[1, 2] -= y0
    out = cv2.warpAffine(patch, m, (s, s), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0))
    return np.clip(out, 0.0, 1.0)


def color_jitter(rgb: np.ndarray, rng: np.random.Generator, config: CropConfig = DEFAULT_CROP
                 ) -> np.ndarray:
    """Brightness, contrast, saturation, then hue jitter of a float32 [0, 1] RGB image.

    Factors are uniform in ``[1 − b, 1 + b]`` (likewise contrast and saturation);
    contrast blends with the mean grey level, saturation with the grey image; the hue
    shift is uniform in ``±config.hue`` of a full turn. Four values are drawn from ``rng``.
    """
    import cv2

    b, c, s = (rng.uniform(1 - v, 1 + v) for v in
               (config.brightness, config.contrast, config.saturation))
    hue = rng.uniform(-config.hue, config.hue)
    img = np.clip(rgb * b, 0.0, 1.0)
    grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = np.clip((img - grey.mean()) * c + grey.mean(), 0.0, 1.0)
    grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = np.clip((img - grey[..., None]) * s + grey[..., None], 0.0, 1.0).astype(np.float32)
    if hue:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = np.mod(hsv[..., 0] + hue * 360.0, 360.0)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- image cache


@dataclass
class CachedImage:
    """A cached fused image: ``region`` (uint8 ``h×w×3``, memory-mapped) at ``offset``.

    ``offset`` = ``(row, col)`` of the region's first pixel in the image; ``tissue`` is
    an ``(k, 2)`` array of ``(row, col)`` indices of ``step``-pixel cells that lie on
    the breast; ``shape`` is the whole image's ``(rows, cols)``.
    """

    region: np.ndarray
    offset: tuple[int, int]
    shape: tuple[int, int]
    tissue: np.ndarray
    step: int

    def random_centre(self, rng: np.random.Generator) -> tuple[float, float]:
        """A point ``(x, y)`` uniform over the breast (two draws from ``rng``)."""
        u = rng.uniform(0.0, 1.0, 2)
        if not len(self.tissue):
            return (float(u[0] * self.shape[1]), float(u[1] * self.shape[0]))
        cell = self.tissue[int(rng.integers(len(self.tissue)))]
        x = min((cell[1] + u[0]) * self.step, self.shape[1])
        y = min((cell[0] + u[1]) * self.step, self.shape[0])
        return (float(x), float(y))

    def centroid(self) -> tuple[float, float]:
        """``(x, y)`` of the breast's centroid (the image centre when there is no breast)."""
        if not len(self.tissue):
            return (self.shape[1] / 2.0, self.shape[0] / 2.0)
        rc = (self.tissue.mean(axis=0) + 0.5) * self.step
        return (float(rc[1]), float(rc[0]))


class FusedImageCache:
    """Decoded, CLAHE-fused images on disk, read back memory-mapped.

    Decoding a DICOM (JPEG 2000 for VinDr-Mammo) and running CLAHE for every sample
    would dominate training, so each image is fused once (docs/method.md §2:
    ``[original, CLAHE 1.0, CLAHE 2.0]``), quantised to uint8 and stored as
    ``<folder>/<study>_<image>.npy``: the breast ROI's bounding box grown by ``margin``
    pixels and by every annotated box, which is all a crop can need (outside it is
    background, read as 0). A sidecar ``.json`` holds the offset, the source file's size
    and modification time and the CLAHE parameters; a stale or foreign entry is
    rebuilt. ``<name>.tissue.npy`` lists the ``step``-pixel cells on the breast, from
    which negative crop centres are drawn. Files are written atomically, so ranks of a
    distributed run can fill the cache in parallel.
    """

    def __init__(self, folder: str | os.PathLike[str],
                 preprocessing: Preprocessing | None = None,
                 margin: int = 64, step: int = 16) -> None:
        self.folder = Path(folder)
        self.preprocessing = preprocessing or Preprocessing()
        self.margin = int(margin)
        self.step = int(step)
        self._open: dict[str, CachedImage] = {}

    @staticmethod
    def key(record: ImageRecord) -> str:
        """File-name-safe key of an image record."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", f"{record.study_id}_{record.image_id}")

    def _source(self, record: Any) -> dict[str, Any]:
        st = Path(record.path).stat()
        return {"source": str(record.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "preprocessing": self.preprocessing.to_dict(),
                "margin": self.margin, "step": self.step}

    def _sidecar(self, record: Any) -> Path:
        return self.folder / f"{self.key(record)}.json"

    def is_ready(self, record: ImageRecord) -> bool:
        """Whether ``record``'s image is cached and up to date."""
        side = self._sidecar(record)
        try:
            doc = json.loads(side.read_text())
            current = self._source(record)
        except (OSError, ValueError):
            return False
        return all(doc.get(k) == v for k, v in current.items())

    def build(self, record: ImageRecord) -> None:
        """Read, fuse and store one image (CorrelaxError if it cannot be read)."""
        from ..io import read_mammogram
        from ..preprocess import breast_roi

        pixels = read_mammogram(record.path, voi_lut=self.preprocessing.voi_lut).pixels
        h, w = pixels.shape
        fused = self.preprocessing.fuse(pixels)
        roi = breast_roi(pixels)
        y0, x0, y1, x1 = roi.box
        for b in record.boxes:
            x0, y0 = min(x0, math.floor(b.xmin)), min(y0, math.floor(b.ymin))
            x1, y1 = max(x1, math.ceil(b.xmax)), max(y1, math.ceil(b.ymax))
        y0, x0 = max(y0 - self.margin, 0), max(x0 - self.margin, 0)
        y1, x1 = min(y1 + self.margin, h), min(x1 + self.margin, w)
        region = np.round(fused[y0:y1, x0:x1] * 255.0).astype(np.uint8)
        gy, gx = h // self.step, w // self.step
        cells = roi.mask[: gy * self.step, : gx * self.step].reshape(
            gy, self.step, gx, self.step).mean(axis=(1, 3))
        tissue = np.argwhere(cells >= 0.5).astype(np.int32)
        key = self.key(record)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / f"{key}.npy", lambda fh: np.save(fh, region))
        atomic_write(self.folder / f"{key}.tissue.npy", lambda fh: np.save(fh, tissue))
        doc = {**self._source(record), "offset": [y0, x0], "shape": [h, w]}
        atomic_write_text(self._sidecar(record), json.dumps(doc, indent=1))
        self._open.pop(key, None)

    def prepare(self, records: Sequence[ImageRecord], rank: int = 0, world_size: int = 1
                ) -> Iterator[tuple[int, int]]:
        """Cache this rank's share of ``records``; yields ``(done, total)`` per image."""
        mine = list(records)[rank::world_size]
        for i, record in enumerate(mine):
            if not self.is_ready(record):
                self.build(record)
            yield i + 1, len(mine)

    def load(self, record: ImageRecord) -> CachedImage:
        """The cached image of ``record`` (built first if needed)."""
        key = self.key(record)
        cached = self._open.get(key)
        if cached is not None:
            return cached
        side = self._sidecar(record)
        try:
            doc = json.loads(side.read_text())
        except (OSError, ValueError):
            self.build(record)
            doc = json.loads(side.read_text())
        try:
            region = np.load(self.folder / f"{key}.npy", mmap_mode="r")
            tissue = np.load(self.folder / f"{key}.tissue.npy")
        except (OSError, ValueError) as exc:
            raise CorrelaxError(f"damaged cache entry ({exc}); delete the cache folder",
                                self.folder / f"{key}.npy") from exc
        cached = CachedImage(region, (int(doc["offset"][0]), int(doc["offset"][1])),
                             (int(doc["shape"][0]), int(doc["shape"][1])), tissue,
                             int(doc["step"]))
        if len(self._open) > 256:
            self._open.clear()
        self._open[key] = cached
        return cached

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened in each DataLoader worker.
        return {**self.__dict__, "_open": {}}


# --------------------------------------------------------------------------- data set


class CropDataset(Dataset):
    """Torch data set of crops: item ``i`` is ``(image (3, S, S) float32 [0, 1], target (C,))``.

    Args:
        records: image records (index targets of :attr:`CropSample.image`).
        samples: from :func:`build_samples`.
        cache: where fused images come from.
        input_size: side ``S`` of the output crops, pixels.
        train: random windows and augmentations (else the fixed validation crops).
        reference_size: ``(width, height)`` of the window drawn for negatives
            (the median training box size, :func:`median_box_size`).
        seed: with the epoch (:meth:`set_epoch`) and the index, seeds each item's draws.
        config: crop and augmentation parameters.
        labels: label names of the target columns (the window-scale negatives'
            target is ``No Finding``; all zeros when it is not among them).

    When training with ``config.window_negatives`` = ``K`` > 0 the data set has
    ``len(samples) + K`` items; the last ``K`` are the window-scale negatives.

    The image is not normalised; the model's ``normalize`` does that.
    """

    def __init__(self, records: Sequence[ImageRecord], samples: Sequence[CropSample],
                 cache: FusedImageCache, input_size: int, *, train: bool,
                 reference_size: tuple[float, float], seed: int = 0,
                 config: CropConfig = DEFAULT_CROP,
                 labels: Sequence[str] | None = None) -> None:
        self.records = list(records)
        self.samples = list(samples)
        self.cache = cache
        self.input_size = int(input_size)
        self.train = bool(train)
        self.reference_size = (float(reference_size[0]), float(reference_size[1]))
        self.seed = int(seed)
        self.config = config
        self.epoch = 0
        width = len(self.samples[0].target) if self.samples else len(labels or ())
        self.negative_target = np.zeros(width, dtype=np.float32)
        if labels is not None and NO_FINDING in labels:
            self.negative_target[list(labels).index(NO_FINDING)] = 1.0

    @property
    def extra_negatives(self) -> int:
        """Number of window-scale negative items (0 unless training with the option)."""
        return max(int(self.config.window_negatives), 0) if self.train and self.records else 0

    def __len__(self) -> int:
        return len(self.samples) + self.extra_negatives

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops items draw."""
        self.epoch = int(epoch)

    @property
    def targets(self) -> np.ndarray:
        """``(N, C)`` multi-hot targets of all samples."""
        return np.stack([s.target for s in self.samples]) if self.samples else np.zeros((0, 0))

    def window(self, index: int, rng: np.random.Generator | None = None) -> Window:
        """The (unrotated) window of item ``index``; random when ``rng`` is given."""
        return self.draw(index, rng)[1]

    def _native_window(self, centre: tuple[float, float]) -> Window:
        s = float(self.input_size)
        return Window(float(centre[0]), float(centre[1]), s, s)

    def _negative_window(self, rng: np.random.Generator) -> tuple[int, Window]:
        """A window-scale negative: (record index, native window), see the module doc."""
        image = int(rng.integers(len(self.records)))
        record = self.records[image]
        cached = self.cache.load(record)
        boxes = np.array([(b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes
                          if b.label != NO_FINDING], dtype=np.float64).reshape(-1, 4)
        centres = (cached.tissue[:, ::-1].astype(np.float64) + 0.5) * cached.step
        cells_per_window = (self.input_size / cached.step) ** 2
        best: tuple[float, Window] | None = None
        window = self._native_window(cached.centroid())
        for _ in range(32):
            window = self._native_window(cached.random_centre(rng))
            x0, y0, x1, y1 = window.box
            overlap = bool(len(boxes)) and bool(np.any(
                (boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)))
            if overlap:
                continue
            inside = ((centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0)
                      & (centres[:, 1] < y1)).sum() if len(centres) else 0
            fraction = float(inside) / cells_per_window
            if best is None or fraction > best[0]:
                best = (fraction, window)
            if fraction >= self.config.window_tissue:
                break
        return image, (best[1] if best is not None else window)

    def draw(self, index: int, rng: np.random.Generator | None = None) -> tuple[int, Window]:
        """``(record index, unrotated window)`` of item ``index``; random with ``rng``."""
        if index >= len(self.samples):
            if rng is None or index >= len(self):
                raise IndexError(index)
            return self._negative_window(rng)
        sample = self.samples[index]
        cached = self.cache.load(self.records[sample.image])
        if sample.box is not None and rng is not None and self.config.window_share > 0 \
                and rng.uniform() < self.config.window_share:
            x0, y0, x1, y1 = sample.box
            half = self.config.window_central * self.input_size / 2.0
            dx, dy = rng.uniform(-half, half, 2)
            return sample.image, self._native_window(((x0 + x1) / 2.0 + dx,
                                                      (y0 + y1) / 2.0 + dy))
        if sample.box is None:
            centre = cached.random_centre(rng) if rng is not None else cached.centroid()
            size = self.reference_size
        else:
            x0, y0, x1, y1 = sample.box
            centre, size = ((x0 + x1) / 2.0, (y0 + y1) / 2.0), (x1 - x0, y1 - y0)
        if rng is None:
            return sample.image, Window(centre[0], centre[1], size[0], size[1])
        return sample.image, draw_window(centre, size, rng, self.config)

    def crop(self, index: int) -> np.ndarray:
        """Item ``index`` as an ``(S, S, 3)`` float32 [0, 1] array (this epoch's draw)."""
        if not self.train:
            image, window = self.draw(index)
            cached = self.cache.load(self.records[image])
            return render_window(cached.region, cached.offset, window, self.input_size)
        cfg = self.config
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, window = self.draw(index, rng)
        cached = self.cache.load(self.records[image])
        draws = rng.uniform(0.0, 1.0, 4)
        angle = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
        img = render_window(cached.region, cached.offset, window, self.input_size,
                            angle_deg=angle if draws[2] < cfg.rotate_p else 0.0,
                            flip_h=bool(draws[0] < cfg.flip_p), flip_v=bool(draws[1] < cfg.flip_p))
        if draws[3] < cfg.jitter_p:
            img = color_jitter(img, rng, cfg)
        return img

    def target(self, index: int) -> np.ndarray:
        """``(C,)`` float32 target of item ``index``."""
        if index >= len(self.samples):
            return self.negative_target
        return self.samples[index].target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.crop(int(index))
        return (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
                torch.from_numpy(self.target(int(index))))
