"""GRPO-λ: batch-wise switch between accuracy and efficiency rewards (Dai, Liu, Si; arXiv 2505.18086; SPEC §11).

The top ``⌈λ·K⌉`` of the batch's K groups by correctness ratio are *efficiency* groups: a correct
rollout scores ``1 − α·σ((L − μ)/σ)`` (μ, σ: mean and population std of the group's *correct*
lengths, σ floored at ``std_floor``), a wrong one 0. All other groups get the plain 0/1 reward.

Choices where the paper is silent: ties in the ratio keep batch order (stable sort), and groups
with no correct rollout are never efficiency groups (the penalty needs correct lengths).
"""

from __future__ import annotations

import math

from prefopt.online.rewards.base import GroupScores, RolloutGroup, register_reward
from prefopt.online.types import RewardState


def efficiency_groups(accuracies: list[float], fraction: float) -> set[int]:
    """Indices of the top ``⌈fraction · K⌉`` groups by accuracy (stable; accuracy 0 excluded)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"grpo_lambda: fraction (λ) must be in [0, 1], got {fraction}")
    count = math.ceil(fraction * len(accuracies) - 1e-9)
    ranked = sorted(range(len(accuracies)), key=lambda k: -accuracies[k])
    return {k for k in ranked[:count] if accuracies[k] > 0}


def efficiency_rewards(
    lengths: list[int], correct: list[bool], alpha: float, std_floor: float = 1e-4
) -> list[float]:
    """``1 − α·σ(z)`` for correct rollouts (z standardised over the correct lengths), 0 for wrong ones."""
    kept = [length for length, ok in zip(lengths, correct) if ok]
    mean = sum(kept) / len(kept)
    std = max(math.sqrt(sum((x - mean) ** 2 for x in kept) / len(kept)), std_floor)
    return [
        1.0 - alpha / (1.0 + math.exp(-(length - mean) / std)) if ok else 0.0
        for length, ok in zip(lengths, correct)
    ]


@register_reward("grpo_lambda", batch=True)
def grpo_lambda(
    groups: list[RolloutGroup],
    state: RewardState,
    *,
    fraction: float = 0.2,
    alpha: float = 0.6,
    std_floor: float = 1e-4,
) -> list[GroupScores]:
    """GRPO-λ rewards; ``fraction`` is λ (default 20%), ``alpha`` the length-penalty strength (default 0.6)."""
    chosen = efficiency_groups([g.accuracy for g in groups], fraction)
    out = []
    for k, group in enumerate(groups):
        base = [float(c) for c in group.correct]
        reward = efficiency_rewards(group.lengths, group.correct, alpha, std_floor) if k in chosen else base
        out.append(
            {"reward": reward, "correctness": base, "efficiency_group": [float(k in chosen)] * len(group)}
        )
    return out
