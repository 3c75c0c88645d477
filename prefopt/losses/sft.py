"""``sft``: the NLL of the chosen response, as a loss or as a term of :func:`prefopt.losses.mix.mix`."""

from __future__ import annotations

from prefopt.losses.aggregate import aggregate
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import finish


@register_loss("sft", requires_reference=False)
def sft(batch: PairLogps) -> LossOutput:
    """Token-mean negative log-likelihood of the chosen completion, TRL ``loss_type="sft"``.

    ``L = -a(y_w)``, ``a(y) = (1/|y|) sum_t log pi_theta(y_t|x, y_<t)``.

    Alone it is supervised fine-tuning on the chosen responses; combined with DPO in ``mix`` it is
    RPO's NLL term (Pang et al. 2024, arXiv 2404.19733: ``L_DPO + alpha * L_NLL``; TRL's
    ``rpo_alpha``) and MPO's generation loss (arXiv 2411.10442). Deviation from TRL: TRL averages
    the NLL over all chosen tokens of the batch, here it is averaged per pair so the loss stays per
    example and weightable; the two agree when chosen lengths are equal. Rewards and ``logps/*``
    are the per-token means ``a(y_w)``, ``a(y_l)`` (there is no implicit reward).
    """
    chosen = aggregate(batch.chosen, batch.chosen_mask, "mean")
    rejected = aggregate(batch.rejected, batch.rejected_mask, "mean")
    return finish(batch, -chosen, chosen, rejected, chosen, rejected)
