"""DLER: truncation length penalty, its difficulty-aware variant and batch reward normalisation
(Liu et al., NVIDIA, arXiv 2510.15110; NVlabs/DLER; SPEC §9).

Reward: ``1[correct]``, set to 0 when ``L > max_length``; a response cut by the generation limit
(``finish_reason == "length"``) is multiplied by ``stop_penalty`` (0 = the paper's truncation
penalty; DAPO's "stop properly" coefficient is 0.1). DA-DLER tightens the limit for easy prompts:
group accuracy ≥ ``easy_ratio`` → ``easy_max_length`` (default 0.5 → 2000, else 4000), measured on
the current group's rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from prefopt.online.rewards.base import GroupScores, RolloutGroup, register_reward
from prefopt.online.types import RewardState


def _truncation_scores(group: RolloutGroup, max_length: int, stop_penalty: float) -> GroupScores:
    base = [float(c) for c in group.correct]
    reward = []
    for ok, length, finish in zip(base, group.lengths, group.finish_reasons):
        value = 0.0 if length > max_length else ok
        reward.append(value * stop_penalty if finish == "length" else value)
    return {"reward": reward, "correctness": base, "max_length": [float(max_length)] * len(group)}


@register_reward("dler")
def dler(
    group: RolloutGroup, state: RewardState, *, max_length: int = 4000, stop_penalty: float = 0.0
) -> GroupScores:
    """DLER truncation penalty: ``r = 1[correct] · 1[L ≤ max_length]``, times ``stop_penalty`` if truncated."""
    return _truncation_scores(group, max_length, stop_penalty)


@register_reward("da_dler")
def da_dler(
    group: RolloutGroup,
    state: RewardState,
    *,
    max_length: int = 4000,
    easy_ratio: float = 0.5,
    easy_max_length: int = 2000,
    stop_penalty: float = 0.0,
) -> GroupScores:
    """Difficulty-aware DLER: the limit is ``easy_max_length`` when the group's accuracy ≥ ``easy_ratio``."""
    limit = easy_max_length if group.accuracy >= easy_ratio else max_length
    return _truncation_scores(group, limit, stop_penalty)


def batch_normalize(
    rewards: Sequence[Sequence[float]],
    lengths: Sequence[Sequence[int]] | None = None,
    weighting: Literal["token", "sequence"] = "token",
    eps: float = 1e-8,
) -> list[list[float]]:
    """REINFORCE++-baseline advantages (DLER's batch-wise normalisation).

    ``a_i = R_i − mean_group(R)`` (``a_i = R_i`` in a group of one, as in verl-dler), then ``A_i = (a_i − m) / sqrt(v + eps)`` with the batch mean ``m``
    and unbiased variance ``v`` of ``a``. ``weighting="token"`` counts each response once per
    completion token (verl's ``masked_whiten`` on the broadcast tensor; needs ``lengths``);
    ``"sequence"`` counts each response once (paper Eq. 3).
    """
    # a one-rollout group has no baseline: its centred reward is R itself (verl's id2mean = 0)
    centered = [[r - (sum(group) / len(group) if len(group) > 1 else 0.0) for r in group] for group in rewards]
    if weighting == "token":
        if lengths is None:
            raise ValueError("batch_normalize(weighting='token') needs the completion lengths")
        weights = [[float(n) for n in group] for group in lengths]
    elif weighting == "sequence":
        weights = [[1.0] * len(group) for group in rewards]
    else:
        raise ValueError(f"batch_normalize: weighting must be 'token' or 'sequence', got {weighting!r}")
    flat = [(a, w) for ga, gw in zip(centered, weights) for a, w in zip(ga, gw)]
    total = sum(w for _, w in flat)
    if total <= 1:
        raise ValueError(
            f"batch_normalize: need more than one {weighting} in the batch to estimate a variance"
        )
    mean = sum(a * w for a, w in flat) / total
    var = sum(w * (a - mean) ** 2 for a, w in flat) / (total - 1)
    scale = 1.0 / math.sqrt(var + eps)
    return [[(a - mean) * scale for a in group] for group in centered]
