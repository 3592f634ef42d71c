"""Fingerprints of models: a name and a hash of the weights, for cache keys and file names.

Used by the map cache (:mod:`.cache`) and the exported graphs of the inference engines
(:mod:`.engines`). Does not import torch unless given a model without a checkpoint file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["checkpoint_fingerprint", "model_fingerprint"]


_fingerprints: dict[tuple[str, int, int], str] = {}


def checkpoint_fingerprint(path: str | os.PathLike[str] | None) -> tuple[str, str]:
    """``(name, sha256 prefix)`` of a checkpoint file (None: the default/demo model).

    ``name`` is the file name without suffix; the hash (16 hex digits of the file's
    SHA-256) changes whenever the weights do. Hashes are remembered per (file, size,
    modification time). Does not import torch.
    """
    from ..models.checkpoint import resolve_checkpoint

    resolved = resolve_checkpoint(path)
    st = resolved.stat()
    key = (str(resolved.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _fingerprints:
        digest = hashlib.sha256()
        with open(resolved, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _fingerprints[key] = digest.hexdigest()[:16]
    return resolved.stem, _fingerprints[key]


def model_fingerprint(model: nn.Module) -> tuple[str, str]:
    """:func:`checkpoint_fingerprint` of a loaded model's checkpoint file.

    A model without a checkpoint file is named after its class and hashed from its
    config and parameters.
    """
    path = getattr(model, "checkpoint_path", None)
    if path and Path(path).is_file():
        return checkpoint_fingerprint(path)
    digest = hashlib.sha256(json.dumps(getattr(model, "config", dict)(), sort_keys=True,
                                       default=str).encode())
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return type(model).__name__, digest.hexdigest()[:16]
