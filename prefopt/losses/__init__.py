"""The loss zoo. ``get_loss(name, **hparams)`` returns ``loss_fn(PairLogps) -> LossOutput``."""

from prefopt.losses.base import LossFn, LossOutput, PairLogps, available_losses, get_loss, register_loss

__all__ = ["LossFn", "LossOutput", "PairLogps", "available_losses", "get_loss", "register_loss"]
