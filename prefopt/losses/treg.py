"""T-REG: token-level reward regularization (Zhou et al., ACL 2025, arXiv 2412.02685).

Two registered names, because a name has one ``requires_reference`` flag:

* ``treg``: DPO-REG, on top of :func:`prefopt.losses.dpo.dpo` (needs the reference);
* ``treg_simpo``: SimPO-REG, on top of :func:`prefopt.losses.simpo.simpo` (reference-free).

Both need ``PairLogps.chosen_token_rewards`` / ``rejected_token_rewards``: the self-generated
token rewards ``r̂_t = sig(log pi_eval(y_t|x_better, y_<t) - log pi_eval(y_t|x_worse, y_<t)) - 0.5``
that ``prefopt annotate treg`` writes into the pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefopt.lazy import lazy_import
from prefopt.losses.aggregate import Reduction, aggregate
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import scalar_metrics
from prefopt.losses.dpo import dpo
from prefopt.losses.hparams import FlipProbability, NonNegative, Positive
from prefopt.losses.simpo import simpo

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def _check_inputs(loss_name: str, batch: PairLogps) -> None:
    """Fail before any compute if the token rewards are missing."""
    missing = [
        name for name in ("chosen_token_rewards", "rejected_token_rewards") if getattr(batch, name) is None
    ]
    if missing:
        raise ValueError(
            f"loss {loss_name!r} needs per-token T-REG rewards but PairLogps.{' and PairLogps.'.join(missing)} "
            "is None; annotate the pairs with `prefopt annotate treg` and keep the chosen_token_rewards / "
            "rejected_token_rewards columns when tokenizing"
        )


def _regularized(
    batch: PairLogps,
    base: LossOutput,
    margin: torch.Tensor,
    alpha: float,
    beta: float,
    reg_reduction: Reduction,
) -> LossOutput:
    """Add ``alpha * w * (L_REG(y_w) + L_REG(y_l))`` to ``base``, with ``w = sig(-margin)`` detached."""
    reg_chosen = -aggregate(
        beta * batch.chosen_token_rewards.detach() * batch.chosen, batch.chosen_mask, reg_reduction
    )
    reg_rejected = -aggregate(
        beta * batch.rejected_token_rewards.detach() * batch.rejected, batch.rejected_mask, reg_reduction
    )
    weight = torch.sigmoid(-margin.detach())
    penalty = alpha * weight * (reg_chosen + reg_rejected)
    if batch.weights is not None:
        penalty = penalty * batch.weights
    metrics = base.metrics | scalar_metrics(
        {"treg/weight": weight, "treg/reg_chosen": reg_chosen, "treg/reg_rejected": reg_rejected}
    )
    return LossOutput(base.loss + penalty, base.chosen_rewards, base.rejected_rewards, metrics)


@register_loss("treg", requires_reference=True)
def treg(
    batch: PairLogps,
    *,
    alpha: NonNegative = 0.25,
    beta: Positive = 0.1,
    label_smoothing: FlipProbability = 0.0,
    reg_reduction: Reduction = "sum",
) -> LossOutput:
    """DPO-REG, arXiv 2412.02685.

    ``L = L_DPO + alpha * w * (L_REG(y_w) + L_REG(y_l))``, with

    * ``L_REG(y) = -sum_t beta * r̂_t * log pi_theta(y_t|x, y_<t)`` (a token-reward-weighted LM
      loss: tokens with ``r̂_t > 0`` are pushed up, ``r̂_t < 0`` down, in both responses);
    * ``w = sig(-beta h)``, the DPO gradient weight, treated as a constant (detached): pairs DPO
      already separates get little regularization;
    * ``alpha`` the regularization strength (the paper searches {0.1, 0.25, 0.5}); ``beta``,
      ``label_smoothing`` as in :func:`prefopt.losses.dpo.dpo`.

    ``reg_reduction="sum"`` follows the paper's formula; ``"mean"`` divides ``L_REG`` by ``|y|``
    so long responses do not dominate (which one the official code uses is unverified).
    Extra metrics: ``treg/weight`` (mean ``w``), ``treg/reg_chosen``, ``treg/reg_rejected``.
    """
    _check_inputs("treg", batch)
    base = dpo(batch, beta=beta, label_smoothing=label_smoothing)
    margin = base.chosen_rewards - base.rejected_rewards
    return _regularized(batch, base, margin, alpha, beta, reg_reduction)


@register_loss("treg_simpo", requires_reference=False)
def treg_simpo(
    batch: PairLogps,
    *,
    alpha: NonNegative = 0.25,
    beta: Positive = 2.0,
    gamma_beta_ratio: float = 0.5,
    sft_weight: NonNegative = 0.0,
    label_smoothing: FlipProbability = 0.0,
    reg_reduction: Reduction = "sum",
) -> LossOutput:
    """SimPO-REG, arXiv 2412.02685: ``L = L_SimPO + alpha * w * (L_REG(y_w) + L_REG(y_l))``.

    As :func:`treg`, with SimPO's margin in the weight,
    ``w = sig(-beta * (a(y_w) - a(y_l) - gamma_beta_ratio))`` (``a`` = average log-prob), and
    SimPO's ``beta`` in ``L_REG``. The paper describes SimPO-REG only in words; this substitution
    is our reading of it. Other hyperparameters as in :func:`prefopt.losses.simpo.simpo`.
    """
    _check_inputs("treg_simpo", batch)
    base = simpo(
        batch,
        beta=beta,
        gamma_beta_ratio=gamma_beta_ratio,
        sft_weight=sft_weight,
        label_smoothing=label_smoothing,
    )
    margin = base.chosen_rewards - base.rejected_rewards - beta * gamma_beta_ratio
    return _regularized(batch, base, margin, alpha, beta, reg_reduction)
