"""CPO and AlphaPO: reference-free losses from TRL's ``CPOTrainer``.

Symbols: ``log pi(y|x)`` summed and ``a(y) = log pi(y|x) / |y|`` averaged over completion tokens;
``sig`` the sigmoid; ``eps = label_smoothing`` as in cDPO. No reference model is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefopt.lazy import lazy_import
from prefopt.losses.aggregate import aggregate
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import finish, sigmoid_loss
from prefopt.losses.hparams import FlipProbability, NonNegative, Positive

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@register_loss("cpo", requires_reference=False)
def cpo(
    batch: PairLogps, *, beta: Positive = 0.1, bc_weight: NonNegative = 1.0, label_smoothing: FlipProbability = 0.0
) -> LossOutput:
    """Contrastive Preference Optimization (Xu et al. 2024, arXiv 2401.08417, Sec. 3), TRL ``CPOTrainer`` (sigmoid).

    ``L = (1 - eps) * (-log sig(z)) + eps * (-log sig(-z)) + bc_weight * (-a(y_w))``,
    ``z = beta * (log pi(y_w|x) - log pi(y_l|x))``.

    DPO with the reference replaced by a uniform prior (the paper's upper-bound argument) plus a
    behaviour-cloning NLL on the chosen response with weight ``bc_weight`` (TRL's ``cpo_alpha``,
    default 1.0 as in the paper). Deviation: TRL averages the NLL over all chosen tokens of the
    batch, here per pair (equal when chosen lengths are). Rewards ``beta * log pi(y)``; ``logps/*`` summed.
    """
    chosen = aggregate(batch.chosen, batch.chosen_mask, "sum")
    rejected = aggregate(batch.rejected, batch.rejected_mask, "sum")
    loss = sigmoid_loss(beta * (chosen - rejected), label_smoothing)
    if bc_weight:
        loss = loss - bc_weight * aggregate(batch.chosen, batch.chosen_mask, "mean")
    return finish(batch, loss, beta * chosen, beta * rejected, chosen, rejected)


def alpha_reward(avg_logps: torch.Tensor, alpha: float) -> torch.Tensor:
    """AlphaPO's reward shape ``r = (1 - p^(-alpha)) / alpha`` with ``p = exp(a(y))``; ``alpha = 0`` gives ``a(y)``."""
    if alpha == 0:
        return avg_logps
    return -torch.expm1(-alpha * avg_logps) / alpha


@register_loss("alphapo", requires_reference=False)
def alphapo(
    batch: PairLogps,
    *,
    beta: Positive = 2.0,
    gamma_beta_ratio: float = 0.5,
    alpha: float = 0.25,
    label_smoothing: FlipProbability = 0.0,
) -> LossOutput:
    """AlphaPO (Gupta et al. 2025, arXiv 2501.03884, Sec. 3), TRL ``CPOConfig(loss_type="alphapo", alpha=...)``.

    SimPO with a reshaped reward: ``r(y) = (1 - p(y)^(-alpha)) / alpha``, ``p(y) = exp(a(y))``
    (the per-token geometric-mean probability), and

    ``z = beta * (r(y_w) - r(y_l) - gamma_beta_ratio)``, ``L = (1 - eps)(-log sig(z)) + eps(-log sig(-z))``.

    ``alpha -> 0`` recovers SimPO's ``r = a(y)`` (used exactly at ``alpha = 0``); ``alpha > 0``
    flattens the reward for unlikely responses and so limits how far the rejected likelihood is
    pushed down, ``alpha < 0`` the opposite. 0.25 is a moderate positive shape (TRL's default 0
    is plain SimPO). ``beta``, ``gamma_beta_ratio`` as in :func:`prefopt.losses.simpo.simpo`.
    Rewards ``beta * r(y)``; ``logps/*`` are ``a(y)``.
    """
    chosen = aggregate(batch.chosen, batch.chosen_mask, "mean")
    rejected = aggregate(batch.rejected, batch.rejected_mask, "mean")
    chosen_reward, rejected_reward = alpha_reward(chosen, alpha), alpha_reward(rejected, alpha)
    loss = sigmoid_loss(beta * (chosen_reward - rejected_reward - gamma_beta_ratio), label_smoothing)
    return finish(batch, loss, beta * chosen_reward, beta * rejected_reward, chosen, rejected)
