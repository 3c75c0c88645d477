"""The loss zoo. ``get_loss(name, **hparams)`` returns ``loss_fn(PairLogps) -> LossOutput``.

Importing this package registers every built-in loss (``available_losses()`` lists them): the
DPO family (``dpo``, ``robust``, ``ipo``, ``sigmoid_norm``, ``hinge``, ``exo_pair``, ``discopop``,
``bco_pair``, ``sppo_hard``, ``apo_zero``, ``apo_down``, ``aot``, ``aot_unpaired``, ``nca``), the
length-aware ones (``ld_dpo``, ``r_dpo``, ``simpo``, ``treg``, ``treg_simpo``), reference-free
``cpo``, ``alphapo``, ``orpo``, ``sft``, ``mix`` (weighted sums) and ``wpo`` (WPO weighting of
any of them). See ``docs/losses.md``.

Nothing here imports torch: the loss modules bind it lazily (:mod:`prefopt.lazy`) and
:func:`get_loss` validates hyperparameters from their annotations (:mod:`prefopt.losses.hparams`),
so recipes validate in a fraction of a second; torch is imported when a loss first computes.
"""

from prefopt.losses import (  # noqa: F401  (register the losses)
    absolute,
    aot,
    cpo,
    dpo,
    ld_dpo,
    margin,
    mix,
    nca,
    orpo,
    r_dpo,
    sft,
    simpo,
    treg,
    wpo,
)
from prefopt.losses.base import LossFn, LossOutput, PairLogps, available_losses, get_loss, register_loss
from prefopt.losses.hparams import FlipProbability, HyperparameterError, NonNegative, Positive, UnitInterval

__all__ = [
    "FlipProbability", "HyperparameterError", "LossFn", "LossOutput", "NonNegative", "PairLogps", "Positive",
    "UnitInterval", "available_losses", "get_loss", "register_loss",
]  # fmt: skip
