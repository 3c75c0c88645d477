"""SimPO: reference-free preference loss on average log-probs (Meng, Xia, Chen 2024, arXiv 2405.14734)."""

from __future__ import annotations

from prefopt.losses.aggregate import aggregate
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import finish, sigmoid_loss
from prefopt.losses.hparams import FlipProbability, NonNegative, Positive


@register_loss("simpo", requires_reference=False)
def simpo(
    batch: PairLogps,
    *,
    beta: Positive = 2.0,
    gamma_beta_ratio: float = 0.5,
    sft_weight: NonNegative = 0.0,
    label_smoothing: FlipProbability = 0.0,
) -> LossOutput:
    """SimPO, arXiv 2405.14734 (``princeton-nlp/SimPO`` ``simpo_loss``).

    With ``a(y) = (1/|y|) sum_t log pi_theta(y_t|x, y_<t)`` (average over completion tokens)::

        z = beta * (a(y_w) - a(y_l) - gamma_beta_ratio)        # gamma = beta * gamma_beta_ratio
        L = (1 - eps) * (-log sig(z)) + eps * (-log sig(-z)) + sft_weight * (-a(y_w))

    ``beta`` scales the implicit reward ``r = beta * a(y)`` (about 100x DPO's beta because it
    is per token; the repository uses 2-10), ``gamma_beta_ratio`` is the target margin over
    ``beta`` (README: start at 0.5, search [0, 1]), ``eps = label_smoothing`` as in cDPO.

    ``sft_weight > 0`` adds the SFT term, the token-mean NLL of the chosen completion. Deviation:
    the SimPO repository (and TRL CPO's ``cpo_alpha``) average the NLL over all chosen tokens of
    the batch; here it is averaged per pair, so the loss stays per example and weightable. The
    two agree when chosen lengths are equal. No reference model is used.
    """
    chosen = aggregate(batch.chosen, batch.chosen_mask, "mean")
    rejected = aggregate(batch.rejected, batch.rejected_mask, "mean")
    loss = sigmoid_loss(beta * (chosen - rejected - gamma_beta_ratio), label_smoothing)
    if sft_weight:
        loss = loss - sft_weight * chosen
    return finish(batch, loss, beta * chosen, beta * rejected, chosen, rejected)
