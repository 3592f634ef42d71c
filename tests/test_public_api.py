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


def test_every_core_module_imports_without_napari_or_qt():
    """The compute core (everything outside ``_napari``) never loads napari, Qt or magicgui."""
    from pathlib import Path

    import napari_correlax

    root = Path(napari_correlax.__file__).parent
    modules = sorted(
        ".".join(["napari_correlax", *(n for n in p.relative_to(root).with_suffix("").parts
                                       if n != "__init__")])
        for p in root.rglob("*.py")
        if "_napari" not in p.parts and p.name != "__main__.py"  # __main__ runs the CLI
    )
    assert len(modules) > 30
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
