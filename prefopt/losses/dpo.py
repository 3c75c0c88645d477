"""DPO and its direct variants on summed (or averaged) log-ratios: ``dpo``, ``robust``, ``ipo``, ``sigmoid_norm``.

Symbols used below, per pair ``(x, y_w, y_l)``:

* ``log pi(y|x) = sum_t log pi(y_t | x, y_<t)`` over completion tokens (``PairLogps`` masks);
* ``rho_w = log pi_theta(y_w|x) - log pi_ref(y_w|x)``, ``rho_l`` likewise (log-ratios);
* ``h = rho_w - rho_l``; ``sig`` is the logistic sigmoid; ``|y|`` the completion length.

Implicit rewards are ``beta * rho_w`` and ``beta * rho_l`` (detached), as in TRL.

Every loss here takes ``f_divergence`` / ``f_alpha`` (TRL's ``f_divergence_type`` /
``f_alpha_divergence_coef``): ``rho`` is replaced by ``f'(exp(rho))`` in the loss and the rewards
(:mod:`prefopt.losses.divergence`); the default ``reverse_kl`` is plain DPO.
"""

from __future__ import annotations

from prefopt.losses.base import LossOutput, PairLogps, register_loss
from prefopt.losses.common import finish_logratios, logratios, sigmoid_loss
from prefopt.losses.divergence import Divergence
from prefopt.losses.hparams import FlipProbability, Positive


@register_loss("dpo", requires_reference=True)
def dpo(
    batch: PairLogps,
    *,
    beta: Positive = 0.1,
    label_smoothing: FlipProbability = 0.0,
    f_divergence: Divergence = "reverse_kl",
    f_alpha: Positive = 0.5,
) -> LossOutput:
    """DPO (Rafailov et al. 2023, arXiv 2305.18290) with cDPO label smoothing.

    ``L = (1 - eps) * (-log sig(beta h)) + eps * (-log sig(-beta h))``

    ``beta`` is the KL strength; ``eps = label_smoothing`` in ``[0, 0.5)`` is the assumed
    probability that a preference label is flipped (cDPO, Mitchell 2023). ``eps = 0`` is plain
    DPO, ``-log sig(beta h)``, whose gradient is ``dL/dh = -beta * sig(-beta h)``.

    Deviation from TRL >= 0.29: there ``loss_type="sigmoid"`` silently ignores
    ``label_smoothing``; here it is applied (TRL <= 0.28 and the original DPO repository did the
    same). With ``label_smoothing=0`` the two are identical.
    """
    scores = logratios(batch, "sum", f_divergence, f_alpha)
    h = scores.chosen_logratios - scores.rejected_logratios
    loss = sigmoid_loss(beta * h, label_smoothing)
    return finish_logratios(batch, loss, scores, beta)


@register_loss("robust", requires_reference=True)
def robust_dpo(
    batch: PairLogps,
    *,
    beta: Positive = 0.1,
    label_smoothing: FlipProbability = 0.1,
    f_divergence: Divergence = "reverse_kl",
    f_alpha: Positive = 0.5,
) -> LossOutput:
    """Provably robust DPO (Chowdhury et al. 2024, arXiv 2403.00409), TRL ``loss_type="robust"``.

    ``L = [(1 - eps) * (-log sig(beta h)) - eps * (-log sig(-beta h))] / (1 - 2 eps)``

    An unbiased estimate of the clean DPO loss when each label is flipped with probability
    ``eps = label_smoothing`` in ``[0, 0.5)``. The paper sets no single default; 0.1 is a
    moderate noise level (``eps = 0`` reduces to ``dpo``). Unlike cDPO the loss can be negative.
    """
    scores = logratios(batch, "sum", f_divergence, f_alpha)
    h = scores.chosen_logratios - scores.rejected_logratios
    eps = label_smoothing
    loss = ((1.0 - eps) * sigmoid_loss(beta * h) - eps * sigmoid_loss(-beta * h)) / (1.0 - 2.0 * eps)
    return finish_logratios(batch, loss, scores, beta)


@register_loss("ipo", requires_reference=True)
def ipo(
    batch: PairLogps,
    *,
    beta: Positive = 0.1,
    normalize: bool = True,
    f_divergence: Divergence = "reverse_kl",
    f_alpha: Positive = 0.5,
) -> LossOutput:
    """IPO (Azar et al. 2023, arXiv 2310.12036), Eq. 17 with ``tau = beta``.

    ``L = (delta - 1 / (2 beta))^2``

    * ``normalize=True`` (default, as TRL): ``delta = rho_w / |y_w| - rho_l / |y_l|``, the
      per-token-averaged log-ratios; TRL reports the IPO authors confirmed this form, and it
      makes ``beta`` transferable across response lengths.
    * ``normalize=False``: ``delta = h`` on summed log-ratios, as in the original DPO
      repository's IPO; the squared loss then grows with length.

    Rewards and ``logps/*`` are ``beta`` times the log-ratios and the policy scores the loss
    compares, i.e. per-token means when ``normalize=True`` (TRL logs summed ones).
    """
    scores = logratios(batch, "mean" if normalize else "sum", f_divergence, f_alpha)
    delta = scores.chosen_logratios - scores.rejected_logratios
    loss = (delta - 1.0 / (2.0 * beta)) ** 2
    return finish_logratios(batch, loss, scores, beta)


@register_loss("sigmoid_norm", requires_reference=True)
def sigmoid_norm(
    batch: PairLogps, *, beta: Positive = 0.1, f_divergence: Divergence = "reverse_kl", f_alpha: Positive = 0.5
) -> LossOutput:
    """Length-normalized DPO, TRL ``loss_type="sigmoid_norm"`` (DPO, arXiv 2305.18290, on per-token log-ratios).

    ``L = -log sig(beta * (rho_w / |y_w| - rho_l / |y_l|))``

    The DPO loss on the per-token-averaged log-ratios (as IPO's ``normalize=True`` form), so a
    long response cannot win on summed log-ratio mass alone; ``beta`` therefore acts per token
    and wants larger values than DPO's. Rewards and ``logps/*`` are the per-token quantities the
    loss compares (TRL logs summed ones).
    """
    scores = logratios(batch, "mean", f_divergence, f_alpha)
    loss = sigmoid_loss(beta * (scores.chosen_logratios - scores.rejected_logratios))
    return finish_logratios(batch, loss, scores, beta)
