"""Loading and saving GMIC weights (docs/method.md §9).

Two kinds of file are read:

* the **official** weights (``sample_model_<i>.p`` of the GMIC repository, or any
  ``torch.save`` of a GMIC state dict, ``.p``/``.pt``/``.pth``, or a plain
  ``.safetensors`` of one), read with ``torch.load(..., weights_only=True)``: a file
  that would need Python code to unpickle is refused and nothing in it runs. Such a
  file holds no hyper-parameters: the number of classes comes from the weights' shapes,
  the top-t fraction from ``top_t``, else the official table by the ``sample_model_<i>``
  file name, else 0.02 (model 1's), and the rest are the official defaults;
* the project's **checkpoint**: safetensors with the configuration in its header and a
  JSON copy beside it (the classifier's format, :mod:`napari_correlax.models.checkpoint`,
  with ``"format": "napari-correlax-gmic"``).

Loading is strict: a missing key, an unexpected key or a shape that does not fit raises
:class:`~napari_correlax.errors.CorrelaxError` naming them (the official runner loads
with ``strict=False``, which silently leaves misnamed layers with random weights). Only
``*.num_batches_tracked`` counters may be absent; they do not affect inference.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorrelaxError
from .config import DEFAULT_CLASS_NAMES, GMICConfig, official_top_t

if TYPE_CHECKING:
    from .network import GMIC

__all__ = ["CLASS_HEAD_KEYS", "FORMAT", "import_gmic", "load_gmic", "load_initial_weights",
           "save_gmic"]

FORMAT = "napari-correlax-gmic"
#: Counters the state dict may lack (batch norm's, unused in eval mode).
_OPTIONAL_SUFFIX = ".num_batches_tracked"
#: Parameters whose shape follows the number of classes: a model trained for other
#: outputs starts them afresh when its class count differs.
CLASS_HEAD_KEYS = ("left_postprocess_net.gn_conv_last.weight", "classifier_linear.weight",
                   "fusion_dnn.weight", "fusion_dnn.bias")

_cache: dict[tuple[str, float, int, float | None, str], Any] = {}
_cache_lock = threading.Lock()


def load_gmic(
    path: str | os.PathLike[str], *, top_t: float | None = None, device: str = "cpu"
) -> GMIC:
    """A :class:`~.network.GMIC` in eval mode with the weights of ``path``.

    ``path``: official GMIC weights or a project checkpoint (see the module notes).
    ``top_t`` replaces the stored top-t pooling fraction (in (0, 1]). ``device``:
    ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``. Models are cached by
    (file, modification time, size, top_t, device): loading the same file again
    returns the same object. The model's ``checkpoint_path`` names the file and
    ``checkpoint_info`` holds the checkpoint's ``info`` (training settings, the source
    of imported weights).
    """
    from ..maps.runtime import resolve_device

    p = Path(path).expanduser()
    if not p.is_file():
        raise CorrelaxError("file not found" if not p.exists() else "not a file", p)
    device = resolve_device(device)
    stat = p.stat()
    key = (str(p.resolve()), stat.st_mtime, stat.st_size,
           None if top_t is None else float(top_t), str(device))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    model, info = _build(p, top_t)
    model = model.to(device)
    model.checkpoint_path = str(p)
    model.checkpoint_info = info
    with _cache_lock:
        _cache[key] = model
    return model


def save_gmic(model: GMIC, path: str | os.PathLike[str],
              info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a project checkpoint (``.safetensors`` + ``.json``) at ``path``.

    The configuration (:class:`~.config.GMICConfig`) goes into the header; ``info``
    (JSON-able: where the weights came from, training notes) beside it. Returns the
    ``.safetensors`` path written.
    """
    from ..models.checkpoint import write_checkpoint

    doc = {"format": FORMAT, "version": 1, "config": model.config.to_dict(), "info": info or {}}
    return write_checkpoint(path, model.state_dict(), doc)


def import_gmic(
    path: str | os.PathLike[str], out: str | os.PathLike[str], *, top_t: float | None = None
) -> tuple[Path, GMIC]:
    """Read official GMIC weights (or a checkpoint) and save them as a project checkpoint.

    The checkpoint's ``info["imported"]`` records the source file's name, SHA-256 and
    size and where the top-t fraction came from. Returns the path written and the model.
    """
    model, info = _build(Path(path), top_t)
    return save_gmic(model, out, info=info), model


def load_initial_weights(model: GMIC, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Start ``model`` from the weights of ``path`` (official weights or a checkpoint).

    Every parameter is copied, except those of :data:`CLASS_HEAD_KEYS` when their shape
    differs (another number of classes, such as the published benign/malignant model
    fine-tuned for normal vs mass, GMIC_NOTES §4): those keep ``model``'s fresh weights.
    Any other mismatch (another global network) raises CorrelaxError naming the keys.
    Returns what to record: the file's name, its top-t fraction, the keys started afresh
    and the file's own ``info``.
    """
    from ..models.importers import name_listing

    p = Path(path).expanduser()
    if not p.is_file():
        raise CorrelaxError("initial weights not found" if not p.exists() else "not a file", p)
    source, info = _build(p, None)
    own, theirs = model.state_dict(), source.state_dict()
    fresh = [k for k in CLASS_HEAD_KEYS
             if k in own and (k not in theirs or theirs[k].shape != own[k].shape)]
    misfits = [k for k in own if k not in fresh and not k.endswith(_OPTIONAL_SUFFIX)
               and (k not in theirs or theirs[k].shape != own[k].shape)]
    if misfits:
        raise CorrelaxError(f"initial weights do not fit this GMIC (another global network?): "
                            f"{name_listing(misfits)}", p)
    merged = {k: (own[k] if k in fresh or k not in theirs else theirs[k]) for k in own}
    model.load_state_dict(merged, strict=True)
    return {"file": p.name, "percent_t": source.config.percent_t, "started_afresh": fresh,
            "classes": list(source.config.class_names), "info": info}


# ----------------------------------------------------------------------------- details


def _build(p: Path, top_t: float | None) -> tuple[GMIC, dict[str, Any]]:
    """The model of ``p`` (eval mode, CPU) and the ``info`` to store with it."""
    from ..models.checkpoint import read_header
    from ..models.importers import read_weights
    from .network import GMIC

    doc = read_header(p) if p.suffix == ".safetensors" and p.is_file() else None
    if doc is not None and doc.get("format") != FORMAT:
        raise CorrelaxError(
            f"a {doc.get('format') or 'non-GMIC'} checkpoint, not a GMIC model", p)
    state, source = read_weights(p)
    if doc is not None:
        try:
            config = GMICConfig.from_dict(doc.get("config") or {})
        except CorrelaxError as exc:
            raise CorrelaxError(exc.reason, p) from exc
        info = dict(doc.get("info") or {})
        t_source = "checkpoint"
        trained_with = (info.get("training") or {}).get("train_cam")
        if "train_cam" not in (doc.get("config") or {}) and trained_with:
            # checkpoints written before the configuration kept the training CAM
            config = replace(config, train_cam=trained_with)
    else:
        config, t_source = _official_config(p, state)
        info = {"imported": {**source, "format": "official GMIC state dict",
                             "percent_t_from": t_source}}
    if top_t is not None:
        try:
            config = replace(config, percent_t=float(top_t))
        except CorrelaxError as exc:
            raise CorrelaxError(exc.reason, p) from exc
        if "imported" in info and doc is None:
            info["imported"]["percent_t_from"] = "given"
    model = GMIC(config)
    _load_strict(model, state, p)
    return model.eval(), info


def _official_config(p: Path, state: dict[str, Any]) -> tuple[GMICConfig, str]:
    """Configuration of an official file: classes from the weights, top-t by file name."""
    weight = state.get("classifier_linear.weight")
    classes = int(weight.shape[0]) if weight is not None and weight.ndim == 2 else 2
    names = (DEFAULT_CLASS_NAMES if classes == len(DEFAULT_CLASS_NAMES)
             else tuple(f"class {i}" for i in range(classes)))
    t, why = official_top_t(p.stem)
    return GMICConfig(num_classes=classes, class_names=names, percent_t=t), why


def _load_strict(model: GMIC, state: dict[str, Any], p: Path) -> None:
    """Copy ``state`` into ``model``; CorrelaxError naming every key that does not fit."""
    from ..models.importers import key_misfits

    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = key_misfits(missing, unexpected, mismatched)
        raise CorrelaxError(
            f"weights do not fit GMIC with {model.config.num_classes} classes; "
            + "; ".join(parts), p)
    merged = {k: state.get(k, v) for k, v in own.items()}
    try:
        model.load_state_dict(merged, strict=True)
    except Exception as exc:  # a dtype that cannot be copied, for instance
        raise CorrelaxError(f"weights cannot be loaded ({type(exc).__name__}: {exc})", p) from exc
