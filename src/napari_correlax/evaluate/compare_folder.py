"""What a ``correlax compare`` folder was made with, so that its methods compare like for
like (docs/method.md §10).

Every method of one folder must be scored on the same images with the same model and
the same map settings. The first run writes ``settings.json`` (atomically): the data
folder, split and image limit, the model (checkpoint name and SHA-256 prefix) and every
map setting (stride, reach, tissue threshold, the CorRELAX fields, precision, and the
method options such as the CAM ``mode``) — everything but the method and the fields that
only change speed (device, batch sizes, threads). A later run whose record differs is
refused with one line naming the first setting that differs and both values
(:func:`check_folder`); methods can still be added to a folder freely.

``--fresh`` (:func:`start_fresh`) starts the folder anew: it deletes the folder's
``cache/`` (the maps of every method and image, which are then computed again), the
tables and ``settings.json`` that ``correlax compare`` wrote, and leaves any other file
in the folder alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorrelaxError
from ..files import atomic_write_text

if TYPE_CHECKING:
    from ..maps.settings import MapSettings

__all__ = ["FOLDER_SETTINGS", "OUTPUTS", "check_folder", "folder_record", "record_folder",
           "start_fresh"]

#: The record of a compare folder, inside it.
FOLDER_SETTINGS = "settings.json"

#: Files ``correlax compare`` writes into its folder (besides ``cache/``).
OUTPUTS = ("compare.csv", "compare.md", "paired.csv", "times.csv", "froc.csv", "froc.png",
           "pointing-verdicts.csv", "compare.json", FOLDER_SETTINGS)

#: Map-setting fields left out of the record: the method (each run of the folder has
#: several) and those that only change speed, never a map.
_NOT_RECORDED = ("method", "device", "batch_size", "mask_batch", "threads", "options")


def folder_record(data: str | os.PathLike[str], split: str, limit: int | None,
                  model: tuple[str, str], settings: MapSettings,
                  options: dict[str, Any]) -> dict[str, Any]:
    """The settings every method of a folder shares, in the order they are checked.

    ``model`` is ``(checkpoint name, SHA-256 prefix)``
    (:func:`~napari_correlax.maps.cache.model_fingerprint`); ``options`` the method
    options given to every method (``mode``, …), recorded as ``option <name>``.
    """
    record: dict[str, Any] = {
        "data": str(Path(data).expanduser().resolve()),
        "split": split,
        "limit": limit,
        "model": f"{model[0]} (sha256 {model[1]})",
    }
    record.update({k: v for k, v in settings.as_dict().items() if k not in _NOT_RECORDED})
    record.update({f"option {k}": v for k, v in sorted(options.items())})
    return record


def check_folder(out: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Refuse a run whose ``record`` differs from the one the folder was made with.

    A folder without ``settings.json`` (new) passes.

    Raises:
        CorrelaxError: naming ``settings.json``, the first setting that differs and its
            two values, or saying the record cannot be read.
    """
    path = Path(out).expanduser() / FOLDER_SETTINGS
    if not path.is_file():
        return
    try:
        made = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorrelaxError(f"cannot read this compare folder's settings ({exc}); pass "
                            "--fresh to start the folder anew", path) from None
    if not isinstance(made, dict):
        raise CorrelaxError("this compare folder's settings are not a JSON object; pass "
                            "--fresh to start the folder anew", path)
    for name in [*record, *(k for k in made if k not in record)]:
        if _canonical(made.get(name)) != _canonical(record.get(name)):
            raise CorrelaxError(
                f"this folder's methods were computed with {name} = {made.get(name)!r}, this "
                f"run asks for {name} = {record.get(name)!r}; all methods of a folder share "
                "images, model and map settings: use the same settings, another --out, or "
                "--fresh to start the folder anew (its cached maps are deleted)", path)


def _canonical(value: Any) -> str:
    """A JSON text of ``value`` (so that 64 and 64.0, tuples and lists compare equal)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, default=str)


def record_folder(out: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write the folder's ``settings.json`` atomically unless it exists; returns its path."""
    path = Path(out).expanduser() / FOLDER_SETTINGS
    if not path.is_file():
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def start_fresh(out: str | os.PathLike[str]) -> None:
    """Delete what ``correlax compare`` wrote in ``out`` (:data:`OUTPUTS` and ``cache/``);
    other files stay."""
    folder = Path(out).expanduser()
    shutil.rmtree(folder / "cache", ignore_errors=True)
    for name in OUTPUTS:
        (folder / name).unlink(missing_ok=True)
