"""napari contributions: everything here may import napari or Qt; nothing else does.

Importing this package keeps the ``triton`` compiler out of the napari process
(:func:`keep_triton_out`): every contribution (reader, docks, sample data, writer) is a
module of this package, so the guard is in place before any of them imports torch.

Importing it changes none of the user's napari settings: the plugin becomes napari's
reader for DICOM files only when the user asks, with the analysis dock's notice
(:mod:`._reader_notice`), which calls :func:`prefer_plugin_reader`.
"""

from __future__ import annotations

import os
import sys

#: Set to ``1`` to let ``triton`` load inside napari anyway (at your own risk: see below).
ALLOW_TRITON_ENV = "CORRELAX_ALLOW_TRITON"


def keep_triton_out() -> bool:
    """Stop ``triton`` from being imported in this process; True when the guard was set.

    napari draws its canvas with OpenGL; on Linux with Mesa (software rendering under
    Xvfb or a remote desktop, and Mesa hardware drivers) that loads Mesa's own LLVM into
    the process. CUDA builds of PyTorch ship ``triton``, which carries another LLVM, and
    ``import torchvision`` imports it (``torchvision.ops`` → ``torch._dynamo`` asks
    whether triton is usable by importing it). Imported after the OpenGL context exists,
    the two LLVMs clash and the process dies with a segmentation fault; that is what
    happened to anyone who ran an EfficientNetV2 (torchvision) checkpoint in the dock.

    The plugin never compiles models (no ``torch.compile``), so it needs nothing from
    triton: an entry of ``None`` in ``sys.modules`` makes ``import triton`` raise
    ``ImportError``, which torch reads as "triton not installed". If triton was
    imported before (so before the OpenGL library, which is safe), nothing changes.
    ``CORRELAX_ALLOW_TRITON=1`` turns the guard off.
    """
    if os.environ.get(ALLOW_TRITON_ENV) == "1" or "triton" in sys.modules:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    return True


#: File patterns the plugin's reader is preferred for (napari's own reader opens DICOM
#: files without spacing, window or MONOCHROME1 handling, and a whole folder at a time).
PREFERRED_PATTERNS = ("*.dcm", "*.dicom", "*.DCM", "*.DICOM")


def unset_reader_patterns() -> list[str]:
    """The DICOM patterns for which napari's saved preferences (``plugins.extension2reader``)
    name no reader: napari asks which reader to use when such a file is dropped (its
    built-in reader also claims the extension). Empty when napari's settings cannot be
    read."""
    try:
        from napari.settings import get_settings

        current = get_settings().plugins.extension2reader
        return [p for p in PREFERRED_PATTERNS if p not in current]
    except Exception:
        return []


def prefer_plugin_reader() -> list[str]:
    """Make this plugin napari's reader for the DICOM patterns without a preference.

    Writes napari's saved setting ``plugins.extension2reader``, so call it only when the
    user asks (the analysis dock's notice). A choice the user made in napari's
    preferences is kept. Returns the patterns set; never raises.
    """
    try:
        from napari.settings import get_settings

        plugins = get_settings().plugins
        new = unset_reader_patterns()
        if new:
            current = dict(plugins.extension2reader)
            plugins.extension2reader = {**current, **dict.fromkeys(new, "napari-correlax")}
        return new
    except Exception:
        return []


keep_triton_out()
