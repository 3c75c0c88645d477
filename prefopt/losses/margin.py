"""Other losses on the DPO margin ``h = rho_w - rho_l``: ``hinge`` (SLiC), ``exo_pair``, ``discopop``.

Symbols as in :mod:`prefopt.losses.dpo` (summed log-ratios ``rho``, ``sig`` the sigmoid). Each
takes ``f_divergence`` / ``f_alpha`` like DPO (TRL allows the f-divergences on all three).
Rewards are ``beta * rho`` (``beta * f'(exp(rho))`` under an f-divergence); ``logps/*`` are summed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

import annotated_types as at

from prefopt.lazy import lazy_import
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import finish_logratios, logratios
from prefopt.losses.divergence import Divergence
from prefopt.losses.hparams import Positive

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = lazy_import("torch")
    F = lazy_import("torch.nn.functional")

#: EXO's target smoothing: 0 would make the target degenerate (``log 0``).
ExoSmoothing = Annotated[
    float, at.Interval(gt=0, lt=0.5), at.doc("the target's smoothing eps; the paper uses 1e-3")
]


@register_loss("hinge", requires_reference=True)
def hinge(
    batch: PairLogps, *, beta: Positive = 0.1, f_divergence: Divergence = "reverse_kl", f_alpha: Positive = 0.5
) -> LossOutput:
    """SLiC-HF's calibration loss (Zhao et al. 2023, arXiv 2305.10425, Eq. 1), TRL ``loss_type="hinge"``.

    ``L = max(0, 1 - beta * h)``, i.e. SLiC's ``max(0, delta - log pi(y_w) + log pi(y_l))`` with
    margin ``delta = 1 / beta`` (scaled by ``beta``), on reference log-ratios as in TRL (the paper
    uses plain log-probs and a separate SFT regularizer; add ``sft`` with :func:`mix` for that).
    Pairs already separated by the margin get zero loss and zero gradient.
    """
    scores = logratios(batch, "sum", f_divergence, f_alpha)
    loss = torch.relu(1.0 - beta * (scores.chosen_logratios - scores.rejected_logratios))
    return finish_logratios(batch, loss, scores, beta)


@register_loss("exo_pair", requires_reference=True)
def exo_pair(
    batch: PairLogps,
    *,
    beta: Positive = 0.1,
    label_smoothing: ExoSmoothing = 1e-3,
    f_divergence: Divergence = "reverse_kl",
    f_alpha: Positive = 0.5,
) -> LossOutput:
    """EXO-pref (Ji et al. 2024, arXiv 2402.00856, Eq. 16), TRL ``loss_type="exo_pair"``.

    EXO minimizes the *reverse* KL ``KL(p_theta || p_data)`` between two distributions over the
    pair: ``p_theta = softmax(beta * [rho_w, rho_l])``, i.e. ``(sig(z), sig(-z))`` with
    ``z = beta h``, and the labels smoothed to ``p_data = (1 - eps, eps)``::

        L = sig(z) * (log sig(z) - log(1 - eps)) + sig(-z) * (log sig(-z) - log eps)

    ``eps = label_smoothing`` must be in ``(0, 0.5)``: at 0 the target is degenerate (``log 0``).
    The paper recommends ``1e-3`` (the default). Minimized (value 0) at ``sig(z) = 1 - eps``, so
    unlike DPO it stops pushing once the pair is classified with confidence ``1 - eps``.
    """
    scores = logratios(batch, "sum", f_divergence, f_alpha)
    z = beta * (scores.chosen_logratios - scores.rejected_logratios)
    log_q_w, log_q_l = F.logsigmoid(z), F.logsigmoid(-z)
    loss = log_q_w.exp() * (log_q_w - math.log1p(-label_smoothing)) + log_q_l.exp() * (
        log_q_l - math.log(label_smoothing)
    )
    return finish_logratios(batch, loss, scores, beta)


@register_loss("discopop", requires_reference=True)
def discopop(
    batch: PairLogps,
    *,
    beta: Positive = 0.1,
    discopop_tau: Positive = 0.05,
    f_divergence: Divergence = "reverse_kl",
    f_alpha: Positive = 0.5,
) -> LossOutput:
    """DiscoPOP / log-ratio modulated loss (Chris Lu et al. 2024, arXiv 2406.08414, Eq. 5), TRL ``loss_type="discopop"``.

    With ``z = beta h`` and the mixing weight ``m = sig(z / tau)``::

        L = (1 - m) * (-log sig(z)) + m * exp(-z)

    a blend, discovered by LLM-driven search, of the logistic (DPO) loss for pairs the policy
    gets wrong (``z < 0``, ``m -> 0``) and the exponential loss for pairs it already gets right.
    ``tau = discopop_tau > 0`` sets how sharply the blend switches; the paper recommends 0.05.
    """
    scores = logratios(batch, "sum", f_divergence, f_alpha)
    z = beta * (scores.chosen_logratios - scores.rejected_logratios)
    modulation = torch.sigmoid(z / discopop_tau)
    loss = (1.0 - modulation) * F.softplus(-z) + modulation * torch.exp(-z)
    return finish_logratios(batch, loss, scores, beta)
