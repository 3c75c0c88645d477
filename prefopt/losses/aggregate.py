"""Token log-probs -> sequence scores: the one place where sum, mean and LD-DPO's split live.

Every loss reduces completion-aligned per-token log-probs ``[B, T]`` with a boolean mask through
:func:`aggregate`; no loss sums tokens by hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from prefopt.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

Reduction = Literal["sum", "mean"]


def lengths(mask: torch.Tensor) -> torch.Tensor:
    """Number of completion tokens per row, as float ``[B]``."""
    return mask.sum(-1).to(torch.float32)


def aggregate(token_logps: torch.Tensor, mask: torch.Tensor, reduction: Reduction = "sum") -> torch.Tensor:
    """Sum (``log pi(y|x)``) or per-token mean (``log pi(y|x) / |y|``) of masked token log-probs.

    Rows with an empty mask give 0 for both reductions (no division by zero).
    """
    total = torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum(-1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / lengths(mask).clamp(min=1.0)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def ld_aggregate(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_mask: torch.Tensor,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LD-DPO's length-desensitized sequence log-probs (arXiv 2409.06411).

    With the public length ``l_p = min(|y_w|, |y_l|)`` of each pair::

        log pî(y|x) = sum_{t <= l_p} log pi(y_t|x, y_<t) + alpha * sum_{t > l_p} log pi(y_t|x, y_<t)

    Positions are counted in completion tokens (the tensors are completion-aligned), so the
    prompt never enters the shared region. ``alpha = 1`` gives plain sums; ``alpha`` in ``[0, 1]``
    is the caller's to guarantee (``ld_dpo`` declares ``ld_alpha: UnitInterval``).
    """
    shared = torch.minimum(lengths(chosen_mask), lengths(rejected_mask))

    def split(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        position = torch.arange(logps.shape[-1], device=logps.device).unsqueeze(0)
        in_shared = position < shared.unsqueeze(-1)
        weight = torch.where(in_shared, 1.0, logps.new_tensor(alpha))
        return aggregate(logps * weight, mask, "sum")

    return split(chosen, chosen_mask), split(rejected, rejected_mask)
