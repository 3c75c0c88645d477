"""What every loss shares: sequence log-ratios, the smoothed sigmoid, and the output.

Hyperparameter values are not checked here: each loss declares them in its signature and
:func:`prefopt.losses.get_loss` checks them (:mod:`prefopt.losses.hparams`).

:func:`finish` is the single place that applies ``PairLogps.weights`` and computes the metrics
every loss reports, under TRL's names so runs compare with TRL runs. The trainer logs these as
they are and computes none of its own (docs/losses.md §1 lists the quantity for every loss):

* ``rewards/chosen``, ``rewards/rejected``: mean implicit reward (what the loss compares, e.g.
  ``beta * (log pi(y_w) - log pi_ref(y_w))`` for DPO, ``beta * avg log pi(y_w)`` for SimPO);
* ``rewards/margins``: mean of chosen minus rejected reward; ``rewards/accuracies``: fraction
  of pairs where the chosen reward is strictly higher;
* ``logps/chosen``, ``logps/rejected``: mean policy sequence score the loss uses (sum, per-token
  mean or LD-aggregated, as the loss says);
* ``length/chosen``, ``length/rejected``: mean completion length in tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from prefopt.lazy import lazy_import
from prefopt.losses.aggregate import Reduction, aggregate, lengths
from prefopt.losses.base import LossOutput, PairLogps
from prefopt.losses.divergence import f_prime

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = lazy_import("torch")
    F = lazy_import("torch.nn.functional")


class SequenceScores(NamedTuple):
    """Policy sequence log-probs and policy-minus-reference log-ratios, each ``[B]``."""

    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    chosen_logratios: torch.Tensor
    rejected_logratios: torch.Tensor


def logratios(
    batch: PairLogps, reduction: Reduction, f_divergence: str = "reverse_kl", f_alpha: float = 0.5
) -> SequenceScores:
    """Policy sequence scores and the (f-divergence) log-ratio scores, reduced with ``reduction``.

    The log-ratios are ``f'(exp(rho))`` of the summed ``rho = log pi(y) - log pi_ref(y)``
    (:mod:`prefopt.losses.divergence`; ``reverse_kl`` is ``rho`` itself). ``reduction="mean"``
    then divides scores and log-ratios by ``|y|``, the per-token form TRL's IPO and
    ``sigmoid_norm`` use. The caller guarantees a reference is present.
    """
    chosen = aggregate(batch.chosen, batch.chosen_mask, "sum")
    rejected = aggregate(batch.rejected, batch.rejected_mask, "sum")
    chosen_ratio = f_prime(chosen - aggregate(batch.ref_chosen, batch.chosen_mask, "sum"), f_divergence, f_alpha)
    rejected_ratio = f_prime(
        rejected - aggregate(batch.ref_rejected, batch.rejected_mask, "sum"), f_divergence, f_alpha
    )
    if reduction == "mean":
        chosen_len = lengths(batch.chosen_mask).clamp(min=1.0)
        rejected_len = lengths(batch.rejected_mask).clamp(min=1.0)
        chosen, chosen_ratio = chosen / chosen_len, chosen_ratio / chosen_len
        rejected, rejected_ratio = rejected / rejected_len, rejected_ratio / rejected_len
    return SequenceScores(chosen, rejected, chosen_ratio, rejected_ratio)


def sigmoid_loss(logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Conservative (label-smoothed) logistic loss ``(1-eps)(-log sig(z)) + eps(-log sig(-z))``.

    ``eps = 0`` is the plain Bradley-Terry loss ``-log sig(z) = softplus(-z)``.
    """
    loss = F.softplus(-logits)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss + label_smoothing * F.softplus(logits)
    return loss


def scalar_metrics(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Batch means of detached tensors as Python floats, with one device sync for all of them.

    Means are taken in float32, or float64 when any input is float64 (not bf16 or fp16).
    """
    dtype = torch.float64 if any(value.dtype == torch.float64 for value in values.values()) else torch.float32
    means = torch.stack([value.detach().to(dtype).mean() for value in values.values()])
    return dict(zip(values, means.tolist()))


def finish(
    batch: PairLogps,
    loss: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
) -> LossOutput:
    """Apply ``batch.weights`` to the per-pair ``loss`` and assemble the :class:`LossOutput`.

    Rewards are detached; the metrics are listed in the module docstring.
    """
    if batch.weights is not None:
        loss = loss * batch.weights
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    metrics = scalar_metrics(
        {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/margins": chosen_rewards - rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "logps/chosen": chosen_logps,
            "logps/rejected": rejected_logps,
            "length/chosen": lengths(batch.chosen_mask),
            "length/rejected": lengths(batch.rejected_mask),
        }
    )
    return LossOutput(loss, chosen_rewards, rejected_rewards, metrics)


def finish_logratios(batch: PairLogps, loss: torch.Tensor, scores: SequenceScores, beta: float) -> LossOutput:
    """:func:`finish` for reference-based losses: rewards ``beta * rho``, logps the policy scores."""
    return finish(
        batch,
        loss,
        beta * scores.chosen_logratios,
        beta * scores.rejected_logratios,
        scores.chosen_logps,
        scores.rejected_logps,
    )
