"""Classifier checkpoints: safetensors weights + JSON metadata (docs/method.md §4).

A checkpoint is one ``.safetensors`` file. Its header's metadata holds, under the key
``"napari_correlax"``, a JSON document with the model config (backbone, labels, input
size, normalisation, preprocessing) and free-form training information (config,
metrics, model card). ``save_checkpoint`` also writes the same JSON beside it as
``<name>.json`` so people and other tools can read it; loading only trusts the header.
Nothing here unpickles anything.

Loaded models are cached by (resolved path, modification time, device) so running
on the next image does not reload weights.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CorrelaxError
from ..files import atomic_write_bytes
from ..registry import Registry

if TYPE_CHECKING:
    from .classifier import Classifier

__all__ = [
    "CHECKPOINT_FORMATS",
    "DEMO_CHECKPOINT",
    "ModelSummary",
    "load_classifier",
    "load_model",
    "model_summary",
    "read_header",
    "read_metadata",
    "register_format",
    "resolve_checkpoint",
    "save_checkpoint",
    "write_checkpoint",
]

FORMAT = "napari-correlax-classifier"
META_KEY = "napari_correlax"
DEMO_CHECKPOINT = Path(__file__).parent / "demo" / "demo.safetensors"
#: Environment variable naming the checkpoint used when no path is given.
MODEL_ENV = "CORRELAX_MODEL"



class ModelLoader(Protocol):
    """Opens a checkpoint of one format: ``loader(path, device=...)`` returns the model."""

    def __call__(self, path: Path, *, device: str) -> Any: ...


#: Checkpoint formats (the ``"format"`` of a checkpoint's metadata) → their loader; the
#: classifier's and GMIC's are registered by :mod:`napari_correlax.builtin`.
CHECKPOINT_FORMATS: Registry[ModelLoader] = Registry("checkpoint format")


def register_format(name: str, loader: ModelLoader) -> None:
    """Let :func:`load_model` open checkpoints whose metadata says ``"format": name``."""
    CHECKPOINT_FORMATS.register(name, loader)


_cache: dict[tuple[str, float, str], Any] = {}
_cache_lock = threading.Lock()


def save_checkpoint(
    model: Classifier, path: str | os.PathLike[str], info: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (a :class:`Classifier`) to ``path`` (``.safetensors`` added if missing).

    ``info`` (JSON-able: training config, metrics, model card text) is stored with the
    config. Returns the path written.
    """
    doc = {"format": FORMAT, "version": 1, "config": model.config(), "info": info or {}}
    return write_checkpoint(path, model.state_dict(), doc)


def write_checkpoint(
    path: str | os.PathLike[str], state: Mapping[str, Any], doc: dict[str, Any]
) -> Path:
    """Write tensors ``state`` and the JSON document ``doc`` as a checkpoint.

    The tensors go to ``path`` (``.safetensors`` added if missing) with ``doc`` in the
    header's metadata under :data:`META_KEY`; the same JSON is written beside it as
    ``<name>.json``. Both files are written atomically. Returns the ``.safetensors`` path.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    text = json.dumps(doc, indent=2, sort_keys=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors, metadata={META_KEY: text}))
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())
    return path


def read_header(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON document in a ``.safetensors`` file's header, or None when it has none.

    Reads the header only (no torch). CorrelaxError when the file is not safetensors or
    its document is not a JSON object.
    """
    p = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="numpy") as fh:  # header only; no torch import
            meta = fh.metadata() or {}
    except Exception as exc:
        raise CorrelaxError(f"not a safetensors checkpoint ({exc})", p) from exc
    if META_KEY not in meta:
        return None
    try:
        doc = json.loads(meta[META_KEY])
    except json.JSONDecodeError as exc:
        raise CorrelaxError(f"checkpoint metadata is not valid JSON ({exc})", p) from exc
    if not isinstance(doc, dict):
        raise CorrelaxError("checkpoint metadata is not a JSON object", p)
    return doc


def resolve_checkpoint(path: str | os.PathLike[str] | None) -> Path:
    """The checkpoint file ``path`` means: None gives ``CORRELAX_MODEL`` or the demo model;
    a folder gives its ``best.safetensors``, else its first ``.safetensors`` by name.
    CorrelaxError when there is none or the file does not exist."""
    if path is None:
        env = os.environ.get(MODEL_ENV)
        path = env if env else DEMO_CHECKPOINT
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(p.glob("*.safetensors"))
        best = [f for f in found if f.stem == "best"]
        if not found:
            raise CorrelaxError("folder holds no .safetensors checkpoint", p)
        p = best[0] if best else found[0]
    if not p.is_file():
        raise CorrelaxError("checkpoint file not found", p)
    return p


def read_metadata(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON document stored in a checkpoint's header (``config`` and ``info``)."""
    p = resolve_checkpoint(path)
    doc = read_header(p)
    if doc is None:
        raise CorrelaxError("safetensors file has no napari-correlax metadata", p)
    if doc.get("format") != FORMAT or "config" not in doc:
        raise CorrelaxError("checkpoint metadata is not a napari-correlax classifier", p)
    return doc


def load_classifier(path: str | os.PathLike[str] | None = None, device: str = "cpu"
                    ) -> Classifier:
    """Load a :class:`Classifier` in eval mode; no path gives the shipped demo model.

    ``path`` may be a ``.safetensors`` file or a folder holding one (``best`` preferred).
    The ``CORRELAX_MODEL`` environment variable replaces the demo model as default.
    """
    p = resolve_checkpoint(path)
    key = (str(p.resolve()), p.stat().st_mtime, str(device))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    doc = read_metadata(p)
    from safetensors.torch import load_file

    from .classifier import Classifier

    try:
        model = Classifier.from_config(doc["config"])
        state = load_file(str(p))
        model.load_state_dict(state, strict=True)
    except CorrelaxError as exc:
        raise CorrelaxError(exc.reason, p) from exc
    except Exception as exc:
        raise CorrelaxError(f"weights do not match the stored config ({exc})", p) from exc
    model.checkpoint_path = str(p)
    model.checkpoint_info = doc.get("info", {})
    model.eval().to(device)
    with _cache_lock:
        _cache[key] = model
    return model


def load_model(path: str | os.PathLike[str] | None = None, device: str = "cpu") -> Any:
    """The model of a checkpoint, whichever kind it is: the loader registered for the
    ``"format"`` its metadata names (:data:`CHECKPOINT_FORMATS`: a :class:`Classifier` for
    ``"napari-correlax-classifier"``, a GMIC for ``"napari-correlax-gmic"``); no path
    gives the default classifier (the demo model, or ``CORRELAX_MODEL``). ``path`` may be
    a folder holding a checkpoint (``best`` preferred). Anything else — another
    safetensors file, official GMIC weights not yet converted — raises CorrelaxError
    naming the file and what to do.
    """
    if path is None:
        return load_classifier(None, device=device)
    p = resolve_checkpoint(path)
    if p.suffix != ".safetensors":
        raise CorrelaxError("not a napari-correlax checkpoint (.safetensors); convert "
                            "official GMIC weights with `correlax gmic import` and classifier "
                            "weights with `correlax import-model`", p)
    kind = (read_header(p) or {}).get("format")
    if kind in CHECKPOINT_FORMATS:
        return CHECKPOINT_FORMATS[kind](p, device=device)
    raise CorrelaxError(f"not a napari-correlax classifier or GMIC checkpoint (its metadata "
                        f"names {kind!r})" if kind else "safetensors file without "
                        "napari-correlax metadata: not a classifier or GMIC checkpoint", p)


@dataclass(frozen=True)
class ModelSummary:
    """What a reader should know about a checkpoint before trusting its maps.

    ``name``: the file's name (``"demo model"`` for the shipped one); ``labels``: its
    outputs; ``phantoms_only``: trained on synthetic phantoms only (the demo model, or a
    checkpoint whose model card or training data says so); ``model_card``: a
    ``MODEL_CARD.md`` beside the file, if any; ``kind``: ``"classifier"`` or ``"GMIC"``.
    """

    name: str
    labels: list[str]
    phantoms_only: bool
    model_card: Path | None
    kind: str = "classifier"


def model_summary(path: str | os.PathLike[str] | None = None) -> ModelSummary:
    """:class:`ModelSummary` of a checkpoint of any registered format (None: the default
    model); reads the header only (no torch). A classifier's labels come from its
    configuration, another format's (GMIC) from its ``class_names``; the kind shown is
    the format's short name. CorrelaxError for a file that is not a checkpoint."""
    p = resolve_checkpoint(path)
    doc = read_header(p)
    fmt = (doc or {}).get("format")
    if doc is not None and fmt != FORMAT and fmt in CHECKPOINT_FORMATS and "config" in doc:
        labels = doc["config"].get("class_names") or []
        kind = str(fmt).removeprefix("napari-correlax-").upper()
    else:
        doc = read_metadata(p)
        labels = doc["config"].get("labels", [])
        kind = "classifier"
    info = doc.get("info") or {}
    text = json.dumps(info).lower()
    demo = p.resolve() == DEMO_CHECKPOINT.resolve()
    card = p.parent / "MODEL_CARD.md"
    return ModelSummary(
        name="demo model" if demo else p.stem,
        labels=[str(v) for v in labels],
        phantoms_only=demo or "phantom" in text,
        model_card=card if card.is_file() else None,
        kind=kind,
    )
