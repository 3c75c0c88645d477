"""Per-group rewards: plain correctness and Kimi k1.5's min–max length penalty."""

from __future__ import annotations

from prefopt.online.rewards.base import GroupScores, RolloutGroup, register_reward
from prefopt.online.types import RewardState


@register_reward("correctness")
def correctness(group: RolloutGroup, state: RewardState) -> GroupScores:
    """``r = 1[correct]``: the 0/1 verifier reward, no length term."""
    values = [float(c) for c in group.correct]
    return {"reward": values, "correctness": list(values)}


def kimi_length_term(lengths: list[int], correct: list[bool]) -> list[float]:
    """Kimi k1.5 (SPEC §15): ``λ_i = 0.5 − (L_i − L_min)/(L_max − L_min)``, ``min(0, λ_i)`` if wrong.

    ``L_min``/``L_max`` are over all rollouts of the group, correct or not; λ = 0 when they are equal
    (including a group of one).
    """
    low, high = min(lengths), max(lengths)
    if high == low:
        return [0.0] * len(lengths)
    lam = [0.5 - (length - low) / (high - low) for length in lengths]
    return [value if ok else min(0.0, value) for value, ok in zip(lam, correct)]


@register_reward("kimi")
def kimi(group: RolloutGroup, state: RewardState, *, weight: float = 0.4) -> GroupScores:
    """Kimi k1.5 length penalty: ``r = 1[correct] + w · len_reward`` (Kimi Team 2025; SPEC §15).

    ``weight`` (w) defaults to LASER's re-implementation value 0.4 (the report gives none). A
    response that is not well-formed (truncated, no answer, wrong format) never earns a positive
    length term: it gets ``min(0, λ)`` like every incorrect response in Kimi's formula. (LASER's
    code gives it no length term on its −1 base; on a 0/1 base that would rank a truncated wrong
    answer above a finished wrong one.)
    """
    correct_and_formed = [ok and group.well_formed(i) for i, ok in enumerate(group.correct)]
    term = kimi_length_term(group.lengths, correct_and_formed)
    base = [float(c) for c in group.correct]
    return {"reward": [b + weight * t for b, t in zip(base, term)], "correctness": base, "length": term}
