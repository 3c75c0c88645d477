"""``wpo``: Weighted Preference Optimization (Zhou et al. 2024, arXiv 2406.11827), TRL ``use_weighting``.

Off-policy pairs (written by another model) are reweighted by how likely the *current* policy is
to have produced them, which makes off-policy data behave more like on-policy data. Eq. 2 with
TRL's length normalization: for each response ``y``::

    w(y) = exp( (1/|y|) sum_t [ log pi(y_t | x, y_<t) - log sum_v pi(v | x, y_<t)^2 ] )

the per-token probability of ``y_t`` relative to the policy's own "sampling" probability
``sum_v pi(v)^2`` (the paper's alignment of the weight with greedy/sampled decoding), and the pair
weight is ``w(y_w) * w(y_l)``, detached. The base loss then runs with that weight multiplying
``PairLogps.weights`` (so it composes with data weights), i.e. ``L = w(y_w) w(y_l) L_base``.

Recipe form: ``loss: {name: wpo, base: {name: dpo, beta: 0.1}}``; the base may be any registered
loss, a ``mix`` included (TRL weights every term of a ``loss_type`` list the same way), except the
batch-sorting ``aot`` / ``aot_unpaired``, which reject weights as TRL does. Needs
``PairLogps.chosen_log_sum_sq`` / ``rejected_log_sum_sq``, which the trainer computes from the LM
head when the loss asks for them (:func:`prefopt.logps.pair_logps` with ``log_sum_sq=True``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from prefopt.lazy import lazy_import
from prefopt.losses.aggregate import aggregate
from prefopt.losses.base import LossFn, LossOutput, PairLogps, loss_from_spec, register_loss
from prefopt.losses.common import scalar_metrics

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def _bind_base(base: Any) -> LossFn:
    if isinstance(base, dict) and base.get("name") == "wpo":
        raise ValueError("loss 'wpo': base is itself wpo; give the loss to weight")
    return loss_from_spec(base, "wpo", "base")


def _check(hparams: dict[str, Any]) -> None:
    _bind_base(hparams["base"])


def _needs_reference(hparams: dict[str, Any]) -> bool:
    return _bind_base(hparams["base"]).requires_reference  # valid: get_loss ran _check first


def wpo_weights(batch: PairLogps) -> torch.Tensor:
    """Detached pair weights ``w(y_w) * w(y_l)`` ``[B]`` (equation in the module docstring)."""
    missing = [n for n in ("chosen_log_sum_sq", "rejected_log_sum_sq") if getattr(batch, n) is None]
    if missing:
        raise ValueError(
            f"loss 'wpo' needs PairLogps.{' and PairLogps.'.join(missing)}: build the batch with "
            "prefopt.logps.pair_logps(..., log_sum_sq=True) (PreferenceTrainer does this for wpo)"
        )
    chosen = aggregate(batch.chosen.detach() - batch.chosen_log_sum_sq, batch.chosen_mask, "mean")
    rejected = aggregate(batch.rejected.detach() - batch.rejected_log_sum_sq, batch.rejected_mask, "mean")
    return torch.exp(chosen + rejected)


@register_loss("wpo", requires_reference=_needs_reference, needs_log_sum_sq=True, check=_check)
def wpo(batch: PairLogps, *, base: dict[str, Any]) -> LossOutput:
    """WPO-weighted ``base`` loss, arXiv 2406.11827 Eq. 2 (module docstring); extra metric ``wpo/weight``."""
    loss_fn = _bind_base(base)
    weights = wpo_weights(batch).to(batch.chosen.dtype)
    if batch.weights is not None:
        weights = weights * batch.weights
    out = loss_fn(replace(batch, weights=weights))
    out.metrics |= scalar_metrics({"wpo/weight": weights})
    return out
