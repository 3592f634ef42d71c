"""The docs/method.md §12 public names are what they say they are."""

from __future__ import annotations

import inspect
import subprocess
import sys


def test_public_functions_are_functions():
    import napari_correlax.maps.correlax  # noqa: F401  (importing subpackages must not shadow)
    from napari_correlax import (
        explain,
        explain_windows,
        load_classifier,
        load_result,
        predict,
        read_mammogram,
    )

    for fn in (read_mammogram, load_classifier, predict, explain, explain_windows, load_result):
        assert inspect.isfunction(fn), fn
    params = inspect.signature(explain_windows).parameters
    assert list(params)[:5] == ["model", "windows", "masks", "seed", "adaptive"]
    assert params["masks"].default == 2560 and params["seed"].default == 0
    assert params["adaptive"].default is False


def test_import_does_not_load_torch():
    code = "import sys, napari_correlax; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
