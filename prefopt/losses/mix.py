"""``mix``: a weighted sum of registered losses (TRL's ``loss_type`` list with ``loss_weights``).

``L = sum_k w_k * L_k`` per pair, each ``L_k`` a registered loss with its own hyperparameters.
From a recipe::

    loss:
      name: mix
      terms:                       # MPO (Wang et al. 2024, arXiv 2411.10442, Eq. 1)
        - {name: dpo, weight: 0.8, beta: 0.1}
        - {name: bco_pair, weight: 0.2, beta: 0.1}
        - {name: sft, weight: 1.0}

Unlike TRL, where one ``beta`` is shared, each term names its own hyperparameters (defaults
otherwise). The mix needs a reference when any term does. Rewards and the standard metrics are
the *first* term's (so list the main preference loss first); each term's mean loss is logged as
``loss/<name>``, and the terms' own extra metrics are kept.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from prefopt.lazy import lazy_import
from prefopt.losses.base import LossFn, LossOutput, PairLogps, loss_from_spec, register_loss
from prefopt.losses.common import scalar_metrics

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def _bind_terms(terms: Any) -> list[tuple[str, float, LossFn]]:
    """Validate ``terms`` and bind each to its registered loss; errors name ``terms[i]``."""
    if not isinstance(terms, (list, tuple)) or not terms:
        raise ValueError("loss 'mix': terms must be a non-empty list of {name: <loss>, weight: <float>, ...}")
    bound, seen = [], set()
    for i, term in enumerate(terms):
        where = f"loss 'mix': terms[{i}]"
        spec = {k: v for k, v in term.items() if k != "weight"} if isinstance(term, dict) else term
        name, weight = (term.get("name"), term.get("weight", 1.0)) if isinstance(term, dict) else (None, None)
        if name == "mix":
            raise ValueError(f"{where} is itself a mix; list its terms directly")
        if name == "wpo":
            raise ValueError(f"{where} is wpo; weight the whole mix instead (wpo with base: mix)")
        if name in seen:
            raise ValueError(f"{where} repeats {name!r}; give each loss once (add the weights)")
        loss_fn = loss_from_spec(spec, "mix", f"terms[{i}]")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"{where}.weight must be a finite number > 0, got {weight!r}")
        seen.add(name)
        bound.append((name, float(weight), loss_fn))
    return bound


def _check(hparams: dict[str, Any]) -> None:
    _bind_terms(hparams["terms"])


def _needs_reference(hparams: dict[str, Any]) -> bool:
    # valid terms: get_loss ran _check first
    return any(loss_fn.requires_reference for _, _, loss_fn in _bind_terms(hparams["terms"]))


@register_loss("mix", requires_reference=_needs_reference, check=_check)
def mix(batch: PairLogps, *, terms: list[dict[str, Any]]) -> LossOutput:
    """Weighted sum of registered losses; the equation and the recipe form are in the module docstring.

    Each term applies ``PairLogps.weights`` itself, so the mix is weighted per pair too.
    """
    outputs = [(name, weight, loss_fn(batch)) for name, weight, loss_fn in _bind_terms(terms)]
    loss = torch.stack([weight * out.loss for _, weight, out in outputs]).sum(0)
    first = outputs[0][2]
    metrics: dict[str, float] = {}
    for _, _, out in reversed(outputs):  # every term's metrics; on shared names the first term's win
        metrics |= out.metrics
    metrics |= scalar_metrics({f"loss/{name}": out.loss for name, _, out in outputs})
    return LossOutput(loss, first.chosen_rewards, first.rejected_rewards, metrics)
