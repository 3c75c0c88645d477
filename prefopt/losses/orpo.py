"""ORPO: odds-ratio preference optimization (Hong, Lee, Thorne 2024, arXiv 2403.07691), TRL ``ORPOTrainer``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from prefopt.lazy import lazy_import
from prefopt.losses.aggregate import aggregate
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import finish, scalar_metrics
from prefopt.losses.hparams import Positive

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = lazy_import("torch")
    F = lazy_import("torch.nn.functional")


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable at both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@register_loss("orpo", requires_reference=False)
def orpo(batch: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """ORPO, arXiv 2403.07691, Eq. 6-7 (``lambda = beta``, TRL's name).

    With ``a(y)`` the per-token mean log-prob, ``P(y) = exp(a(y))`` and ``odds(y) = P / (1 - P)``::

        log OR = (a(y_w) - a(y_l)) - (log(1 - e^{a(y_w)}) - log(1 - e^{a(y_l)}))
        L = -a(y_w) - beta * log sig(log OR)

    SFT on the chosen response plus a penalty pushing the chosen odds above the rejected odds,
    in one reference-free stage. ``beta = 0.1`` is the paper's and TRL's default. Deviation: TRL
    averages the NLL over all chosen tokens of the batch, here per pair (equal when chosen
    lengths are). Rewards ``beta * a(y)``; ``logps/*`` are ``a(y)``; extra metrics
    ``orpo/log_odds_ratio`` (mean ``log sig(log OR)``) and ``orpo/log_odds_chosen`` (mean ``log OR``), as TRL logs.
    """
    chosen = aggregate(batch.chosen, batch.chosen_mask, "mean")
    rejected = aggregate(batch.rejected, batch.rejected_mask, "mean")
    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
    ratio = F.logsigmoid(log_odds)
    out = finish(batch, -chosen - beta * ratio, beta * chosen, beta * rejected, chosen, rejected)
    out.metrics |= scalar_metrics({"orpo/log_odds_ratio": ratio, "orpo/log_odds_chosen": log_odds})
    return out
