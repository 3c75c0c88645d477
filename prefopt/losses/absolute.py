"""Losses that score each response on its own log-ratio: ``bco_pair``, ``sppo_hard``, ``apo_zero``, ``apo_down``.

Symbols as in :mod:`prefopt.losses.dpo`: ``rho = log pi_theta(y|x) - log pi_ref(y|x)`` on summed
log-probs, ``r = beta * rho`` the implicit reward. Where DPO only sees ``r_w - r_l``, these pin
each reward to an absolute target, so the chosen likelihood cannot fall while the margin grows
(``apo_down`` deliberately lowers it). The f-divergences do not apply (the ``beta log Z(x)``
term cancels only in a difference). Rewards are ``r``; ``logps/*`` are summed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefopt.lazy import lazy_import
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import finish_logratios, logratios
from prefopt.losses.hparams import Positive

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = lazy_import("torch")
    F = lazy_import("torch.nn.functional")


@register_loss("bco_pair", requires_reference=True)
def bco_pair(batch: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """Binary Classifier Optimization on pairs (Jung et al. 2024, arXiv 2404.04656, Sec. 3), TRL ``loss_type="bco_pair"``.

    ``L = -log sig(r_w - delta) - log sig(-(r_l - delta))``, with ``delta = 0``.

    The chosen and the rejected response are classified separately (reward above / below
    ``delta``). The paper's ``delta`` is a running mean of past rewards, i.e. state carried
    across steps; TRL >= 1.0 drops it (``delta = 0``) and so does prefopt: a registered loss is
    a pure function of its batch, and a reward shift kept outside the loss would make a step's
    loss depend on the step order (resume, gradient accumulation and evaluation would all see
    different losses). With ``delta = 0`` the classifier boundary is the reference model itself.
    """
    scores = logratios(batch, "sum")
    loss = F.softplus(-beta * scores.chosen_logratios) + F.softplus(beta * scores.rejected_logratios)
    return finish_logratios(batch, loss, scores, beta)


@register_loss("sppo_hard", requires_reference=True)
def sppo_hard(batch: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """SPPO with hard win probabilities (Wu et al. 2024, arXiv 2405.00675, Eq. 4.7), TRL ``loss_type="sppo_hard"``.

    ``L = (rho_w - 1 / (2 beta))^2 + (rho_l + 1 / (2 beta))^2``

    Eq. 4.7 regresses ``rho`` onto ``(P(y > pi) - 1/2) / beta``; with the winner's probability set
    to 1 and the loser's to 0 (TRL's "hard" version; the paper estimates soft ones with PairRM),
    the targets are ``+1/(2 beta)`` and ``-1/(2 beta)``. ``beta`` is the paper's ``1 / eta``.
    """
    scores = logratios(batch, "sum")
    loss = (scores.chosen_logratios - 0.5 / beta) ** 2 + (scores.rejected_logratios + 0.5 / beta) ** 2
    return finish_logratios(batch, loss, scores, beta)


@register_loss("apo_zero", requires_reference=True)
def apo_zero(batch: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """Anchored Preference Optimization, zero variant (D'Oosterlinck et al. 2024, arXiv 2408.06266, Eq. 7).

    ``L = (1 - sig(r_w)) + sig(r_l)``: raise the chosen and lower the rejected likelihood, each
    anchored at the reference (``r = 0``). For data whose chosen responses beat the policy's own.
    """
    scores = logratios(batch, "sum")
    loss = (1.0 - torch.sigmoid(beta * scores.chosen_logratios)) + torch.sigmoid(beta * scores.rejected_logratios)
    return finish_logratios(batch, loss, scores, beta)


@register_loss("apo_down", requires_reference=True)
def apo_down(batch: PairLogps, *, beta: Positive = 0.1) -> LossOutput:
    """Anchored Preference Optimization, down variant (arXiv 2408.06266, Eq. 8).

    ``L = sig(r_w) + (1 - sig(r_w - r_l))``: lower the chosen likelihood, and the rejected one
    more. For data whose chosen responses are worse than the policy's own outputs.
    """
    scores = logratios(batch, "sum")
    chosen, rejected = beta * scores.chosen_logratios, beta * scores.rejected_logratios
    loss = torch.sigmoid(chosen) + (1.0 - torch.sigmoid(chosen - rejected))
    return finish_logratios(batch, loss, scores, beta)
