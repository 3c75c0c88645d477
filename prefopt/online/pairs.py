"""Scored rollouts → preference pairs in the data pipeline's standard / conversational format.

``build_pairs(scored, strategy=...)`` groups rollouts by ``(round, prompt_id)`` and applies one
strategy per group:

- ``best_vs_worst``: the highest-reward rollout against the lowest (ties: the shorter one is
  chosen, the longer one rejected).
- ``correct_short_vs_incorrect``: the shortest correct rollout against ``rejected="incorrect"`` (the
  lowest-reward incorrect one, longest on ties), ``"long_correct"`` (the longest correct one, which
  must be longer) or ``"incorrect_or_long_correct"`` (incorrect if any, else long correct).
- ``margin_all``: every pair whose reward difference is ``>= margin`` (and whose chosen reward is
  ``>= min_chosen_reward``), the largest margins first, at most ``max_pairs_per_prompt`` per group
  (DNO's large-margin filter, arXiv 2404.03715).

A group whose rollouts all have the same reward gives no pair (``all_tied``). Every skipped group is
counted by reason in :class:`PairStats`. ``weighting="drpo"`` stores DRPO's closed-form weight of the
chosen rollout among the group's correct ones as the pair's ``weight`` (read by the losses through
``PairLogps.weights``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from prefopt.online.rewards.base import group_rollouts
from prefopt.online.rewards.drpo import drpo_weights
from prefopt.online.types import Prompt, ScoredRollout

Strategy = Literal["best_vs_worst", "correct_short_vs_incorrect", "margin_all"]
RejectedKind = Literal["incorrect", "long_correct", "incorrect_or_long_correct"]
STRATEGIES: tuple[str, ...] = ("best_vs_worst", "correct_short_vs_incorrect", "margin_all")


@dataclass
class Pair:
    """One preference pair; ``to_dict`` is the record :func:`prefopt.data.load_pairs` reads.

    ``chosen`` / ``rejected`` are completion strings for a string prompt, ``[{"role": "assistant",
    "content": ...}]`` for a message-list prompt. ``meta`` holds the provenance: round, prompt id,
    strategy, and the sample index, reward, length and correctness of both sides.
    """

    prompt: Prompt
    chosen: str | list[dict[str, str]]
    rejected: str | list[dict[str, str]]
    id: str
    meta: dict[str, Any]
    weight: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable record (``weight`` omitted when unset)."""
        data = asdict(self)
        if self.weight is None:
            del data["weight"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pair:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass
class PairStats:
    """What :func:`build_pairs` did: groups seen, pairs built, groups skipped and pairs dropped by reason."""

    groups: int = 0
    pairs: int = 0
    skipped_groups: dict[str, int] = field(default_factory=dict)
    dropped_pairs: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict (for a round's ``metrics.json``)."""
        return asdict(self)


def _completion(rollout: ScoredRollout) -> str | list[dict[str, str]]:
    if isinstance(rollout.prompt, list):
        return [{"role": "assistant", "content": rollout.completion}]
    return rollout.completion


def _best_vs_worst(group: list[ScoredRollout]) -> list[tuple[int, int]]:
    best = min(range(len(group)), key=lambda i: (-group[i].reward, group[i].length, i))
    worst = min(range(len(group)), key=lambda i: (group[i].reward, -group[i].length, -i))
    return [(best, worst)]


def _correct_short(group: list[ScoredRollout], rejected: RejectedKind) -> list[tuple[int, int]] | str:
    correct = [i for i, r in enumerate(group) if r.correct]
    incorrect = [i for i, r in enumerate(group) if not r.correct]
    if not correct:
        return "no_correct"
    chosen = min(correct, key=lambda i: (group[i].length, -group[i].reward, i))
    if incorrect and rejected != "long_correct":
        return [(chosen, min(incorrect, key=lambda i: (group[i].reward, -group[i].length, -i)))]
    if rejected == "incorrect":
        return "no_incorrect"
    longest = max(correct, key=lambda i: (group[i].length, -group[i].reward, i))
    if group[longest].length <= group[chosen].length:
        return "no_long_correct"
    return [(chosen, longest)]


def _margin_all(
    group: list[ScoredRollout], margin: float, min_chosen_reward: float | None, cap: int | None
) -> list[tuple[int, int]] | str:
    candidates = [
        (group[i].reward - group[j].reward, i, j)
        for i in range(len(group))
        for j in range(len(group))
        if group[i].reward - group[j].reward >= margin
        and (min_chosen_reward is None or group[i].reward >= min_chosen_reward)
    ]
    if not candidates:
        return "below_margin"
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(i, j) for _, i, j in candidates[:cap]]


def _check_options(strategy: str, margin: float, weighting: str | None, max_length: int | None) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"build_pairs: unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    if strategy == "margin_all" and margin <= 0:
        raise ValueError(f"build_pairs: margin_all needs margin > 0, got {margin}")
    if weighting not in (None, "drpo"):
        raise ValueError(f"build_pairs: weighting must be None or 'drpo', got {weighting!r}")
    if weighting == "drpo" and not max_length:
        raise ValueError(
            "build_pairs(weighting='drpo') needs max_length: the fixed generation limit C of r_l = 1 - |o|/C"
        )


def build_pairs(
    scored: Sequence[ScoredRollout],
    strategy: Strategy = "best_vs_worst",
    *,
    rejected: RejectedKind = "incorrect",
    margin: float = 1.0,
    min_chosen_reward: float | None = None,
    max_pairs_per_prompt: int | None = None,
    weighting: Literal["drpo"] | None = None,
    drpo_lambda: float = 0.1,
    max_length: int | None = None,
) -> tuple[list[Pair], PairStats]:
    """Build preference pairs from scored rollouts, one strategy for every prompt group.

    ``rejected`` applies to ``correct_short_vs_incorrect``; ``margin``, ``min_chosen_reward`` and
    ``max_pairs_per_prompt`` to ``margin_all`` (the cap also applies to the other strategies, which
    make one pair per group). With ``weighting="drpo"`` the weight is
    ``n_correct · softmax_{correct}(r_l/λ)[chosen]`` with ``r_l = 1 − length/max_length`` — scaled so
    that equal lengths give weight 1 — and pairs whose chosen rollout is incorrect are dropped
    (``chosen_not_correct``).
    """
    _check_options(strategy, margin, weighting, max_length)
    stats, skipped, dropped = PairStats(), Counter(), Counter()
    pairs: list[Pair] = []
    for indices in group_rollouts(scored):
        group = [scored[i] for i in indices]
        stats.groups += 1
        if len({r.reward for r in group}) == 1:
            skipped["all_tied" if len(group) > 1 else "single_rollout"] += 1
            continue
        if strategy == "best_vs_worst":
            chosen_rejected: list[tuple[int, int]] | str = _best_vs_worst(group)
        elif strategy == "correct_short_vs_incorrect":
            chosen_rejected = _correct_short(group, rejected)
        else:
            chosen_rejected = _margin_all(group, margin, min_chosen_reward, max_pairs_per_prompt)
        if isinstance(chosen_rejected, str):
            skipped[chosen_rejected] += 1
            continue
        weights = None
        if weighting == "drpo":
            correct = [r.correct for r in group]
            raw = drpo_weights([r.length for r in group], correct, max_length, drpo_lambda)  # type: ignore[arg-type]
            weights = [w * sum(correct) for w in raw]
        for ci, ri in chosen_rejected[:max_pairs_per_prompt]:
            if weights is not None and not group[ci].correct:
                dropped["chosen_not_correct"] += 1
                continue
            pairs.append(_make_pair(group[ci], group[ri], strategy, None if weights is None else weights[ci]))
    stats.pairs = len(pairs)
    stats.skipped_groups, stats.dropped_pairs = dict(skipped), dict(dropped)
    return pairs, stats


def _make_pair(chosen: ScoredRollout, rejected: ScoredRollout, strategy: str, weight: float | None) -> Pair:
    meta = {
        "round": chosen.round,
        "prompt_id": chosen.prompt_id,
        "strategy": strategy,
        "chosen_index": chosen.sample_index,
        "rejected_index": rejected.sample_index,
        "chosen_reward": float(chosen.reward),
        "rejected_reward": float(rejected.reward),
        "chosen_length": chosen.length,
        "rejected_length": rejected.length,
        "chosen_correct": chosen.correct,
        "rejected_correct": rejected.correct,
    }
    pair_id = f"r{chosen.round}-{chosen.prompt_id}-{chosen.sample_index}-{rejected.sample_index}"
    return Pair(chosen.prompt, _completion(chosen), _completion(rejected), pair_id, meta, weight)
