"""LASER, LASER-D and LASER-DE length rewards (Liu et al., arXiv 2505.15612; hkust-nlp/Laser; SPEC §7).

``R = C(y) + α · 1[correct] · 1[L ≤ L_target]``; LASER uses a fixed ``L_T``; LASER-D picks the
target per difficulty bucket from monitor coverage; LASER-DE also pays α to wrong-but-well-formed
responses longer than the target that do not loop (exploration on hard prompts).

Base score ``C``: ``base="binary"`` (default) is 1/0; ``base="laser"`` is the official
+1 (correct) / −0.5 (wrong, well-formed) / −1 (no final answer or delimiters, e.g. truncated).
Porting note: with the 0/1 base the gap correct–wrong is 1 instead of 1.5–2, so α = 0.5 weighs
relatively more in the group-normalised advantage; halve α for a comparable trade-off.

Difficulty buckets (one rule for training batches *and* the monitor; the official code differs by
one at the boundaries): ``high`` if accuracy ≥ 2/3, ``medium`` if ≥ 1/3, else ``low``.

The monitor (LASER-D/DE): the official trainer re-samples a fixed monitor set every
``monitor_freq`` = 20 steps and sets each bucket's target from its length coverage. In prefopt's
rounds the interval is **one round** and the monitor set is the round's own rollouts: each round is
scored with the coverage of the previous round (``state.coverage``), then the coverage is
recomputed from this round's rollouts for the next one and persisted in ``reward_state.json``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prefopt.online.rewards.base import GroupScores, RolloutGroup, register_reward
from prefopt.online.types import RewardState

Base = Literal["binary", "laser"]
Rounding = Literal["floor", "ceil"]
BUCKETS = ("high", "medium", "low")


def base_scores(group: RolloutGroup, base: Base) -> list[float]:
    """The correctness term C: 1/0, or LASER's +1 / −0.5 (well-formed) / −1 (malformed)."""
    if base == "binary":
        return [float(c) for c in group.correct]
    if base == "laser":
        return [1.0 if c else (-0.5 if group.well_formed(i) else -1.0) for i, c in enumerate(group.correct)]
    raise ValueError(f"laser reward: base must be 'binary' or 'laser', got {base!r}")


def difficulty_bucket(accuracy: float) -> str:
    """``"high"`` if accuracy ≥ 2/3, ``"medium"`` if ≥ 1/3, else ``"low"`` (accuracy = easiness)."""
    if accuracy >= 2 / 3:
        return "high"
    return "medium" if accuracy >= 1 / 3 else "low"


def bucket_capacity(bucket: str, n: int, rounding: Rounding = "floor") -> int:
    """C_d, the least number of correct rollouts of n in the bucket: 2n/3 (high), n/3 (medium), 1 (low),
    rounded down (``floor``, ⌊2n/3⌋) or up (``ceil``, ⌈2n/3⌉) as in LASER's ``round_method``."""
    share = {"high": 2 * n, "medium": n, "low": 3}[bucket]  # thirds of n (low: exactly one)
    return share // 3 if rounding == "floor" else -(-share // 3)


def length_thresholds(lower: int, upper: int, interval: int) -> list[int]:
    """Candidate targets ``lower, lower + interval, ..., upper``."""
    return list(range(lower, upper + 1, interval))


def choose_target_length(
    coverage: dict[int, float],
    capacity: int,
    fallback: int,
    expected_correct: int = 1,
    rounding: Rounding = "floor",
) -> int:
    """LASER-D's ``_choose_target_length``: the smallest threshold ℓ whose expected correct count reaches ``expected_correct``.

    The count is ``⌊P_ℓ · C_d⌋`` (``rounding="floor"``) or ``P_ℓ · C_d`` unrounded (``"ceil"``, whose
    capacity ``C_d`` is rounded up instead; see :func:`bucket_capacity`), as in LASER's two
    ``round_method`` branches. ``coverage[ℓ]`` is the fraction of the bucket's monitor rollouts with
    length ≤ ℓ; ``fallback`` (the batch's maximum length) is returned when no threshold qualifies.
    """
    if rounding not in ("floor", "ceil"):
        raise ValueError(f"laser_d: rounding must be 'floor' or 'ceil', got {rounding!r}")
    for threshold in sorted(coverage):
        count = coverage[threshold] * capacity
        if (math.floor(count + 1e-9) if rounding == "floor" else count + 1e-9) >= expected_correct:
            return threshold
    return fallback


def monitor_coverage(
    groups: Sequence[RolloutGroup], thresholds: Sequence[int]
) -> dict[str, dict[int, float]]:
    """Per bucket, the fraction of all its rollouts with length ≤ ℓ for each threshold ℓ (LASER-D monitor)."""
    lengths: dict[str, list[int]] = {}
    for group in groups:
        lengths.setdefault(difficulty_bucket(group.accuracy), []).extend(group.lengths)
    return {
        bucket: {t: sum(length <= t for length in values) / len(values) for t in thresholds}
        for bucket, values in lengths.items()
    }


def update_monitor(state: RewardState, groups: Sequence[RolloutGroup], thresholds: Sequence[int]) -> None:
    """Record monitor statistics (rollouts per prompt n, coverage per bucket) from scored monitor groups."""
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise ValueError(
            f"update_monitor: every monitor prompt needs the same number of rollouts, got sizes {sorted(sizes)}"
        )
    state.monitor_samples = sizes.pop()
    state.coverage = monitor_coverage(groups, thresholds)


def is_repetitive(ids: Sequence[int], ngram: int = 20, min_repeats: int = 3) -> bool:
    """True when some token n-gram occurs at least ``min_repeats`` times (a generation loop).

    A simpler stand-in for LASER's ``detect_token_ngram_repetition_optimized_reversed``: long
    n-grams (20 tokens) recurring three times almost only occur in degenerate loops.
    """
    if len(ids) < ngram * min_repeats:
        return False
    counts = Counter(tuple(ids[i : i + ngram]) for i in range(len(ids) - ngram + 1))
    return max(counts.values()) >= min_repeats


@register_reward("laser")
def laser(
    group: RolloutGroup,
    state: RewardState,
    *,
    target_length: int = 4096,
    alpha: float = 0.5,
    base: Base = "binary",
) -> GroupScores:
    """LASER: ``r = C + α · 1[correct and L ≤ L_T]`` (defaults α = 0.5, L_T = 4096)."""
    scores = base_scores(group, base)
    bonus = [
        alpha if ok and length <= target_length else 0.0 for ok, length in zip(group.correct, group.lengths)
    ]
    return {"reward": [s + b for s, b in zip(scores, bonus)], "correctness": scores, "length": bonus}


def _targets(
    groups: Sequence[RolloutGroup], state: RewardState, expected_correct: int, rounding: Rounding
) -> dict[str, int]:
    batch_max = max(max(g.lengths) for g in groups)
    return {
        bucket: choose_target_length(
            state.coverage.get(bucket, {}),
            bucket_capacity(bucket, state.monitor_samples, rounding),
            batch_max,
            expected_correct,
            rounding,
        )
        for bucket in BUCKETS
    }


@dataclass(frozen=True)
class _Monitor:
    """LASER-D's knobs: the target rule and the monitor's length thresholds."""

    expected_correct: int
    rounding: Rounding
    thresholds: list[int]
    update: bool


def _laser_d_scores(
    groups: list[RolloutGroup],
    state: RewardState,
    alpha: float,
    base: Base,
    monitor: _Monitor,
    explore: bool,
    ngram: int,
    min_repeats: int,
) -> list[GroupScores]:
    targets = _targets(groups, state, monitor.expected_correct, monitor.rounding)
    out = []
    for group in groups:
        if explore and group.completion_ids is None:
            raise ValueError(
                f"laser_de needs completion_ids for the repetition check (group {group.prompt_id!r})"
            )
        target = targets[difficulty_bucket(group.accuracy)]
        scores = base_scores(group, base)
        bonus, exploration = [], []
        for i, (ok, length) in enumerate(zip(group.correct, group.lengths)):
            bonus.append(alpha if ok and length <= target else 0.0)
            explores = (
                explore
                and not ok
                and group.well_formed(i)
                and length > target
                and not is_repetitive(group.completion_ids[i], ngram, min_repeats)  # type: ignore[index]
            )
            exploration.append(alpha if explores else 0.0)
        total = [s + b + e for s, b, e in zip(scores, bonus, exploration)]
        out.append(
            {
                "reward": total,
                "correctness": scores,
                "length": bonus,
                "exploration": exploration,
                "target_length": [float(target)] * len(group),
            }
        )
    if monitor.update:
        update_monitor(state, groups, monitor.thresholds)
    return out


def _monitor(
    expected_correct: int, rounding: Rounding, lower: int, upper: int, interval: int, update: bool
) -> _Monitor:
    if not 0 < lower <= upper or interval <= 0:
        raise ValueError(
            f"laser_d: thresholds need 0 < threshold_lower <= threshold_upper and threshold_interval > 0, "
            f"got {lower}, {upper}, {interval}"
        )
    if rounding not in ("floor", "ceil"):
        raise ValueError(f"laser_d: rounding must be 'floor' or 'ceil', got {rounding!r}")
    return _Monitor(expected_correct, rounding, length_thresholds(lower, upper, interval), update)


@register_reward("laser_d", batch=True)
def laser_d(
    groups: list[RolloutGroup],
    state: RewardState,
    *,
    alpha: float = 0.5,
    base: Base = "binary",
    expected_correct: int = 1,
    rounding: Rounding = "floor",
    threshold_lower: int = 4096,
    threshold_upper: int = 16384,
    threshold_interval: int = 1024,
    update: bool = True,
) -> list[GroupScores]:
    """LASER-D: LASER with a per-bucket target ``L_A(d)`` chosen from ``state.coverage``.

    The batch is scored with the coverage already in ``state``; then (``update=True``) the coverage
    is recomputed from this batch over thresholds ``threshold_lower, +interval, ..., threshold_upper``
    (:func:`update_monitor`). Without monitor statistics for a bucket the target is the batch's
    maximum length (no constraint). Defaults: the paper's "L4096" script (4096…16384 step 1024).
    """
    monitor = _monitor(expected_correct, rounding, threshold_lower, threshold_upper, threshold_interval, update)
    return _laser_d_scores(groups, state, alpha, base, monitor, False, 0, 0)


@register_reward("laser_de", batch=True)
def laser_de(
    groups: list[RolloutGroup],
    state: RewardState,
    *,
    alpha: float = 0.5,
    base: Base = "binary",
    expected_correct: int = 1,
    rounding: Rounding = "floor",
    threshold_lower: int = 4096,
    threshold_upper: int = 16384,
    threshold_interval: int = 1024,
    update: bool = True,
    repetition_ngram: int = 20,
    repetition_min_repeats: int = 3,
) -> list[GroupScores]:
    """LASER-DE: LASER-D plus ``+α`` for wrong, well-formed, non-repetitive responses longer than ``L_A(d)``."""
    monitor = _monitor(expected_correct, rounding, threshold_lower, threshold_upper, threshold_interval, update)
    return _laser_d_scores(groups, state, alpha, base, monitor, True, repetition_ngram, repetition_min_repeats)
