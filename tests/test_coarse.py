"""Coarse to fine CorRELAX: the preview is the coarse grid at the mask floor, and the final
result equals a one-pass run with the same seed and settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_correlax.maps import explain_steps
from napari_correlax.maps.coarse import COARSE_FACTOR, MapPreview
from napari_correlax.maps.settings import MapSettings
from napari_correlax.maps.sliding import prepare_image
from napari_correlax.models.classifier import Classifier


@pytest.fixture(scope="module")
def phantom():
    from napari_correlax.synth import make_phantom

    return make_phantom(2, shape=(200, 150), findings=["Mass"])


def tiny() -> Classifier:
    torch.manual_seed(0)
    return Classifier("tiny", input_size=32).eval()


def collect(steps):
    """(events yielded, value returned) of a progress generator."""
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as stop:
            return events, stop.value


def run(image, model, settings):
    return collect(explain_steps(image, model, settings))


@pytest.mark.parametrize("extra", [
    {},  # defaults: focus mode, adaptive stopping
    {"focus": False, "adaptive": False, "masks": 192},
])
def test_coarse_first_gives_the_one_pass_result(phantom, extra):
    model = tiny()
    base = MapSettings(**{"stride": 16, "masks": 384, "min_masks": 128, "seed": 3,
                          "mask_batch": 48, "device": "cpu", "threads": 1, **extra})
    _, one = run(phantom, model, base)
    events, two = run(phantom, model, base.with_(coarse_first=True))

    np.testing.assert_array_equal(two.masks_used, one.masks_used)
    assert one.masks_used.max() > base.mask_floor  # some windows went past the floor
    for name in ("prediction", "correlation", "product", "distance", "relevance"):
        np.testing.assert_allclose(getattr(two, name), getattr(one, name), atol=1e-6,
                                   rtol=0, err_msg=name)
    assert two.stats.masks_total == one.stats.masks_total

    previews = [e for e in events if isinstance(e, MapPreview)]
    assert len(previews) == 1
    first = events.index(previews[0])
    assert {e.stage for e in events[:first]} == {"prepare", "coarse window", "coarse masks"}
    assert {e.stage for e in events[first + 1:]} == {"window", "masks"}
    masks = [e for e in events if e.stage == "masks"]
    assert masks[0].done > 0  # the final pass starts with the coarse windows' masks done
    assert masks[-1].done == masks[-1].total


def test_preview_is_the_coarse_grid_at_the_mask_floor(phantom):
    model = tiny()
    settings = MapSettings(stride=16, masks=256, min_masks=128, device="cpu", threads=1,
                           coarse_first=True)
    events, final = run(phantom, model, settings)
    preview = next(e for e in events if isinstance(e, MapPreview)).result
    prep = prepare_image(phantom, model, stride=16)
    fine = prep.grid
    assert preview.grid.stride == COARSE_FACTOR * fine.stride
    assert preview.grid.origin == fine.origin
    # The coarse windows are the fine grid's windows (0, 0), (0, 4), …: same corners.
    coarse_corners = preview.grid.corners()
    np.testing.assert_array_equal(coarse_corners, fine.corners()[::COARSE_FACTOR,
                                                                  ::COARSE_FACTOR])
    expected_active = prep.active[::COARSE_FACTOR, ::COARSE_FACTOR]
    np.testing.assert_array_equal(preview.window_mask, expected_active)
    np.testing.assert_array_equal(preview.masks_used[expected_active], 128)
    np.testing.assert_array_equal(preview.masks_used[~expected_active], 0)
    # Every coarse window also got at least its floor masks in the final run.
    assert final.masks_used[::COARSE_FACTOR, ::COARSE_FACTOR][expected_active].min() >= 128


def test_cli_preview_writes_the_coarse_map_and_the_same_final_map(tmp_path, capsys):
    import cv2

    from napari_correlax.cli import main
    from napari_correlax.maps import load_result
    from napari_correlax.models import save_checkpoint
    from napari_correlax.synth import make_phantom

    torch.manual_seed(0)
    ckpt = save_checkpoint(Classifier("tiny", input_size=32).eval(), tmp_path / "t.safetensors")
    image = tmp_path / "breast.png"
    pixels = make_phantom(4, shape=(200, 150), findings=["Mass"]).pixels
    cv2.imwrite(str(image), np.round(pixels * 65535).astype(np.uint16))
    common = ["explain", str(image), "--model", str(ckpt), "--masks", "256",
              "--stride", "16", "--device", "cpu", "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert main([*common, "--out", str(tmp_path / "two"), "--preview", str(tmp_path / "pre")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "coarse map" in printed[-2] and "coarse map" not in printed[-1]  # coarse first

    coarse = load_result(tmp_path / "pre" / "breast.npz")
    assert coarse.stride == COARSE_FACTOR * 16
    assert (tmp_path / "pre" / "breast.png").is_file()
    one, two = (load_result(tmp_path / d / "breast.npz") for d in ("one", "two"))
    np.testing.assert_array_equal(two.masks_used, one.masks_used)
    np.testing.assert_allclose(two.correlation, one.correlation, atol=1e-6, rtol=0)


def test_reader_shows_the_coarse_map_before_the_final_one(tmp_path):
    from napari_correlax.cli import main
    from napari_correlax.evaluate.runner import LoadedImage, Preview, load_image_steps
    from napari_correlax.io.vindr import load_vindr
    from napari_correlax.models import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(Classifier("tiny", input_size=32).eval(), tmp_path / "t.safetensors")
    assert main(["synth", str(tmp_path / "data"), "--n", "1", "--size", "200", "150"]) == 0
    (record,) = load_vindr(tmp_path / "data").images
    settings = MapSettings(stride=16, masks=128, device="cpu", threads=1)
    events, final = collect(load_image_steps(record, ckpt, settings, tmp_path / "cache"))
    shown = [e.image for e in events if isinstance(e, Preview)]
    # the image alone, its prediction maps, then the coarse CorRELAX map
    assert [s.result is None for s in shown] == [True, False, False]
    assert shown[1].result.correlation is None and not shown[2].final
    assert shown[2].result.stride == COARSE_FACTOR * 16
    assert shown[2].result.correlation is not None
    assert isinstance(final, LoadedImage) and final.final and final.result.stride == 16
