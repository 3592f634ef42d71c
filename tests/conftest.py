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
