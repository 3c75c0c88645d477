"""NCA pairwise loss (Chen et al. 2024, arXiv 2402.05369), used by Light-R1 (arXiv 2503.10460)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefopt.lazy import lazy_import
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import finish_logratios, logratios
from prefopt.losses.hparams import Positive

if TYPE_CHECKING:
    import torch.nn.functional as F
else:
    F = lazy_import("torch.nn.functional")


@register_loss("nca", requires_reference=True)
def nca(batch: PairLogps, *, beta: Positive = 0.3) -> LossOutput:
    """Noise Contrastive Alignment, pairwise form (TRL ``loss_type="nca_pair"``).

    ``L = -log sig(r_w) - 1/2 log sig(-r_w) - 1/2 log sig(-r_l)``,
    ``r = beta * (log pi_theta(y|x) - log pi_ref(y|x))`` on summed log-probs.

    Unlike DPO, which only sees ``r_w - r_l``, NCA scores each response against an absolute
    scale, so the chosen likelihood cannot collapse while the margin grows. ``beta = 0.3`` is
    Light-R1's setting (``pref_beta`` with 360-LLaMA-Factory ``--pref_loss nca_pair``).
    """
    scores = logratios(batch, "sum")
    chosen_rewards = beta * scores.chosen_logratios
    rejected_rewards = beta * scores.rejected_logratios
    loss = F.softplus(-chosen_rewards) + 0.5 * F.softplus(chosen_rewards) + 0.5 * F.softplus(rejected_rewards)
    return finish_logratios(batch, loss, scores, beta)
