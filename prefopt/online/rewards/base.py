"""The reward contract: groups of rollouts of one prompt in, one score dict per group out.

A reward sees the whole batch at once — ``score_batch(groups, state) -> list[GroupScores]`` — so
batch-level rewards (GRPO-λ's top-λ selection, LASER-D's batch-max fallback, HAPO's
pre-update history) fit the same interface as the simple per-group ones. A per-group reward is
registered with ``batch=False`` and called once per group.

``GroupScores`` maps ``"reward"`` (the total, one float per rollout) and any named components
(``"correctness"``, ``"length"``, ...) to per-rollout lists; components are for logging, only
``"reward"`` ranks rollouts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prefopt.online.types import RewardState, Rollout, ScoredRollout
from prefopt.verification import VerifyResult

GroupScores = dict[str, list[float]]


@dataclass
class RolloutGroup:
    """What a reward sees of the rollouts of one prompt (index ``i`` is the same rollout everywhere).

    - ``lengths``: completion tokens (EOS included when generated; see :mod:`prefopt.online.types`).
    - ``correct``: the verifier's verdicts (a timeout counts as ``False``).
    - ``finish_reasons``: ``"stop"`` or ``"length"`` (truncated).
    - ``format_scores``: optional, in ``[0, 1]``; ``1.0`` = well-formed (finished, with the answer in
      the required form; the rounds loop fills them with :func:`prefopt.online.answers.format_score`).
      ``None`` means "not measured": a response then counts as well-formed when it was finished and
      the verifier found an answer in it (``statuses``).
    - ``completion_ids``: optional token ids (LASER-DE's repetition detector needs them).
    - ``statuses``: optional verifier statuses (``"no_answer"``, ``"truncated"``, ...).
    """

    prompt_id: str
    lengths: list[int]
    correct: list[bool]
    finish_reasons: list[str]
    format_scores: list[float] | None = None
    completion_ids: list[list[int]] | None = None
    statuses: list[str] | None = None

    def __post_init__(self) -> None:
        sizes = {
            "lengths": len(self.lengths),
            "correct": len(self.correct),
            "finish_reasons": len(self.finish_reasons),
        }
        if self.format_scores is not None:
            sizes["format_scores"] = len(self.format_scores)
        if self.completion_ids is not None:
            sizes["completion_ids"] = len(self.completion_ids)
        if self.statuses is not None:
            sizes["statuses"] = len(self.statuses)
        if len(set(sizes.values())) != 1 or not self.lengths:
            raise ValueError(
                f"RolloutGroup {self.prompt_id!r}: fields must be non-empty and equally long, got {sizes}"
            )

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def accuracy(self) -> float:
        """Fraction of correct rollouts."""
        return sum(self.correct) / len(self.correct)

    def well_formed(self, i: int) -> bool:
        """``format_scores[i] >= 1`` when measured, else "finished, and not ``no_answer``"."""
        if self.format_scores is not None:
            return self.format_scores[i] >= 1.0
        no_answer = self.statuses is not None and self.statuses[i] == "no_answer"
        return self.finish_reasons[i] == "stop" and not no_answer

    def truncated(self, i: int) -> bool:
        """Whether rollout ``i`` was cut at the generation limit."""
        return self.finish_reasons[i] == "length"


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., object]
    batch: bool
    per_problem_history: bool


_REGISTRY: dict[str, _Entry] = {}


def register_reward(
    name: str, *, batch: bool = False, per_problem_history: bool = False
) -> Callable[[Callable], Callable]:
    """Register a reward under ``name``.

    ``batch=False``: ``fn(group, state, **hparams) -> GroupScores``;
    ``batch=True``: ``fn(groups, state, **hparams) -> list[GroupScores]``. Hyperparameters must be
    keyword-only so that :func:`get_reward` can check them eagerly. ``per_problem_history=True``
    marks a reward whose state is keyed by problem id (HAPO): it needs problems that recur across
    rounds, which the rounds recipe checks at load.
    """

    def decorator(fn: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(
                f"a reward named {name!r} is already registered ({_REGISTRY[name].fn.__module__})"
            )
        _REGISTRY[name] = _Entry(fn, batch, per_problem_history)
        return fn

    return decorator


def available_rewards() -> list[str]:
    """Registered reward names."""
    return sorted(_REGISTRY)


class Reward:
    """A registered reward with its hyperparameters bound; what :func:`get_reward` returns."""

    def __init__(self, name: str, entry: _Entry, hparams: dict) -> None:
        self.name, self.hparams, self._entry = name, hparams, entry

    @property
    def resolved_hparams(self) -> dict:
        """Every hyperparameter with its value: the bound ones, and the defaults of the rest."""
        params = inspect.signature(self._entry.fn).parameters
        defaults = {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        return {**defaults, **self.hparams}

    @property
    def per_problem_history(self) -> bool:
        """Whether the reward's state is per problem id (it needs problems that recur)."""
        return self._entry.per_problem_history

    def score_batch(self, groups: Sequence[RolloutGroup], state: RewardState) -> list[GroupScores]:
        """Score every group of the batch (stateful rewards read and then update ``state``)."""
        if self._entry.batch:
            scores = self._entry.fn(list(groups), state, **self.hparams)
        else:
            scores = [self._entry.fn(group, state, **self.hparams) for group in groups]
        for group, group_scores in zip(groups, scores):
            bad = {k: len(v) for k, v in group_scores.items() if len(v) != len(group)}
            if "reward" not in group_scores or bad:
                raise RuntimeError(
                    f"reward {self.name!r} returned malformed scores for {group.prompt_id!r}: {bad}"
                )
        return scores

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.hparams.items())
        return f"get_reward({self.name!r}{args})"


def get_reward(name: str, **hparams) -> Reward:
    """Return reward ``name`` with ``hparams`` bound; unknown hyperparameter names raise at once."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown reward {name!r}; registered rewards: {', '.join(available_rewards())}")
    entry = _REGISTRY[name]
    params = inspect.signature(entry.fn).parameters
    valid = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise TypeError(f"reward {name!r} got unknown hyperparameter(s) {unknown}; valid: {valid}")
    return Reward(name, entry, hparams)


def group_rollouts(rollouts: Sequence[Rollout]) -> list[list[int]]:
    """Indices of ``rollouts`` grouped by ``(round, prompt_id)``, in order of first appearance."""
    groups: dict[tuple[int, str], list[int]] = {}
    for i, rollout in enumerate(rollouts):
        groups.setdefault((rollout.round, rollout.prompt_id), []).append(i)
    return list(groups.values())


def score_rollouts(
    rollouts: Sequence[Rollout],
    verifications: Sequence[VerifyResult],
    reward: Reward,
    state: RewardState,
    format_scores: Sequence[float] | None = None,
) -> list[ScoredRollout]:
    """Verified rollouts → scored rollouts (same order), scoring all prompt groups as one batch."""
    if len(rollouts) != len(verifications) or (
        format_scores is not None and len(format_scores) != len(rollouts)
    ):
        raise ValueError(
            f"score_rollouts: {len(rollouts)} rollouts, {len(verifications)} verifications, "
            f"{'no' if format_scores is None else len(format_scores)} format scores; pass one of each per rollout"
        )
    index_groups = group_rollouts(rollouts)
    groups = [
        RolloutGroup(
            prompt_id=rollouts[idx[0]].prompt_id,
            lengths=[rollouts[i].length for i in idx],
            correct=[verifications[i].correct for i in idx],
            finish_reasons=[rollouts[i].finish_reason for i in idx],
            format_scores=None if format_scores is None else [float(format_scores[i]) for i in idx],
            completion_ids=[rollouts[i].completion_ids for i in idx],
            statuses=[verifications[i].status for i in idx],
        )
        for idx in index_groups
    ]
    scored: list[ScoredRollout | None] = [None] * len(rollouts)
    for idx, scores in zip(index_groups, reward.score_batch(groups, state)):
        for k, i in enumerate(idx):
            components = {name: float(v[k]) for name, v in scores.items() if name != "reward"}
            scored[i] = ScoredRollout.from_rollout(
                rollouts[i], verifications[i], scores["reward"][k], components
            )
    return scored  # type: ignore[return-value]
