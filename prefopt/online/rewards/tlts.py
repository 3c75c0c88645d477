""" "Train Long, Think Short": triangular budget reward with a shrinking budget (Hammoud et al.,
arXiv 2508.08940; SPEC §12).

``r = λ_c · 1[correct] + λ_ℓ · R_len(L; B(t)) + λ_f · format``, with the triangular
``R_len = L/B`` on ``[0, B]``, ``1 − (L − B)/B`` on ``(B, 2B]``, 0 beyond (``shape="band"``: 1 on
``[0, B]``). The budget B(t) follows a schedule over ``state.step`` (optimizer steps completed
before the round, the paper's unit) or ``state.round`` (``clock``); the rounds loop advances both
and checks at load that ``period`` / ``total`` fit the run. A truncated response gets no length
reward (the paper caps generation at 2B, where R_len = 0), so it never outranks a finished one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

from prefopt.online.rewards.base import GroupScores, RolloutGroup, register_reward
from prefopt.online.types import RewardState

Schedule = Literal["constant", "exponential", "stepwise", "linear"]


def triangular_length_reward(
    length: float, budget: float, shape: Literal["triangular", "band"] = "triangular"
) -> float:
    """``R_len(L; B)`` with ``R_max = 1``: rises to 1 at the budget (``band``: flat), falls to 0 at 2B."""
    if length <= budget:
        return 1.0 if shape == "band" else length / budget
    if length <= 2 * budget:
        return 1.0 - (length - budget) / budget
    return 0.0


def budget_at(
    t: int,
    schedule: Schedule = "exponential",
    *,
    initial: float = 256,
    final: float = 87,
    gamma: float = 0.7,
    period: int = 150,
    total: int = 600,
    decays: int = 3,
) -> float:
    """Token budget at time ``t`` (steps or rounds).

    - ``exponential``: ``max(1, ⌊B0 · γ^⌊t/period⌋⌋)`` (256, 179, 125, 87 with the defaults).
    - ``stepwise``: ``S_k = S0 · d^k`` with ``d = (S_f/S0)^(1/decays)``, ``k = min(decays, ⌊t/I⌋)``,
      ``I = total/(decays + 1)``; not floored (256, 178.65, 124.67, 87.0).
    - ``linear``: ``S_k = S0 − k (S0 − S_f)/decays`` on the same steps.
    - ``constant``: ``initial``.
    """
    if schedule == "constant":
        return float(initial)
    if schedule == "exponential":
        return float(max(1, math.floor(initial * gamma ** (t // period))))
    k = min(decays, int(t // (total / (decays + 1))))
    if schedule == "stepwise":
        return initial * (final / initial) ** (k / decays)
    if schedule == "linear":
        return initial - k * (initial - final) / decays
    raise ValueError(f"tlts: schedule must be constant|exponential|stepwise|linear, got {schedule!r}")


def tag_format_score(text: str, tags: Sequence[str] = ("think", "answer")) -> float:
    """Fraction of ``tags`` that appear exactly once as a well-formed ``<tag>…</tag>`` span."""
    ok = [len(re.findall(rf"<{t}>.*?</{t}>", text, flags=re.DOTALL)) == 1 for t in tags]
    return sum(ok) / len(tags)


@register_reward("tlts")
def tlts(
    group: RolloutGroup,
    state: RewardState,
    *,
    lambda_correct: float = 0.6,
    lambda_length: float = 0.3,
    lambda_format: float = 0.1,
    shape: Literal["triangular", "band"] = "triangular",
    clock: Literal["step", "round"] = "step",
    schedule: Schedule = "exponential",
    initial: float = 256,
    final: float = 87,
    gamma: float = 0.7,
    period: int = 150,
    total: int = 600,
    decays: int = 3,
) -> GroupScores:
    """TLTS reward; the format term needs ``format_scores`` (e.g. :func:`tag_format_score`) unless ``lambda_format=0``."""
    if lambda_format and group.format_scores is None:
        raise ValueError(
            f"tlts: group {group.prompt_id!r} has no format_scores; pass them (tag_format_score) or set lambda_format=0"
        )
    t = state.step if clock == "step" else state.round
    budget = budget_at(
        t, schedule, initial=initial, final=final, gamma=gamma, period=period, total=total, decays=decays
    )
    correct = [float(c) for c in group.correct]
    length = [
        0.0 if group.truncated(i) else triangular_length_reward(n, budget, shape) for i, n in enumerate(group.lengths)
    ]
    fmt = group.format_scores or [0.0] * len(group)
    reward = [
        lambda_correct * c + lambda_length * r + lambda_format * f for c, r, f in zip(correct, length, fmt)
    ]
    return {
        "reward": reward,
        "correctness": correct,
        "length": length,
        "format": list(fmt),
        "budget": [budget] * len(group),
    }
