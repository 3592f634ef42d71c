"""Images for GMIC training (docs/method.md §9): image-level labels, an input cache and
the augmented data set.

Labels come from the VinDr-Mammo CSVs (:func:`image_targets`): one output per positive
label (default ``Mass``, [CAM-GMIC]'s normal vs mass), an image being positive for a
label when it has a finding of it. The images trained on are those with a positive
label and, as negatives, the No Finding images (``negatives="normal"``, as [CAM-GMIC]
selected "normal" and "mass" images) or every image without a positive label
(``negatives="all"``).

Each image is brought to GMIC's input once (:class:`InputCache`): laterality flip,
breast crop and fit to the input size by :func:`~.preprocess.gmic_input` (not
standardised), stored as 16-bit integers. Every epoch :class:`GMICImageSet` augments it
as [CAM-GMIC] lists (horizontal flip, random crop, standardisation): a random crop keeps
``1 − u`` of each side (``u`` uniform in [0, ``crop_noise``], the position uniform) and
is resized back to the input size (bilinear), the image is mirrored left–right with
probability ``flip_p``, then standardised (:func:`~.preprocess.standardise`). The draws
come from a generator seeded by (seed, epoch, image index), so an image's augmentation
does not depend on batch order, worker or process count, and a resumed run sees what an
uninterrupted one would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..files import atomic_write, atomic_write_text
from ..labels import NO_FINDING
from .config import NEGATIVES, check_classes

if TYPE_CHECKING:
    import torch

    from ..io.vindr import ImageRecord

__all__ = ["NEGATIVES", "GMICImageSet", "InputCache", "check_classes", "image_targets"]

#: Pixel values are stored as ``round(v · 65535)`` (v in [0, 1]).
_SCALE = 65535.0


def image_targets(records: Sequence[ImageRecord], classes: Sequence[str],
                  negatives: str = "normal") -> tuple[list[ImageRecord], np.ndarray]:
    """The images to use and their (N, C) float32 targets (1 where the image has a
    finding of ``classes[c]``), in the given order (see the module notes)."""
    if negatives not in NEGATIVES:
        raise CorrelaxError(f"negatives must be one of {list(NEGATIVES)}, not {negatives!r}")
    chosen, targets = [], []
    for record in records:
        labels = set(record.labels)
        target = [1.0 if c in labels else 0.0 for c in classes]
        if any(target) or negatives == "all" or labels == {NO_FINDING}:
            chosen.append(record)
            targets.append(target)
    return chosen, np.asarray(targets, dtype=np.float32).reshape(len(chosen), len(classes))


class InputCache:
    """Each image fitted to GMIC's input, on disk (``<folder>/<study>_<image>.npy``, uint16).

    A sidecar ``.json`` records the source file's size and modification time, the input
    size and fit, and the transform back to the original image; a stale entry is rebuilt.
    Files are written atomically, so ranks of a distributed run can fill the cache at
    once.
    """

    def __init__(self, folder: str | os.PathLike[str], size: tuple[int, int],
                 fit: str = "resize") -> None:
        self.folder = Path(folder)
        self.size = (int(size[0]), int(size[1]))
        self.fit = str(fit)

    @staticmethod
    def key(record: ImageRecord) -> str:
        """File-name-safe key of an image record."""
        from ..train.crops import FusedImageCache

        return FusedImageCache.key(record)

    def _expected(self, record: Any) -> dict[str, Any]:
        st = Path(record.path).stat()
        return {"source": str(record.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "input_size": list(self.size), "fit": self.fit,
                "laterality": record.laterality, "view": record.view}

    def is_ready(self, record: ImageRecord) -> bool:
        """Whether ``record``'s input is cached and up to date."""
        try:
            doc = json.loads((self.folder / f"{self.key(record)}.json").read_text())
            expected = self._expected(record)
        except (OSError, ValueError):
            return False
        return all(doc.get(k) == v for k, v in expected.items()) and \
            (self.folder / f"{self.key(record)}.npy").is_file()

    def build(self, record: ImageRecord) -> None:
        """Read one image, fit it to the input and store it (CorrelaxError if unreadable)."""
        from ..io import read_mammogram
        from .preprocess import gmic_input

        mammogram = read_mammogram(record.path)
        prepared = gmic_input(mammogram, record.laterality or None,
                              view=record.view or None, size=self.size, fit=self.fit,
                              standardised=False)
        stored = np.round(np.clip(prepared.image, 0.0, 1.0) * _SCALE).astype(np.uint16)
        key = self.key(record)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / f"{key}.npy", lambda fh: np.save(fh, stored))
        t = prepared.transform
        doc = {**self._expected(record), "transform": {
            "original_shape": list(t.original_shape), "input_shape": list(t.input_shape),
            "flipped": t.flipped, "start": list(t.start), "scale": list(t.scale)}}
        atomic_write_text(self.folder / f"{key}.json", json.dumps(doc, indent=1))

    def prepare(self, records: Sequence[ImageRecord], rank: int = 0, world_size: int = 1
                ) -> Iterator[tuple[int, int]]:
        """Cache this rank's share of ``records``; yields ``(done, total)`` per image."""
        mine = list(records)[rank::world_size]
        for i, record in enumerate(mine):
            if not self.is_ready(record):
                self.build(record)
            yield i + 1, len(mine)

    def load(self, record: ImageRecord) -> np.ndarray:
        """The cached input of ``record`` (rows, cols) float32 in [0, 1], not standardised
        (built first if needed)."""
        path = self.folder / f"{self.key(record)}.npy"
        if not self.is_ready(record):
            self.build(record)
        try:
            stored = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CorrelaxError(f"damaged cache entry ({exc}); delete the cache folder",
                                path) from exc
        return stored.astype(np.float32) / np.float32(_SCALE)


class GMICImageSet:
    """Torch-style data set: item ``i`` is ``(x (1, rows, cols) float32 standardised,
    target (C,) float32)`` (see the module notes for the augmentation).

    ``train=False`` gives the cached input standardised, without augmentation.
    """

    def __init__(self, records: Sequence[ImageRecord], targets: np.ndarray, cache: InputCache,
                 *, train: bool = True, seed: int = 0, flip_p: float = 0.5,
                 crop_noise: float = 0.1) -> None:
        self.records = list(records)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.cache = cache
        self.train = bool(train)
        self.seed = int(seed)
        self.flip_p = float(flip_p)
        self.crop_noise = float(crop_noise)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Augmentations are drawn per (seed, epoch, index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> np.ndarray:
        """Item ``index``'s input (rows, cols) float32, augmented when training, standardised."""
        from .preprocess import standardise

        pixels = self.cache.load(self.records[index])
        if self.train:
            pixels = augment(pixels, self._rng(index), self.flip_p, self.crop_noise)
        return standardise(pixels)[0]

    def _rng(self, index: int) -> np.random.Generator:
        from ..train.state import mix_seed

        return np.random.default_rng(mix_seed(self.seed, self.epoch, index, 0x61C))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(self.image(index)))[None]
        return x, torch.from_numpy(self.targets[index].copy())


def augment(pixels: np.ndarray, rng: np.random.Generator, flip_p: float = 0.5,
            crop_noise: float = 0.1) -> np.ndarray:
    """A random crop resized back to the input size, then a horizontal flip with
    probability ``flip_p`` (module notes); five draws from ``rng`` in a fixed order."""
    import cv2

    rows, cols = pixels.shape
    keep_r = 1.0 - rng.uniform(0.0, crop_noise)
    keep_c = 1.0 - rng.uniform(0.0, crop_noise)
    height = min(rows, max(1, round(rows * keep_r)))
    width = min(cols, max(1, round(cols * keep_c)))
    top = int(rng.integers(0, rows - height + 1))
    left = int(rng.integers(0, cols - width + 1))
    flip = rng.random() < flip_p
    out = pixels[top:top + height, left:left + width]
    if (height, width) != (rows, cols):
        out = cv2.resize(np.ascontiguousarray(out), (cols, rows), interpolation=cv2.INTER_LINEAR)
    if flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)
