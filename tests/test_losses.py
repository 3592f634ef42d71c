"""The focal loss (docs/method.md §5) against torchvision's ``sigmoid_focal_loss`` and by hand."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from torchvision.ops import sigmoid_focal_loss  # noqa: E402

from napari_correlax.train.losses import focal_loss  # noqa: E402


@pytest.mark.parametrize("alpha", [0.95, 0.25, -1.0])
def test_focal_loss_equals_torchvision_sigmoid_focal_loss(alpha):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 8, generator=gen, dtype=torch.float64) * 4
    targets = (torch.rand(64, 8, generator=gen) < 0.3).to(torch.float64)
    ours = focal_loss(logits, targets, alpha=alpha, gamma=2.5)
    ref = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=2.5, reduction="mean")
    assert float(ours) == pytest.approx(float(ref), rel=1e-10)
    ours_none = focal_loss(logits, targets, alpha=alpha, gamma=2.5, reduction="none")
    ref_none = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=2.5, reduction="none")
    torch.testing.assert_close(ours_none, ref_none, rtol=1e-10, atol=1e-12)


def test_alpha_weights_positives_and_one_minus_alpha_negatives():
    # z = 0: p = 0.5 for both terms, so FL = w · 0.5^2.5 · ln 2 with w = α or 1 − α
    base = 0.5**2.5 * math.log(2.0)
    pos = focal_loss(torch.tensor([[0.0]]), torch.tensor([[1.0]]), alpha=0.95)
    neg = focal_loss(torch.tensor([[0.0]]), torch.tensor([[0.0]]), alpha=0.95)
    assert float(pos) == pytest.approx(0.95 * base, rel=1e-6)
    assert float(neg) == pytest.approx(0.05 * base, rel=1e-6)


def test_focal_loss_is_finite_for_extreme_logits():
    z = torch.tensor([[200.0, -200.0, 200.0, -200.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    loss = focal_loss(z, y, reduction="none")
    values = loss.detach()
    assert torch.isfinite(values).all()
    assert float(values[0, 0]) == pytest.approx(0.0, abs=1e-30)  # confident and right
    # confident and wrong negative: −(1 − 0.95) · 1 · log σ(−200) = 0.05 · 200
    assert float(values[0, 2]) == pytest.approx(0.05 * 200.0, rel=1e-5)
    # confident and wrong positive: −0.95 · 1 · log σ(−200) = 0.95 · 200
    assert float(values[0, 3]) == pytest.approx(0.95 * 200.0, rel=1e-5)
    loss.sum().backward()
    assert torch.isfinite(z.grad).all()
