"""Shared fixtures: a tiny-model checkpoint, a small phantom and it as a DICOM file.

Everything is small (512×320 phantom, the "tiny" backbone) so the suite stays fast on a
2-core CPU; session-scoped fixtures are built once and must not be modified by tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL_SHAPE = (512, 320)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``.safetensors`` checkpoint of an untrained tiny classifier (the 8 labels, 256 px)."""
    import torch

    from napari_correlax.models import save_checkpoint
    from napari_correlax.models.classifier import Classifier

    torch.manual_seed(0)
    model = Classifier("tiny").eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture
def broken_checkpoint(tmp_path: Path) -> Path:
    """A file named like a checkpoint that holds no safetensors data."""
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00\x01not a checkpoint" * 10)
    return path


@pytest.fixture(scope="session")
def small_phantom():
    """A 512×320 CC phantom (0.1 mm pixels) with one mass (``synth.make_phantom`` seed 1)."""
    from napari_correlax.synth import make_phantom

    return make_phantom(1, shape=SMALL_SHAPE, findings=["Mass"])


@pytest.fixture(scope="session")
def phantom_dicom(tmp_path_factory: pytest.TempPathFactory, small_phantom) -> Path:
    """``small_phantom`` written as an uncompressed 16-bit DICOM (``synth.write_dicom``)."""
    from napari_correlax.synth import write_dicom

    return write_dicom(tmp_path_factory.mktemp("dicom") / "phantom.dcm", small_phantom)


def write_mass_dataset(root: Path, n_train: int, n_test: int, shape: tuple[int, int],
                       seed: int = 0, density: str = "DENSITY A") -> Path:
    """A VinDr-layout data set of CC phantoms (``synth.make_phantom``): every other image
    has one Mass, the others none (No Finding); lateralities alternate in pairs."""
    import csv
    import io

    from napari_correlax.synth import make_phantom, write_dicom
    from napari_correlax.synth.dataset import FINDING_COLUMNS

    rows = []
    for i in range(n_train + n_test):
        split = "training" if i < n_train else "test"
        positive = i % 2 == 0
        side = "LR"[(i // 2) % 2]
        phantom = make_phantom(seed * 1000 + i, shape=shape, laterality=side,
                               findings=["Mass"] if positive else [], density=density)
        study, image = f"study{i:03d}", f"image{i:03d}"
        write_dicom(root / "images" / study / f"{image}.dicom", phantom, study_id=study,
                    image_id=image)
        head = [study, f"series{i}", image, side, "CC", str(shape[0]), str(shape[1]),
                "BI-RADS 1", density]
        if positive:
            rows += [[*head, str([f.category]), f.birads, *(f"{v:.1f}" for v in f.box), split]
                     for f in phantom.findings]
        else:
            rows.append([*head, "['No Finding']", "", "", "", "", "", split])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FINDING_COLUMNS)
    writer.writerows(rows)
    (root / "finding_annotations.csv").write_text(buf.getvalue())
    return root


@pytest.fixture(scope="session")
def mass_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 training and 16 test 512×320 phantoms, half with one Mass (GMIC's normal vs mass)."""
    return write_mass_dataset(tmp_path_factory.mktemp("mass_phantoms"), 48, 16, (512, 320))


@pytest.fixture(scope="session")
def small_mass_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training and 6 test 256×160 phantoms, half with one Mass."""
    return write_mass_dataset(tmp_path_factory.mktemp("small_mass_phantoms"), 8, 6, (256, 160),
                              seed=1)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny classifier with 128 px windows (fast on 2 CPU cores)."""
    import torch

    from napari_correlax.models import save_checkpoint
    from napari_correlax.models.classifier import Classifier

    torch.manual_seed(0)
    return save_checkpoint(Classifier("tiny", input_size=128).eval(),
                           tmp_path_factory.mktemp("model") / "tiny128.safetensors")
