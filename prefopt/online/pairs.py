"""Scored rollouts → preference pairs in the data pipeline's standard / conversational format.

``build_pairs(scored, strategy=...)`` groups rollouts by ``(round, prompt_id)`` and applies one
registered pair strategy per group (``@register_pair_strategy``; each decides what a tie means for
it):

- ``best_vs_worst``: the highest-reward rollout against the lowest (ties: the shorter one is
  chosen, the longer one rejected). A group whose rewards all tie expresses no preference: skipped
  (``all_tied``).
- ``correct_short_vs_incorrect``: the shortest correct rollout against ``rejected="incorrect"`` (the
  lowest-reward incorrect one, longest on ties), ``"long_correct"`` (the longest correct one, which
  must be longer) or ``"incorrect_or_long_correct"`` (incorrect if any, else long correct). It ranks
  by correctness and length, so tied rewards do not matter: an all-correct group whose lengths
  differ gives a pair with ``long_correct`` even under a reward that ties every correct answer.
- ``margin_all``: every pair whose reward difference is ``>= margin`` (and whose chosen reward is
  ``>= min_chosen_reward``), the largest margins first (DNO's large-margin filter, arXiv 2404.03715);
  tied rewards never reach the margin.

Options common to every strategy: ``max_pairs_per_prompt`` (the cap per group), ``weighting="drpo"``
with ``drpo_lambda`` and ``max_length`` (DRPO's closed-form weight of the chosen rollout among the
group's correct ones, stored as the pair's ``weight`` and read by the losses through
``PairLogps.weights``). Every skipped group is counted by reason in :class:`PairStats`.

Each pair's ``meta`` carries both sides' ``finish_reason``, so that tokenization never appends an
EOS to a completion the model did not finish (:mod:`prefopt.data.tokenize`).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from prefopt.online.rewards.base import group_rollouts
from prefopt.online.rewards.drpo import drpo_weights
from prefopt.online.types import Prompt, ScoredRollout

RejectedKind = Literal["incorrect", "long_correct", "incorrect_or_long_correct"]
Choice = list[tuple[int, int]] | str  # (chosen, rejected) index pairs, or the reason the group is skipped
StrategyFn = Callable[..., Choice]
COMMON_OPTIONS: tuple[str, ...] = ("max_pairs_per_prompt", "weighting", "drpo_lambda", "max_length")

_STRATEGIES: dict[str, StrategyFn] = {}


def register_pair_strategy(name: str) -> Callable[[StrategyFn], StrategyFn]:
    """Register ``fn(group, **options) -> list[(chosen, rejected)] | skip_reason`` as strategy ``name``.

    ``group`` is the list of one prompt's :class:`ScoredRollout` s (at least two). Options must be
    keyword-only (they become the recipe's ``pairs.*`` keys); at load the strategy is called once
    with an empty group, where it checks its options and returns a skip reason.
    """

    def decorator(fn: StrategyFn) -> StrategyFn:
        if name in _STRATEGIES and _STRATEGIES[name] is not fn:
            raise ValueError(f"a pair strategy named {name!r} is already registered ({_STRATEGIES[name].__module__})")
        _STRATEGIES[name] = fn
        return fn

    return decorator


def available_pair_strategies() -> list[str]:
    """Registered pair strategy names."""
    return sorted(_STRATEGIES)


def strategy_options(strategy: str) -> list[str]:
    """The options strategy ``strategy`` accepts itself (without :data:`COMMON_OPTIONS`)."""
    params = inspect.signature(_strategy(strategy)).parameters
    return [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]


def _strategy(name: str) -> StrategyFn:
    if name not in _STRATEGIES:
        raise ValueError(
            f"build_pairs: unknown strategy {name!r}; registered: {', '.join(available_pair_strategies())}"
        )
    return _STRATEGIES[name]


@dataclass
class Pair:
    """One preference pair; ``to_dict`` is the record :func:`prefopt.data.load_pairs` reads.

    ``chosen`` / ``rejected`` are completion strings for a string prompt, ``[{"role": "assistant",
    "content": ...}]`` for a message-list prompt. ``meta`` holds the provenance: round, prompt id,
    strategy, and the sample index, reward, length, correctness and finish reason of both sides.
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


@register_pair_strategy("best_vs_worst")
def best_vs_worst(group: list[ScoredRollout]) -> Choice:
    """The best rollout (shortest on ties) against the worst (longest on ties); all tied → no pair."""
    if len({r.reward for r in group}) <= 1:
        return "all_tied"
    best = min(range(len(group)), key=lambda i: (-group[i].reward, group[i].length, i))
    worst = min(range(len(group)), key=lambda i: (group[i].reward, -group[i].length, -i))
    return [(best, worst)]


@register_pair_strategy("correct_short_vs_incorrect")
def correct_short_vs_incorrect(group: list[ScoredRollout], *, rejected: RejectedKind = "incorrect") -> Choice:
    """The shortest correct rollout against an incorrect one and/or a longer correct one (``rejected``)."""
    if rejected not in ("incorrect", "long_correct", "incorrect_or_long_correct"):
        raise ValueError(
            f"build_pairs: rejected must be 'incorrect', 'long_correct' or 'incorrect_or_long_correct', got {rejected!r}"
        )
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


@register_pair_strategy("margin_all")
def margin_all(
    group: list[ScoredRollout], *, margin: float = 1.0, min_chosen_reward: float | None = None
) -> Choice:
    """Every (chosen, rejected) whose reward gap is ``>= margin``, largest gaps first; all tied → no pair."""
    if margin <= 0:
        raise ValueError(f"build_pairs: margin_all needs margin > 0, got {margin}")
    if len({r.reward for r in group}) <= 1:
        return "all_tied"
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
    return [(i, j) for _, i, j in candidates]


def check_pair_options(strategy: str, options: dict[str, Any]) -> None:
    """Raise ``ValueError`` for an unknown strategy, an option it ignores or an out-of-range value."""
    fn = _strategy(strategy)
    own = strategy_options(strategy)
    unknown = sorted(set(options) - set(own) - set(COMMON_OPTIONS))
    if unknown:
        raise ValueError(
            f"pair strategy {strategy!r} takes no option(s) {unknown}; valid: {', '.join([*own, *COMMON_OPTIONS])}"
        )
    weighting = options.get("weighting")
    if weighting not in (None, "drpo"):
        raise ValueError(f"build_pairs: weighting must be None or 'drpo', got {weighting!r}")
    if weighting is None:
        unused = sorted({"drpo_lambda", "max_length"} & set(options))
        if unused:
            raise ValueError(f"pair option(s) {unused} only apply with weighting='drpo'; remove them or set it")
    elif not options.get("max_length"):
        raise ValueError(
            "build_pairs(weighting='drpo') needs max_length: the fixed generation limit C of r_l = 1 - |o|/C"
        )
    cap = options.get("max_pairs_per_prompt")
    if cap is not None and cap < 1:
        raise ValueError(f"build_pairs: max_pairs_per_prompt must be >= 1, got {cap}")
    fn([], **{k: v for k, v in options.items() if k in own})  # the strategy's own range checks


def build_pairs(
    scored: Sequence[ScoredRollout],
    strategy: str = "best_vs_worst",
    *,
    max_pairs_per_prompt: int | None = None,
    weighting: Literal["drpo"] | None = None,
    drpo_lambda: float | None = None,
    max_length: int | None = None,
    **options: Any,
) -> tuple[list[Pair], PairStats]:
    """Build preference pairs from scored rollouts, one registered strategy for every prompt group.

    ``options`` go to the strategy (``rejected`` for ``correct_short_vs_incorrect``; ``margin`` and
    ``min_chosen_reward`` for ``margin_all``). ``max_pairs_per_prompt`` caps every group. With
    ``weighting="drpo"`` the weight is ``n_correct · softmax_{correct}(r_l/λ)[chosen]`` with
    ``r_l = 1 − length/max_length`` — scaled so that equal lengths give weight 1 — and pairs whose
    chosen rollout is incorrect are dropped (``chosen_not_correct``); λ = ``drpo_lambda`` (default 0.1).
    """
    common = {"max_pairs_per_prompt": max_pairs_per_prompt, "weighting": weighting,
              "drpo_lambda": drpo_lambda, "max_length": max_length}
    check_pair_options(strategy, {**{k: v for k, v in common.items() if v is not None}, **options})
    choose = _strategy(strategy)
    stats, skipped, dropped = PairStats(), Counter(), Counter()
    pairs: list[Pair] = []
    for indices in group_rollouts(scored):
        group = [scored[i] for i in indices]
        stats.groups += 1
        chosen_rejected = "single_rollout" if len(group) < 2 else choose(group, **options)
        if isinstance(chosen_rejected, str):
            skipped[chosen_rejected] += 1
            continue
        weights = None
        if weighting == "drpo":
            correct = [r.correct for r in group]
            lam = 0.1 if drpo_lambda is None else drpo_lambda
            raw = drpo_weights([r.length for r in group], correct, max_length, lam)  # type: ignore[arg-type]
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
        "chosen_finish_reason": chosen.finish_reason,
        "rejected_finish_reason": rejected.finish_reason,
    }
    pair_id = f"r{chosen.round}-{chosen.prompt_id}-{chosen.sample_index}-{rejected.sample_index}"
    return Pair(chosen.prompt, _completion(chosen), _completion(rejected), pair_id, meta, weight)
