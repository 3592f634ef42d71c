"""The map cache: each image's maps on disk, keyed by model and settings.

``<root>/<key>/<image>.npz`` holds an image's :class:`~napari_correlax.maps.MapResult`
without ``relevance`` (the full-resolution map would cost tens of MB per mammogram) and
``<root>/<key>/<image>.json`` its status (written after the maps; its presence marks the
image done). ``<key>`` (:func:`settings_key`) names the checkpoint and hashes its content
and every setting that changes the maps, so other settings never reuse these files.
``correlax evaluate`` fills the cache and the test-set reader reads the same files, so a
test set computed overnight (or on another machine) opens at once in the reader. Files
are written atomically, so several processes can fill one cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorrelaxError
from ..files import atomic_write_text
from .fingerprint import checkpoint_fingerprint, model_fingerprint
from .methods import run_method
from .settings import MapSettings

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from ..io.image import Mammogram
    from ..models.protocols import ImageModelLike
    from .result import MapResult
    from .runtime import Progress

__all__ = [
    "MAP_DEFINITION",
    "ResultCache",
    "checkpoint_fingerprint",
    "image_maps_steps",
    "model_fingerprint",
    "settings_key",
]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


#: Version of the maps' definitions, part of every cache key: raised whenever a map
#: changes meaning (2: normalised smoothing of grid maps, oriented Eigen-CAM, LayerCAM over
#: three stages), so maps of an older definition are computed again, never reused.
MAP_DEFINITION = 2
#: Version of CorRELAX's mask streams, part of its cache keys only (2: one independent
#: stream per window, calibration windows, design factors per correlation), so cached
#: CorRELAX maps of other streams are computed again while other methods' maps are kept.
CORRELAX_MASKS = 2


def settings_key(model: nn.Module | str | os.PathLike[str] | None, settings: MapSettings) -> str:
    """Cache folder name: ``<checkpoint name>-<12 hex digits>`` of weights + settings.

    ``model`` is a loaded model or a checkpoint path (None: the default model). The
    digits hash the model's fingerprint, :data:`MAP_DEFINITION` (and for CorRELAX
    :data:`CORRELAX_MASKS`) and :meth:`MapSettings.map_fields`: every field that changes
    the method's maps, and none that only changes speed.
    """
    if model is None or isinstance(model, (str, os.PathLike)):
        name, fingerprint = checkpoint_fingerprint(model)
    else:
        name, fingerprint = model_fingerprint(model)
    fields: dict[str, Any] = {"model": fingerprint, "definition": MAP_DEFINITION,
                              **settings.map_fields()}
    if settings.method == "correlax":
        fields["masks_streams"] = CORRELAX_MASKS
    doc = json.dumps(fields, sort_keys=True, default=str)
    return f"{_slug(name)}-{hashlib.sha256(doc.encode()).hexdigest()[:12]}"


class ResultCache:
    """Per-image maps and scores under ``root/<key>/`` (see the module docstring).

    Files are written atomically, so several processes can fill one cache.
    """

    def __init__(self, root: str | os.PathLike[str], key: str,
                 description: dict[str, Any] | None = None) -> None:
        self.folder = Path(root) / key
        self.key = key
        self.description = dict(description or {})

    @staticmethod
    def stem(image_id: str) -> str:
        """File-name-safe name of an image id."""
        return _slug(image_id)

    def maps_path(self, image_id: str) -> Path:
        """Where an image's maps are stored (``.npz``)."""
        return self.folder / f"{self.stem(image_id)}.npz"

    def info_path(self, image_id: str) -> Path:
        """Where an image's crop scores and status are stored (``.json``)."""
        return self.folder / f"{self.stem(image_id)}.json"

    def describe(self) -> None:
        """Write ``settings.json`` (what the key stands for) once."""
        path = self.folder / "settings.json"
        if not path.is_file():
            atomic_write_text(path, json.dumps({"key": self.key, **self.description},
                                               indent=2, default=str) + "\n")

    def load_maps(self, image_id: str, source: str | os.PathLike[str] | None = None
                  ) -> MapResult | None:
        """The cached maps of an image, or None (absent, damaged, or made from another file).

        ``source`` is the image file; when given, maps made from a file of another size
        or modification time are ignored.
        """
        from ..maps.result import load_result

        path = self.maps_path(image_id)
        if not path.is_file():
            return None
        try:
            result = load_result(path)
        except CorrelaxError:
            return None
        if source is not None and result.meta.get("source_stat") != _stat(source):
            return None
        return result

    def save_maps(self, image_id: str, result: MapResult,
                  source: str | os.PathLike[str] | None = None
                  ) -> Path:
        """Store an image's maps (``relevance`` dropped; the source file's stat noted)."""
        meta = dict(result.meta)
        if source is not None:
            meta["source_stat"] = _stat(source)
        self.folder.mkdir(parents=True, exist_ok=True)
        return replace(result, relevance=None, meta=meta).save(self.maps_path(image_id))

    def load_info(self, image_id: str) -> dict[str, Any] | None:
        """The image's status document, or None."""
        try:
            doc = json.loads(self.info_path(image_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def save_info(self, image_id: str, doc: dict[str, Any]) -> Path:
        """Store the image's status document."""
        return atomic_write_text(self.info_path(image_id), json.dumps(doc, default=str) + "\n")

    def is_done(self, image_id: str) -> bool:
        """True when the image finished without error under this key."""
        doc = self.load_info(image_id)
        return bool(doc) and not doc.get("error") and self.maps_path(image_id).is_file()


def _stat(path: str | os.PathLike[str]) -> list[int]:
    st = Path(path).stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def image_maps_steps(
    mammogram: Mammogram | np.ndarray,
    image_id: str,
    model: ImageModelLike,
    settings: MapSettings,
    cache: ResultCache | None = None,
) -> Generator[Progress, None, MapResult]:
    """Maps of one image: from ``cache`` when there, else computed (and cached).

    Yields the progress events of ``settings.method``
    (:mod:`~napari_correlax.maps.methods`); returns the
    :class:`~napari_correlax.maps.MapResult` (with ``relevance`` only when freshly
    computed: the cache leaves the full-resolution map out).
    """
    source = getattr(mammogram, "path", None)
    if cache is not None:
        cached = cache.load_maps(image_id, source)
        if cached is not None:
            return cached
    result = yield from run_method(mammogram, model, settings)
    result.meta["image_id"] = image_id
    if cache is not None:
        cache.save_maps(image_id, result, source)
    return result
