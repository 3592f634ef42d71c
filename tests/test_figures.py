"""The PNG figure of the CLI and exports: ground-truth boxes drawn, a title naming the
image and the model, the demo-model warning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_correlax.boxes import Box
from napari_correlax.maps import MapResult
from napari_correlax.windows import WindowGrid

SAMPLE = Path(__file__).parents[1] / "sample_data"
SAMPLE_IMAGE = (SAMPLE / "images" / "086dbe02c27e8f8e06446a91f0d57509"
                / "0f312afd26d19c80a97850eb9c907272.dicom")


def small_result() -> MapResult:
    grid = WindowGrid(64, 32, (0, 0), (4, 3), (160, 128))
    prediction = np.zeros((2, 4, 3), np.float32)  # transparent: only the image and boxes show
    return MapResult(["Mass", "Asymmetries"], grid, prediction, np.ones((4, 3), bool), None)


def box_green_pixels(path: Path) -> int:
    import matplotlib.image as mpimg

    rgb = mpimg.imread(path)[..., :3]
    return int(((rgb[..., 1] > 0.8) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3)).sum())


def test_boxes_are_drawn_in_the_box_colour_on_their_labels_panel(tmp_path):
    from napari_correlax.figures import save_overlay

    pixels = np.full((160, 128), 0.3, np.float32)
    box = Box("Mass", "Mass", 20.0, 40.0, 100.0, 120.0)
    with_box = save_overlay(tmp_path / "a.png", pixels, small_result(), labels=["Mass"],
                            boxes=[box])
    without = save_overlay(tmp_path / "b.png", pixels, small_result(), labels=["Mass"])
    other = save_overlay(tmp_path / "c.png", pixels, small_result(), labels=["Asymmetries"],
                         boxes=[box])
    assert box_green_pixels(without) == 0 and box_green_pixels(other) == 0
    # the rectangle's perimeter at the figure's scale: well over a hundred pixels
    assert box_green_pixels(with_box) > 100


def test_title_and_demo_warning_are_on_the_figure(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from napari_correlax.figures import save_overlay

    closed = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (closed.append(fig), real_close(fig)))
    save_overlay(tmp_path / "a.png", np.zeros((160, 128), np.float32), small_result(),
                 title="scan.dcm · model: demo model", warning="Demo model: phantoms only")
    (fig,) = closed
    assert fig._suptitle is not None and "scan.dcm · model: demo model" in fig._suptitle.get_text()
    texts = [t.get_text() for t in fig.texts]
    assert "Demo model: phantoms only" in texts


def test_cli_figure_notes_find_the_sample_boxes_and_warn_about_the_demo_model():
    pytest.importorskip("safetensors")
    from napari_correlax.cli.predict import figure_notes
    from napari_correlax.figures import PHANTOM_WARNING

    notes = figure_notes(SAMPLE_IMAGE, None)  # no model given: the demo model
    assert notes["title"] == f"{SAMPLE_IMAGE.name} · model: demo model"
    assert notes["warning"] == PHANTOM_WARNING
    # the sample CSV has a Mass (134, 237)–(329, 396) box for this image
    assert any(b.label == "Mass" and (b.xmin, b.ymin, b.xmax, b.ymax) == (134, 237, 329, 396)
               for b in notes["boxes"])


def test_cli_figure_notes_of_an_image_without_a_csv(tmp_path):
    pytest.importorskip("safetensors")
    from napari_correlax.cli.predict import figure_notes

    notes = figure_notes(tmp_path / "lone.png", None)
    assert notes["boxes"] == []
