"""What verifying an answer means, shared by :mod:`prefopt.online` and :mod:`prefopt.evaluate`.

The verifiers themselves (math-verify in a time-limited worker process, exact match, registered
callables) live in :mod:`prefopt.online.verifier`; this module holds only what both the rounds loop
and the evaluator use, so each imports it downward and neither imports the other: the
:class:`VerifyResult` record, the :class:`Verifier` protocol, and :func:`verify_rollouts`, the one
implementation of the truncation policy (a rollout cut at the generation limit is never credited
unless ``truncated="verify"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from prefopt.records import check_keys

VerifyStatus = Literal["ok", "no_answer", "parse_error", "timeout", "error", "truncated"]
Truncated = Literal["incorrect", "verify"]
TRUNCATED_POLICIES: tuple[str, ...] = ("incorrect", "verify")


@dataclass
class VerifyResult:
    """What a verifier concluded about one answer.

    ``correct`` is ``False`` whenever ``status != "ok"`` (a timeout or a parse failure counts as
    incorrect). ``extracted`` is the answer string the verifier compared (``None`` if none was found),
    ``detail`` a short human-readable reason for non-``ok`` statuses.
    """

    correct: bool
    status: VerifyStatus
    extracted: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "verify result") -> VerifyResult:
        """Inverse of :meth:`to_dict`."""
        check_keys(cls, data, where)
        return cls(**data)


class Verifier(Protocol):
    """What every verifier offers: batch and single verification, and ``close`` (also a context manager)."""

    def verify_batch(self, completions: Sequence[str], golds: Sequence[str]) -> list[VerifyResult]: ...

    def verify(self, completion: str, gold: str) -> VerifyResult: ...

    def close(self) -> None: ...


def verify_rollouts(
    verifier: Verifier,
    completions: Sequence[str],
    golds: Sequence[str],
    finish_reasons: Sequence[str],
    truncated: Truncated = "incorrect",
) -> list[VerifyResult]:
    """Verify rollouts under the truncation policy.

    ``truncated="incorrect"`` (default): a rollout cut at the generation limit (``finish_reason ==
    "length"``) is not checked and gets ``status="truncated"``, incorrect — LASER (score −1) and DLER
    count cut-off outputs as wrong, and a last-number fallback would otherwise credit ``so \\boxed{18``
    or a sentence cut after a number. ``"verify"`` checks truncated rollouts like finished ones.
    """
    if not len(completions) == len(golds) == len(finish_reasons):
        raise ValueError(
            f"verify_rollouts: {len(completions)} completions, {len(golds)} golds, {len(finish_reasons)} finish reasons"
        )
    if truncated not in TRUNCATED_POLICIES:
        raise ValueError(f"verify_rollouts: truncated must be one of {TRUNCATED_POLICIES}, got {truncated!r}")
    check = [i for i, f in enumerate(finish_reasons) if truncated == "verify" or f != "length"]
    verdicts = dict(zip(check, verifier.verify_batch([completions[i] for i in check], [golds[i] for i in check])))
    cut = VerifyResult(False, "truncated", None, "cut at the generation limit (verifier.truncated: incorrect)")
    return [verdicts.get(i, cut) for i in range(len(completions))]
