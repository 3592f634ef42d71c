"""Shared fixtures: a tiny-model checkpoint, a small phantom and it as a DICOM file.

Everything is small (512×320 phantom, the "tiny" backbone) so the suite stays fast on a
2-core CPU; session-scoped fixtures are built once and must not be modified by tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL_SHAPE = (512, 320)


def _load_triton_before_opengl() -> None:
    """Import triton, if installed, before any test opens an OpenGL context.

    Under Xvfb, napari's canvas uses Mesa's software OpenGL, which loads Mesa's libLLVM
    into the process; triton (imported by ``torch._dynamo``, e.g. on an optimizer's first
    step) carries its own LLVM and segfaults when it is imported after that. Imported
    first, both load fine (measured with torch 2.14 / triton and Mesa's libLLVM-15).
    """
    try:
        import triton  # noqa: F401
    except Exception:
        pass


_load_triton_before_opengl()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``.safetensors`` checkpoint of an untrained tiny classifier (8 SPEC labels, 256 px)."""
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
