"""The plain records of the online path: rollouts → verified, scored rollouts (and the reward state).

A verification itself is a :class:`prefopt.verification.VerifyResult` (shared with the evaluator).

Every record is a dataclass with ``to_dict`` / ``from_dict`` that round-trips through JSON, so each
stage's output can be saved, loaded and printed (``rollouts.jsonl``, ``reward_state.json``).

Length convention (SPEC rule 4): :attr:`Rollout.length` counts *completion tokens under the policy
tokenizer*, **EOS included when the model generated it** (``finish_reason == "stop"``); it equals
``len(completion_ids)``. A rollout cut at the generation limit (``finish_reason == "length"``) has
no EOS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from prefopt.records import check_keys
from prefopt.verification import VerifyResult, VerifyStatus

Message = dict[str, str]
Prompt = str | list[Message]
FinishReason = Literal["stop", "length"]

FINISH_REASONS: tuple[str, ...] = ("stop", "length")


@dataclass
class Rollout:
    """One sampled completion of one prompt.

    ``prompt_id`` is the stable problem id (it keys per-problem reward history, e.g. HAPO's),
    ``sample_index`` numbers the rollouts of that prompt within a round (0..G-1). ``prompt`` is kept
    as given: a string or a list of chat messages. ``length == len(completion_ids)``; see the module
    docstring for the EOS convention.
    """

    prompt_id: str
    sample_index: int
    prompt: Prompt
    completion: str
    completion_ids: list[int]
    length: int
    finish_reason: FinishReason
    round: int = 0

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(
                f"Rollout {self.prompt_id}#{self.sample_index}: finish_reason must be one of {FINISH_REASONS}, "
                f"got {self.finish_reason!r}"
            )
        if self.length != len(self.completion_ids):
            raise ValueError(
                f"Rollout {self.prompt_id}#{self.sample_index}: length={self.length} but it has "
                f"{len(self.completion_ids)} completion_ids; length must count the completion tokens"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict (field names as keys)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "rollout") -> Rollout:
        """Inverse of :meth:`to_dict`; ``where`` (e.g. ``"rollouts.jsonl row 3"``) prefixes errors."""
        check_keys(cls, data, where)
        return cls(**data)


@dataclass(kw_only=True)
class ScoredRollout(Rollout):
    """A :class:`Rollout` plus its verification and reward.

    ``reward`` is the total scalar reward the pair builder ranks by; ``components`` holds the named
    parts the reward reported (e.g. ``{"correctness": 1.0, "length": 0.5}``) for logging.
    """

    correct: bool
    verify_status: VerifyStatus
    reward: float
    extracted: str | None = None
    components: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_rollout(
        cls,
        rollout: Rollout,
        verification: VerifyResult,
        reward: float,
        components: dict[str, float] | None = None,
    ) -> ScoredRollout:
        """Attach a verification and a reward to ``rollout``."""
        return cls(
            **asdict(rollout),
            correct=verification.correct,
            verify_status=verification.status,
            extracted=verification.extracted,
            reward=float(reward),
            components=dict(components or {}),
        )


@dataclass
class RewardState:
    """Run-level state some rewards read (and HAPO writes); persisted with each round.

    - ``round`` / ``step``: the curriculum clock (TLTS budgets): rounds completed, and optimizer steps
      they trained, before the batch being scored (the rounds loop advances both).
    - ``history`` / ``history_count``: per problem id, HAPO's history length ``h`` (the minimum, or
      the running mean, of the lengths of previously generated correct responses) and how many
      correct responses went into it. Keys are stable problem ids, never batch positions.
    - ``monitor_samples`` / ``coverage``: LASER-D monitor statistics — rollouts per monitor prompt
      ``n`` and, per difficulty bucket (``"high"``, ``"medium"``, ``"low"``), the fraction of the
      bucket's rollouts whose length is ``<= threshold`` for each threshold; LASER-D/DE recompute
      them from every batch they score (in the rounds: from each round, for the next).

    ``to_dict`` is JSON-serializable (integer thresholds become string keys); ``from_dict`` restores
    it, so a resumed run keeps its history instead of silently switching the length reward off.
    """

    round: int = 0
    step: int = 0
    history: dict[str, float] = field(default_factory=dict)
    history_count: dict[str, int] = field(default_factory=dict)
    monitor_samples: int = 0
    coverage: dict[str, dict[int, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict."""
        data = asdict(self)
        data["coverage"] = {b: {str(t): p for t, p in cov.items()} for b, cov in self.coverage.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "reward state") -> RewardState:
        """Inverse of :meth:`to_dict`; ``where`` (e.g. the file name) prefixes errors."""
        check_keys(cls, data, where)
        data = dict(data)
        data["coverage"] = {
            b: {int(t): float(p) for t, p in cov.items()} for b, cov in data.get("coverage", {}).items()
        }
        data["history"] = {str(k): float(v) for k, v in data.get("history", {}).items()}
        data["history_count"] = {str(k): int(v) for k, v in data.get("history_count", {}).items()}
        return cls(**data)
