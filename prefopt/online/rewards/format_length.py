"""Format-length surrogate reward (Xin et al., "Surrogate Signals from Format and Length",
arXiv 2505.19439): a label-free reward from the answer's format and the response length.

With the format score ``f ∈ {0, 1}`` (finished, answer in the required form; the rounds loop's
format check) and ``x = L / L_max`` (``L_max`` = ``max_length``, the generation limit)::

    R_len(x) = 1 − (1 − x/p)²              0 ≤ x ≤ p
             = 1 − ((x − p)/(1 − p))²       p < x ≤ 1         (0 at x = 1; clipped to 0 beyond)
    r = f · (1 + λ · R_len(x))

so a well-formed answer scores in ``[1, 1 + λ]``, peaking at ``L = p · L_max``, and a malformed or
truncated one scores 0. ``use_correctness=True`` multiplies by ``1[correct]`` (the paper's
ground-truth comparison; by default the reward ignores the verifier, as in the paper).
Defaults: ``peak`` p = 0.5, ``weight`` λ = 1.0, ``max_length`` 4096.

The piecewise-quadratic length term is this package's reading of the paper's description (the
length reward rises while the response is short, is highest at a ratio p of the limit and falls
towards the limit); its official code was not available here.
"""

from __future__ import annotations

from prefopt.online.rewards.base import GroupScores, RolloutGroup, register_reward
from prefopt.online.types import RewardState


def format_length_term(length: int, max_length: int, peak: float = 0.5) -> float:
    """``R_len(L / max_length)``: 0 at L = 0, 1 at ``peak · max_length``, 0 at ``max_length`` and beyond."""
    x = length / max_length
    if x <= peak:
        return 1.0 - (1.0 - x / peak) ** 2
    return max(0.0, 1.0 - ((x - peak) / (1.0 - peak)) ** 2)


@register_reward("format_length")
def format_length(
    group: RolloutGroup,
    state: RewardState,
    *,
    max_length: int = 4096,
    peak: float = 0.5,
    weight: float = 1.0,
    use_correctness: bool = False,
) -> GroupScores:
    """``r = f · (1 + λ · R_len(L / max_length))`` (times ``1[correct]`` with ``use_correctness``)."""
    if max_length <= 0 or not 0.0 < peak < 1.0:
        raise ValueError(f"format_length: needs max_length > 0 and 0 < peak < 1, got {max_length}, {peak}")
    fmt = [float(group.well_formed(i)) for i in range(len(group))]
    length = [format_length_term(n, max_length, peak) for n in group.lengths]
    gate = [float(c) for c in group.correct] if use_correctness else [1.0] * len(group)
    reward = [g * f * (1.0 + weight * r) for g, f, r in zip(gate, fmt, length)]
    return {"reward": reward, "format": fmt, "length": length, "correctness": [float(c) for c in group.correct]}
