"""Alignment via Optimal Transport (Melnyk et al. 2024, arXiv 2406.05882): ``aot`` and ``aot_unpaired``.

AOT asks for *distributional* dominance: the distribution of chosen rewards should
first-order-stochastically dominate that of rejected rewards. In one dimension the optimal
transport plan between two empirical distributions is the sorted matching, so the loss is a
logistic loss on the *sorted* quantities of the batch (paper Sec. 3, with the logistic loss)::

    aot:          delta_(i) = sort_i(log pi(y_w) - log pi(y_l)) - sort_i(log pi_ref(y_w) - log pi_ref(y_l))
    aot_unpaired: delta_(i) = sort_i(rho_w) - sort_i(rho_l)
    L_(i) = (1 - eps) * (-log sig(beta delta_(i))) + eps * (-log sig(-beta delta_(i)))

``L_(i)`` belongs to the ``i``-th sorted position, not to pair ``i``: the loss couples the whole
batch, so per-pair weights (``PairLogps.weights``) cannot apply and are rejected, as TRL rejects
WPO weighting for these losses. The batch mean is the quantity optimized (the trainer uses
only that). Rewards are ``beta * rho`` per pair; ``logps/*`` summed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefopt.lazy import lazy_import
from prefopt.losses.aggregate import aggregate
from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import SequenceScores, finish_logratios, logratios, sigmoid_loss
from prefopt.losses.hparams import FlipProbability, Positive

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def _checked(name: str, batch: PairLogps) -> SequenceScores:
    if batch.weights is not None:
        raise ValueError(
            f"loss {name!r} sorts over the batch, so its per-position losses belong to no single pair and "
            "per-pair weights cannot apply; drop the weight column or use a pairwise loss"
        )
    return logratios(batch, "sum")


def _sorted(values: torch.Tensor) -> torch.Tensor:
    return torch.sort(values, dim=0).values


@register_loss("aot", requires_reference=True)
def aot(batch: PairLogps, *, beta: Positive = 0.1, label_smoothing: FlipProbability = 0.0) -> LossOutput:
    """AOT, paired form (TRL ``loss_type="aot"``): sorted policy margins against sorted reference margins.

    See the module docstring for the equation; ``label_smoothing`` as in cDPO.
    """
    scores = _checked("aot", batch)
    ref_margin = aggregate(batch.ref_chosen, batch.chosen_mask, "sum") - aggregate(
        batch.ref_rejected, batch.rejected_mask, "sum"
    )
    delta = _sorted(scores.chosen_logps - scores.rejected_logps) - _sorted(ref_margin)
    return finish_logratios(batch, sigmoid_loss(beta * delta, label_smoothing), scores, beta)


@register_loss("aot_unpaired", requires_reference=True)
def aot_unpaired(batch: PairLogps, *, beta: Positive = 0.1, label_smoothing: FlipProbability = 0.0) -> LossOutput:
    """AOT, unpaired form (TRL ``loss_type="aot_unpaired"``): sorted chosen against sorted rejected log-ratios.

    Needs no pairing between chosen and rejected responses. Equation in the module docstring.
    """
    scores = _checked("aot_unpaired", batch)
    delta = _sorted(scores.chosen_logratios) - _sorted(scores.rejected_logratios)
    return finish_logratios(batch, sigmoid_loss(beta * delta, label_smoothing), scores, beta)
