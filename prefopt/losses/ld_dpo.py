"""LD-DPO: DPO on length-desensitized sequence log-probs (Liu et al. 2024, arXiv 2409.06411)."""

from __future__ import annotations

from prefopt.losses.aggregate import aggregate, ld_aggregate
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import SequenceScores, finish_logratios, sigmoid_loss
from prefopt.losses.hparams import Positive, UnitInterval


@register_loss("ld_dpo", requires_reference=True)
def ld_dpo(
    batch: PairLogps, *, beta: Positive = 0.1, ld_alpha: UnitInterval = 0.5, ld_on_reference: bool = True
) -> LossOutput:
    """Length-desensitized DPO, arXiv 2409.06411.

    With the public length ``l_p = min(|y_w|, |y_l|)`` of the pair, each response's score is::

        log pî(y|x) = sum_{t <= l_p} log pi(y_t|x, y_<t) + alpha * sum_{t > l_p} log pi(y_t|x, y_<t)

    i.e. ``pî = pi(y_{1:l_p}) * pi(y_{l_p+1:})^alpha``: only the longer response has a tail, and
    its excess verbosity is down-weighted. Then
    ``L = -log sig(beta * [(log pî_theta(y_w) - log pî_ref(y_w)) - (log pî_theta(y_l) - log pî_ref(y_l))])``.

    ``ld_alpha`` in ``[0, 1]`` (1 = DPO, 0 = drop the tail; the paper suggests 0.5), ``beta`` as
    in DPO. Positions are completion tokens (see :func:`prefopt.losses.aggregate.ld_aggregate`).

    ``ld_on_reference`` selects where the hat applies:

    * ``True`` (default): policy and reference, as TRL >= 0.29 (``DPOConfig(ld_alpha=...)``),
      matching the symmetric derivation;
    * ``False``: policy only, reference as plain sums, as LLaMA-Factory and TRL v0.18-0.28.
      (Those TRL versions also counted prompt positions in ``l_p``; that bug is not reproduced.)

    Rewards are ``beta`` times the LD log-ratios; ``logps/*`` are the LD policy scores (as TRL).
    """
    chosen, rejected = ld_aggregate(
        batch.chosen, batch.rejected, batch.chosen_mask, batch.rejected_mask, ld_alpha
    )
    if ld_on_reference:
        ref_chosen, ref_rejected = ld_aggregate(
            batch.ref_chosen, batch.ref_rejected, batch.chosen_mask, batch.rejected_mask, ld_alpha
        )
    else:
        ref_chosen = aggregate(batch.ref_chosen, batch.chosen_mask, "sum")
        ref_rejected = aggregate(batch.ref_rejected, batch.rejected_mask, "sum")
    scores = SequenceScores(chosen, rejected, chosen - ref_chosen, rejected - ref_rejected)
    loss = sigmoid_loss(beta * (scores.chosen_logratios - scores.rejected_logratios))
    return finish_logratios(batch, loss, scores, beta)
