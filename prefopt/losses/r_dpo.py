"""R-DPO: length-regularized DPO (Park, Rafailov, Ermon, Finn 2024, arXiv 2403.19159)."""

from __future__ import annotations

from prefopt.losses.aggregate import lengths
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import finish_logratios, logratios, sigmoid_loss
from prefopt.losses.hparams import NonNegative, Positive


@register_loss("r_dpo", requires_reference=True)
def r_dpo(batch: PairLogps, *, beta: Positive = 0.1, alpha: NonNegative = 0.05) -> LossOutput:
    """Length-regularized DPO, arXiv 2403.19159 (also listed in Table 1 of SimPO, arXiv 2405.14734).

    ``L = -log sig(beta * h + alpha * (|y_w| - |y_l|))``

    ``h`` is the DPO log-ratio difference on sums, ``|y|`` the number of completion tokens and
    ``alpha >= 0`` the length-penalty strength (no paper default: the SimPO paper grids
    ``alpha`` over {0.05, 0.1, 0.5, 1.0}; 0.05 is the smallest).

    Sign: R-DPO solves ``max E[r(x, y) - alpha |y|] - beta KL``, so the reward implied by the
    policy is ``r = beta log(pi/pi_ref) + alpha |y| + const`` and the Bradley-Terry margin is
    ``beta h + alpha (|y_w| - |y_l|)``. A longer chosen response thus already "explains" part of
    the preference: its gradient weight ``sig(-(beta h + alpha dlen))`` shrinks, while a shorter
    chosen response is pushed harder. (Writing ``- alpha (|y_w| - |y_l|)`` instead would reward
    length.) Rewards are ``beta * rho`` without the length term.
    """
    scores = logratios(batch, "sum")
    length_gap = (lengths(batch.chosen_mask) - lengths(batch.rejected_mask)).to(batch.chosen.dtype)
    logits = beta * (scores.chosen_logratios - scores.rejected_logratios) + alpha * length_gap
    return finish_logratios(batch, sigmoid_loss(logits), scores, beta)
