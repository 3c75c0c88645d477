"""The loss zoo. ``get_loss(name, **hparams)`` returns ``loss_fn(PairLogps) -> LossOutput``.

Importing this package registers every built-in loss: ``dpo``, ``robust``, ``ipo``, ``ld_dpo``,
``r_dpo``, ``nca``, ``simpo``, ``treg``, ``treg_simpo``. See ``docs/losses.md``.
"""

from prefopt.losses import dpo, ld_dpo, nca, r_dpo, simpo, treg  # noqa: F401  (register the losses)
from prefopt.losses.base import LossFn, LossOutput, PairLogps, available_losses, get_loss, register_loss

__all__ = ["LossFn", "LossOutput", "PairLogps", "available_losses", "get_loss", "register_loss"]
