"""The loss contract: :class:`PairLogps` in, :class:`LossOutput` out, losses registered by name.

All tensors in :class:`PairLogps` are *completion-aligned*: ``chosen[b, t]`` is
``log pi(y_t | x, y_<t)`` for the ``t``-th completion token of pair ``b`` (left-justified),
``chosen_mask[b, t]`` is ``True`` on real completion tokens and ``False`` on padding. Chosen and
rejected may have different widths ``T``. Padding values are arbitrary; losses must use the masks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from prefopt.losses.hparams import HyperparameterError, check_hparams

if TYPE_CHECKING:
    import torch


@dataclass
class PairLogps:
    """Per-token log-probs of a batch of preference pairs (see module docstring for alignment)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_mask: torch.Tensor
    rejected_mask: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    chosen_token_rewards: torch.Tensor | None = None
    rejected_token_rewards: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    chosen_log_sum_sq: torch.Tensor | None = None
    rejected_log_sum_sq: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name, logps, mask in (
            ("chosen", self.chosen, self.chosen_mask),
            ("rejected", self.rejected, self.rejected_mask),
            ("ref_chosen", self.ref_chosen, self.chosen_mask),
            ("ref_rejected", self.ref_rejected, self.rejected_mask),
            ("chosen_token_rewards", self.chosen_token_rewards, self.chosen_mask),
            ("rejected_token_rewards", self.rejected_token_rewards, self.rejected_mask),
            ("chosen_log_sum_sq", self.chosen_log_sum_sq, self.chosen_mask),
            ("rejected_log_sum_sq", self.rejected_log_sum_sq, self.rejected_mask),
        ):
            if logps is not None and logps.shape != mask.shape:
                raise ValueError(f"PairLogps.{name} has shape {tuple(logps.shape)}, its mask {tuple(mask.shape)}")
        if self.chosen.shape[0] != self.rejected.shape[0]:
            raise ValueError(
                f"PairLogps: {self.chosen.shape[0]} chosen rows but {self.rejected.shape[0]} rejected rows"
            )
        if self.weights is not None and self.weights.shape != (self.chosen.shape[0],):
            raise ValueError(f"PairLogps.weights must have shape [B]={self.chosen.shape[0]}, got {tuple(self.weights.shape)}")

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen is not None and self.ref_rejected is not None


@dataclass
class LossOutput:
    """``loss`` is per example ``[B]`` with weights applied; rewards are detached ``[B]``."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class LossFn(Protocol):
    requires_reference: bool

    def __call__(self, batch: PairLogps) -> LossOutput: ...


@dataclass(frozen=True)
class _RegisteredLoss:
    fn: Callable[..., LossOutput]
    requires_reference: bool | Callable[[dict], bool]
    needs_log_sum_sq: bool = False
    check: Callable[[dict[str, Any]], None] | None = None


_REGISTRY: dict[str, _RegisteredLoss] = {}


def register_loss(
    name: str,
    *,
    requires_reference: bool | Callable[[dict], bool],
    needs_log_sum_sq: bool = False,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., LossOutput]], Callable[..., LossOutput]]:
    """Register ``fn(batch: PairLogps, *, hp=default, ...) -> LossOutput`` under ``name``.

    Hyperparameters are ``fn``'s keyword-only parameters; their annotations declare the values
    they accept (``beta: Positive = 0.1``; :mod:`prefopt.losses.hparams`), checked by
    :func:`get_loss` before any tensor exists. ``check`` is an optional torch-free callable given
    the hyperparameters (defaults filled in) that raises ``ValueError`` for what annotations
    cannot say: cross-parameter rules, nested loss specs (``mix`` terms, ``wpo``'s base).
    ``requires_reference`` is a flag, or a function of the bound hyperparameters for losses whose
    need depends on them (``mix``: whether any of its terms needs one). ``needs_log_sum_sq`` asks
    the trainer for ``PairLogps.chosen_log_sum_sq`` / ``rejected_log_sum_sq`` (``wpo``).

    >>> @register_loss("my_loss", requires_reference=False)
    ... def my_loss(batch, *, beta: Positive = 0.1): ...
    """

    def decorator(fn: Callable[..., LossOutput]) -> Callable[..., LossOutput]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"a loss named {name!r} is already registered ({_REGISTRY[name].fn.__module__})")
        _REGISTRY[name] = _RegisteredLoss(fn, requires_reference, needs_log_sum_sq, check)
        return fn

    return decorator


def available_losses(*, requires_reference: bool | None = None) -> list[str]:
    """Registered loss names, sorted; with ``requires_reference``, only those whose flag is that constant.

    Losses whose need depends on their hyperparameters (``mix``, ``wpo``) are in neither filtered list.
    """
    if requires_reference is None:
        return sorted(_REGISTRY)
    return sorted(n for n, e in _REGISTRY.items() if e.requires_reference is requires_reference)


class _BoundLoss:
    """A registered loss with its hyperparameters bound; what :func:`get_loss` returns."""

    def __init__(self, name: str, entry: _RegisteredLoss, hparams: dict) -> None:
        self.name = name
        self.hparams = hparams
        needs = entry.requires_reference
        self.requires_reference = needs(hparams) if callable(needs) else needs
        self.needs_log_sum_sq = entry.needs_log_sum_sq
        self._fn = entry.fn

    def __call__(self, batch: PairLogps) -> LossOutput:
        if self.requires_reference and not batch.has_reference:
            raise ValueError(f"loss {self.name!r} needs reference log-probs (ref_chosen/ref_rejected) but got None")
        return self._fn(batch, **self.hparams)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"get_loss({self.name!r}{', ' if args else ''}{args})"


def get_loss(name: str, **hparams: Any) -> LossFn:
    """Return the registered loss ``name`` with ``hparams`` bound, validated without computing anything.

    Unknown or missing hyperparameter names raise ``TypeError``; a value its annotation rejects
    raises :class:`~prefopt.losses.hparams.HyperparameterError` (a ``ValueError``), and the loss's
    ``check`` its own ``ValueError``. Nothing here imports torch.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown loss {name!r}; registered losses: {', '.join(available_losses())}")
    entry = _REGISTRY[name]
    params = inspect.signature(entry.fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [p for p in list(params)[1:] if params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(hparams) - set(valid))
    if unknown and not accepts_any:
        hint = ""
        if "f_divergence" in unknown:
            takers = [n for n, e in sorted(_REGISTRY.items()) if "f_divergence" in inspect.signature(e.fn).parameters]
            hint = f" (f-divergences apply only to losses on the chosen-minus-rejected margin: {', '.join(takers)})"
        raise TypeError(f"loss {name!r} got unknown hyperparameter(s) {unknown}; valid: {valid}{hint}")
    missing = [p for p in valid if params[p].default is inspect.Parameter.empty and p not in hparams]
    if missing:
        raise TypeError(f"loss {name!r} needs hyperparameter(s) {missing}")
    check_hparams(name, entry.fn, hparams)
    if entry.check is not None:
        defaults = {p: params[p].default for p in valid if params[p].default is not inspect.Parameter.empty}
        entry.check({**defaults, **hparams})
    return _BoundLoss(name, entry, hparams)


def loss_from_spec(spec: object, owner: str, key: str) -> LossFn:
    """Bind a nested loss spec ``{name: <loss>, <its hyperparameters>}``: loss ``owner``'s hyperparameter ``key``.

    (a ``mix`` term, ``key="terms[1]"``; ``wpo``'s ``base``). Problems raise ``ValueError`` that
    name the owner and the key (``loss 'mix': terms[1]: unknown loss 'nope'``; a bad value as
    ``loss 'mix': terms[1].beta must be > 0``), so recipe validation reports them as one line.
    """
    where = f"loss {owner!r}: {key}"
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{where} must be a mapping {{name: <loss>, <its hyperparameters>}}, got {spec!r}")
    hparams = dict(spec)
    name = hparams.pop("name")
    try:
        return get_loss(name, **hparams)
    except HyperparameterError as err:
        raise err.nested(owner, key) from None
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: {str(err).strip(chr(34))}") from None
