"""Multi-label focal loss (docs/method.md §5, paper §3.3).

For one label with ground truth ``y ∈ {0, 1}`` and probability ``p = σ(z)``::

    FL = −[ α y (1 − p)^γ log p + (1 − α)(1 − y) p^γ log(1 − p) ]

with α = 0.95 and γ = 2.5: α weights the positive term and 1 − α the negative one, the
convention of Lin et al. and of ``torchvision.ops.sigmoid_focal_loss``, in which the
paper's authors tuned α. The paper's Eq. 1 prints α outside the bracket; read that way
α would only scale the loss, and Adam, which is invariant to the scale of the loss,
would cancel it. ``alpha < 0`` turns the weighting off (both terms weight 1), as in
torchvision.

The loss is computed from the logits ``z`` with ``log p = log σ(z)`` and
``log(1 − p) = log σ(−z)`` (``logsigmoid``), which stays finite for any ``|z|``;
``p^γ`` and ``(1 − p)^γ`` come from the same log values (``exp(γ log p)``), so large
logits give no ``0 · (−inf)``. Soft targets in [0, 1] are accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["FOCAL_ALPHA", "FOCAL_GAMMA", "focal_loss"]

FOCAL_ALPHA = 0.95
FOCAL_GAMMA = 2.5


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss of pre-sigmoid ``logits`` ``(N, C)`` against ``targets`` ``(N, C)``.

    ``reduction``: ``"mean"`` (default) averages over every sample and label (all
    ``N·C`` terms equally weighted), ``"sum"`` adds them, ``"none"`` returns ``(N, C)``.
    """
    import torch.nn.functional as F

    y = targets.to(logits.dtype)
    log_p = F.logsigmoid(logits)
    log_q = F.logsigmoid(-logits)
    pos = y * (gamma * log_q).exp() * log_p
    neg = (1.0 - y) * (gamma * log_p).exp() * log_q
    loss = -(alpha * pos + (1.0 - alpha) * neg) if alpha >= 0 else -(pos + neg)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
