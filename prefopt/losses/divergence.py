"""f-divergence regularizers for the DPO family (Wang et al. 2023, "Beyond Reverse KL", arXiv 2309.16240).

DPO's closed form comes from a reverse-KL constraint; with a general f-divergence
``D_f(pi_theta || pi_ref)`` the implicit reward becomes ``beta * f'(u)`` with
``u = pi_theta(y|x) / pi_ref(y|x) = exp(rho)`` (Theorem 1 of the paper), so a loss compares
``f'(u_w) - f'(u_l)`` where DPO compares ``rho_w - rho_l``:

========================  ==============================  =====================================
``f_divergence``          ``f'(u)``                       on the log-ratio ``rho = log u``
========================  ==============================  =====================================
``reverse_kl`` (DPO)      ``log u + 1``                   ``rho``
``forward_kl``            ``1 - 1/u``                     ``1 - exp(-rho)``
``js_divergence``         ``log(2u / (1 + u))``           ``log 2 + log sig(rho)``
``alpha_divergence``      ``(u^(a-1) - 1) / (a - 1)``     ``(exp((a-1) rho) - 1) / (a - 1)``
========================  ==============================  =====================================

Constants cancel in the chosen-minus-rejected difference. ``a = f_alpha`` (TRL's
``f_alpha_divergence_coef``, default 0.5; ``a -> 1`` is reverse KL, used exactly within 1e-6).
The ``alpha_divergence`` exponent is clamped at 80 (11 in float16) before ``exp``, as TRL does, so
it stays finite. The reparameterization leaves a ``beta log Z(x)`` term that cancels only in the
chosen-minus-rejected difference, so only losses built on that difference accept ``f_divergence``
(TRL's list: sigmoid, sigmoid_norm, hinge, ipo, exo_pair, robust, discopop); the others reject
the key as an unknown hyperparameter.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Literal

from prefopt.lazy import lazy_import

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = lazy_import("torch")
    F = lazy_import("torch.nn.functional")

Divergence = Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"]


def _alpha_prime(rho: torch.Tensor, a: float) -> torch.Tensor:
    if abs(a - 1.0) < 1e-6:
        return rho
    clamp = 11.0 if rho.dtype == torch.float16 else 80.0
    return torch.expm1(((a - 1.0) * rho).clamp(max=clamp)) / (a - 1.0)


F_PRIMES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "reverse_kl": lambda rho, a: rho,
    "forward_kl": lambda rho, a: -torch.expm1(-rho),
    "js_divergence": lambda rho, a: math.log(2.0) + F.logsigmoid(rho),
    "alpha_divergence": _alpha_prime,
}


def f_prime(rho: torch.Tensor, f_divergence: str, f_alpha: float = 0.5) -> torch.Tensor:
    """``f'(exp(rho))`` for the named divergence (table in the module docstring), elementwise."""
    return F_PRIMES[f_divergence](rho, f_alpha)
