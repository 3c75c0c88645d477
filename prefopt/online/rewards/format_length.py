"""Format-length surrogate reward (Xin et al., "Surrogate Signals from Format and Length",
arXiv 2505.19439; official code insightLLM/rl-without-gt, ``math_reward.py``): a label-free reward
from the answer's form and the response length.

With the format score ``f ∈ {0, 1}`` (finished, answer in the required form: the rounds loop's
format check) and ``x = L / L_max`` (``L_max`` = ``max_length``, the generation limit)::

    R_len(x) = 1 − (1 − x/p)²               0 ≤ x ≤ p     (0 → 1, steep first, flat at the peak)
             = 1 − 2 · ((x − p)/(1 − p))²    x > p         (1 → −1 at x = 1, falling faster and faster)
    r = w_f · f + R_len(x)    if f = 1
      = min(0, R_len(x))      if f = 0

so a well-formed answer scores in ``[w_f − 1, w_f + 1]``, highest at ``L = p · L_max``, and a
malformed or truncated one at most 0 (−1 at the limit: a truncated rollout ranks last). The official
format term is ``0.5 · (tags + answer)`` with a ``<think>`` tag check and an extractable-answer
check; here the one format check covers both (configure ``verifier.format`` / ``format_pattern`` to
demand tags), and ``format_weight`` w_f = 1.0 is that term for a response passing both. Defaults
(official): ``peak`` p = 0.5, ``format_weight`` 1.0; ``max_length`` (official 3072) must equal the
recipe's generation limit. The verifier's verdict is not used: the paper trains without answers.
"""

from __future__ import annotations

from prefopt.online.rewards.base import GroupScores, RolloutGroup, register_reward
from prefopt.online.types import RewardState


def format_length_term(length: int, max_length: int, peak: float = 0.5) -> float:
    """``R_len(L / max_length)``: 0 at L = 0, 1 at ``peak · max_length``, −1 at ``max_length``."""
    x = length / max_length
    if x <= peak:
        return 1.0 - (1.0 - x / peak) ** 2
    return 1.0 - 2.0 * ((x - peak) / (1.0 - peak)) ** 2


@register_reward("format_length")
def format_length(
    group: RolloutGroup,
    state: RewardState,
    *,
    max_length: int = 4096,
    peak: float = 0.5,
    format_weight: float = 1.0,
) -> GroupScores:
    """``r = w_f + R_len`` for a well-formed response, ``min(0, R_len)`` otherwise (see the module docstring)."""
    if max_length <= 0 or not 0.0 < peak < 1.0:
        raise ValueError(f"format_length: needs max_length > 0 and 0 < peak < 1, got {max_length}, {peak}")
    fmt = [float(group.well_formed(i)) for i in range(len(group))]
    length = [format_length_term(n, max_length, peak) for n in group.lengths]
    reward = [format_weight + r if f else min(0.0, r) for f, r in zip(fmt, length)]
    return {"reward": reward, "format": fmt, "length": length, "correctness": [float(c) for c in group.correct]}
