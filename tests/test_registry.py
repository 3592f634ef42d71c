"""Registries import nothing until read, then hold the built-ins first and in order."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from napari_correlax.errors import CorrelaxError

#: The order the docks list the built-in map methods in (prediction, CorRELAX, the CAM
#: family as docs/method.md §8 lists it, GMIC).
DOCK_ORDER = ["prediction", "correlax", "cam", "gradcam", "gradcam++", "xgradcam", "layercam",
              "hirescam", "eigencam", "scorecam", "ablationcam", "gmic"]


def test_reading_a_registry_loads_the_builtins_once_without_torch():
    code = (
        "import json, sys\n"
        "import napari_correlax.maps.methods as methods\n"
        "import napari_correlax.models.checkpoint as checkpoint\n"
        "before = 'napari_correlax.builtin' in sys.modules\n"
        "names = list(methods.METHODS)\n"
        "formats = list(checkpoint.CHECKPOINT_FORMATS)\n"
        "print(json.dumps([before, names, formats, 'torch' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    before, names, formats, torch_loaded = json.loads(out.strip().splitlines()[-1])
    assert before is False and torch_loaded is False
    assert names == DOCK_ORDER
    assert formats == ["napari-correlax-classifier", "napari-correlax-gmic"]


def test_unknown_names_are_one_error_naming_the_known_ones():
    from napari_correlax.maps.methods import get_method

    with pytest.raises(CorrelaxError, match=r"unknown map method 'gradcan'; choose one of "
                                            r"prediction, correlax, cam, gradcam, "):
        get_method("gradcan")


def test_load_model_opens_a_format_registered_later(tmp_path):
    import torch

    from napari_correlax.models.checkpoint import (
        CHECKPOINT_FORMATS,
        load_model,
        register_format,
        write_checkpoint,
    )

    opened = []

    def open_toy(path, *, device):
        opened.append((path, device))
        return "toy model"

    path = write_checkpoint(tmp_path / "toy", {"w": torch.zeros(2)}, {"format": "toy-format"})
    with pytest.raises(CorrelaxError, match="'toy-format'"):
        load_model(path)
    register_format("toy-format", open_toy)
    try:
        assert load_model(path, device="cpu") == "toy model"
        assert opened == [(path, "cpu")]
        assert list(CHECKPOINT_FORMATS)[-1] == "toy-format"
    finally:
        CHECKPOINT_FORMATS.pop("toy-format")
    assert list(CHECKPOINT_FORMATS) == ["napari-correlax-classifier", "napari-correlax-gmic"]
