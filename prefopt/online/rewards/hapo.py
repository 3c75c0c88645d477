"""HAPO: history-aware length reward (Huang, Zhang, Cardie; arXiv 2505.11225; HCY123902/HAPO; SPEC §8).

Per problem id, ``h`` is the shortest (``mode="min"``) or the mean (``mode="mean"``) length of the
correct responses generated so far (``state.history``). With ``f = cos(π/2 · L/h)`` for ``L < 2h``
and ``f = −1`` beyond::

    r = 1[correct] + w · (max(−0.7, f) if correct else min(0, f))      (0 while h is unknown)

The whole batch is scored with the *pre-update* history, then ``h`` is updated with the batch's
correct lengths, so the result does not depend on the order of groups. ``RewardState`` is
JSON-persisted with each round: a resumed run keeps its history.
"""

from __future__ import annotations

import math
from typing import Literal

from prefopt.online.rewards.base import GroupScores, RolloutGroup, register_reward
from prefopt.online.types import RewardState

CORRECT_FLOOR = -0.7


def hapo_length_term(
    length: int, correct: bool, history: float | None, kind: str = "cosine", tolerance: float = 0.1
) -> float:
    """HAPO's unweighted ``r_len`` for one response (``history=None``: no correct answer seen yet → 0)."""
    if history is None:
        return 0.0
    h = max(history, 1.0)
    if kind == "cosine":
        f = math.cos(length / h * math.pi / 2) if length < 2 * h else -1.0
        return max(CORRECT_FLOOR, f) if correct else min(0.0, f)
    if kind == "linear":
        if correct:
            if length < h:
                return 1.0 - length / h
            return (
                0.0
                if length < (1 + tolerance) * h
                else max(CORRECT_FLOOR, -(length - (1 + tolerance) * h) / h)
            )
        return 0.0 if length < (1 + tolerance) * h else max(-1.0, -(length - (1 + tolerance) * h) / h)
    raise ValueError(f"hapo: kind must be 'cosine' or 'linear', got {kind!r}")


def update_history(state: RewardState, groups: list[RolloutGroup], mode: str) -> None:
    """Fold each group's correct lengths into ``state.history`` (min or running mean)."""
    for group in groups:
        correct = [length for length, ok in zip(group.lengths, group.correct) if ok]
        if not correct:
            continue
        key, count = group.prompt_id, state.history_count.get(group.prompt_id, 0)
        if mode == "min":
            state.history[key] = float(min([*correct, state.history.get(key, math.inf)]))
        elif mode == "mean":
            state.history[key] = (state.history.get(key, 0.0) * count + sum(correct)) / (count + len(correct))
        else:
            raise ValueError(f"hapo: mode must be 'min' or 'mean', got {mode!r}")
        state.history_count[key] = count + len(correct)


@register_reward("hapo", batch=True, per_problem_history=True)
def hapo(
    groups: list[RolloutGroup],
    state: RewardState,
    *,
    weight: float = 1.0,
    mode: Literal["min", "mean"] = "min",
    kind: Literal["cosine", "linear"] = "cosine",
    update: bool = True,
) -> list[GroupScores]:
    """HAPO reward for the batch; then (``update=True``) the history update. Keep ``weight`` in [0, 1]
    so any correct answer outscores any wrong one; pass ``update=False`` for evaluation rollouts."""
    out = []
    for group in groups:
        history = state.history.get(group.prompt_id)
        term = [
            hapo_length_term(length, ok, history, kind) for length, ok in zip(group.lengths, group.correct)
        ]
        base = [float(c) for c in group.correct]
        out.append(
            {"reward": [b + weight * t for b, t in zip(base, term)], "correctness": base, "length": term}
        )
    if update:
        update_history(state, groups, mode)
    return out
