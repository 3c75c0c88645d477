"""Held-out accuracy and completion length, with a 95% Wilson interval and the paired difference.

:func:`evaluate_accuracy` decodes each held-out problem once (greedy by default), verifies it and
returns an :class:`AccuracyReport`: accuracy with its Wilson score interval, mean/median completion
length in tokens (EOS counted when generated) and the truncation rate, plus the per-problem outcomes
(``problem id → correct``) so two evaluations on the same problems can be compared *paired*, and
every completion (prompt id, sample index, text, extracted answer, verdict, length, finish reason),
so any figure can be audited. Sampled with ``n > 1``, the report adds mean@n (the fraction of all
samples that are right) and the unbiased pass@k of Chen et al. (2021, eq. 1) for k = 1, 2, 4, ..., n.

:func:`paired_difference` compares two evaluations on the same problems: the accuracy difference
``b − a`` with a normal-approximation 95% interval on the per-problem differences and McNemar's
exact test (a two-sided binomial test on the discordant problems). Paired is much tighter than two
independent intervals, because most problems are right (or wrong) under both policies.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from scipy.stats import binomtest

from prefopt.sampling import PromptItem, Sampler, SamplingParams
from prefopt.stats import Z95, wilson_interval
from prefopt.verification import Truncated, Verifier, verify_rollouts


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of ``b`` minus accuracy of ``a`` on the same problems.

    ``a_only`` / ``b_only``: problems right under only one of them (the discordant pairs);
    ``ci_low``/``ci_high``: 95% normal interval of the mean per-problem difference; ``p_value``:
    McNemar's exact two-sided test; ``significant``: ``p_value < 0.05``.
    """

    n: int
    diff: float
    ci_low: float
    ci_high: float
    a_only: int
    b_only: int
    p_value: float

    @property
    def significant(self) -> bool:
        """Whether McNemar's test rejects "no difference" at the 5% level."""
        return self.p_value < 0.05


def paired_difference(a: Mapping[str, bool], b: Mapping[str, bool]) -> PairedDifference:
    """Paired accuracy difference ``b − a`` over the problem ids both evaluations share."""
    ids = sorted(set(a) & set(b))
    if not ids:
        raise ValueError("paired_difference: the two evaluations share no problem ids; evaluate the same problems")
    n = len(ids)
    a_only = sum(1 for i in ids if a[i] and not b[i])
    b_only = sum(1 for i in ids if b[i] and not a[i])
    diff = (b_only - a_only) / n
    # Per-problem differences d_i ∈ {-1, 0, 1}: sample variance of their mean.
    var = ((a_only + b_only) / n - diff * diff) / max(n - 1, 1)
    half = Z95 * math.sqrt(max(var, 0.0))
    discordant = a_only + b_only
    p_value = binomtest(b_only, discordant, 0.5).pvalue if discordant else 1.0
    return PairedDifference(n, diff, diff - half, diff + half, a_only, b_only, float(p_value))


@dataclass
class AccuracyReport:
    """One evaluation: accuracy (+ Wilson CI), completion lengths, per-problem outcomes, every completion.

    ``accuracy``, ``outcomes`` and ``lengths`` are about sample 0 of each problem (the greedy answer,
    or the first sample), one outcome per problem so that evaluations pair up; ``samples`` is the
    number of samples per problem, ``mean_at_n`` the accuracy over all of them and ``pass_at_k``
    (keys ``"1"``, ``"2"``, ...) the unbiased pass@k.
    """

    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_length: float
    median_length: float
    truncation_rate: float
    seconds: float
    tokens_per_second: float
    samples: int = 1
    mean_at_n: float | None = None
    pass_at_k: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, bool] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)
    completions: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The scalar fields (no per-problem data), for metrics files and tables."""
        data = asdict(self)
        for key in ("outcomes", "lengths", "completions"):
            data.pop(key)
        return data

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict including the per-problem outcomes and lengths."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AccuracyReport":
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are right (Chen et al., 2021, eq. 1).

    ``pass@k = 1 − C(n − c, k) / C(n, k)``: the chance that at least one of ``k`` samples drawn
    without replacement from the ``n`` is right.
    """
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 < k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize(
    outcomes: Mapping[str, bool],
    lengths: Mapping[str, int],
    truncated: Mapping[str, bool],
    seconds: float = 0.0,
    tokens_per_second: float = 0.0,
    completions: Sequence[Mapping[str, Any]] = (),
) -> AccuracyReport:
    """Build an :class:`AccuracyReport` from per-problem outcomes, lengths and truncation flags.

    ``completions`` (one record per sample, with ``prompt_id`` and ``correct``) adds mean@n and
    pass@k when there are several samples per problem.
    """
    n = len(outcomes)
    if n == 0:
        raise ValueError("summarize: no problems were evaluated; the held-out set is empty")
    correct = sum(outcomes.values())
    low, high = wilson_interval(correct, n)
    values = list(lengths.values())
    return AccuracyReport(
        n=n,
        accuracy=correct / n,
        ci_low=low,
        ci_high=high,
        mean_length=statistics.fmean(values),
        median_length=float(statistics.median(values)),
        truncation_rate=sum(truncated.values()) / n,
        seconds=seconds,
        tokens_per_second=tokens_per_second,
        outcomes=dict(outcomes),
        lengths=dict(lengths),
        completions=[dict(c) for c in completions],
        **_sample_statistics(completions),
    )


def _sample_statistics(completions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``samples``, ``mean_at_n`` and ``pass_at_k`` of per-sample records (empty when one sample each)."""
    correct: dict[str, list[bool]] = {}
    for record in completions:
        correct.setdefault(record["prompt_id"], []).append(bool(record["correct"]))
    counts = {len(v) for v in correct.values()}
    if len(counts) != 1 or counts == {1}:
        return {}
    n = counts.pop()
    ks = sorted({2**i for i in range(n.bit_length()) if 2**i <= n} | {n})
    return {
        "samples": n,
        "mean_at_n": statistics.fmean(c for v in correct.values() for c in v),
        "pass_at_k": {str(k): statistics.fmean(pass_at_k(n, sum(v), k) for v in correct.values()) for k in ks},
    }


def evaluate_accuracy(
    sampler: Sampler,
    problems: Sequence[PromptItem],
    golds: Sequence[str],
    verifier: Verifier,
    params: SamplingParams | None = None,
    truncated: Truncated = "incorrect",
) -> AccuracyReport:
    """Decode each problem (greedy unless ``params`` says otherwise), verify every sample, and summarize.

    ``golds[i]`` is the reference answer of ``problems[i]``. ``truncated`` is the verifier's truncation
    policy (:func:`~prefopt.verification.verify_rollouts`): by default an answer cut at the
    generation limit is incorrect, as in training. With ``params.n > 1`` the report's
    accuracy, outcomes and lengths are sample 0's (one outcome per problem, for paired comparisons)
    and mean@n / pass@k cover all samples; every sample is kept in ``completions``.
    """
    if len(problems) != len(golds):
        raise ValueError(f"evaluate_accuracy: {len(problems)} problems but {len(golds)} gold answers")
    params = params or SamplingParams(greedy=True)
    start = time.perf_counter()
    rollouts, stats = sampler.sample(problems, params)
    gold_of = {p.id: g for p, g in zip(problems, golds)}
    results = verify_rollouts(verifier, [r.completion for r in rollouts], [gold_of[r.prompt_id] for r in rollouts],
                              [r.finish_reason for r in rollouts], truncated)
    completions = [
        {"prompt_id": r.prompt_id, "sample_index": r.sample_index, "completion": r.completion,
         "extracted": v.extracted, "correct": v.correct, "verify_status": v.status, "length": r.length,
         "finish_reason": r.finish_reason}
        for r, v in zip(rollouts, results)
    ]
    first = [c for c in completions if c["sample_index"] == 0]
    return summarize(
        outcomes={c["prompt_id"]: c["correct"] for c in first},
        lengths={c["prompt_id"]: c["length"] for c in first},
        truncated={c["prompt_id"]: c["finish_reason"] == "length" for c in first},
        seconds=time.perf_counter() - start,
        tokens_per_second=stats.tokens_per_second,
        completions=completions,
    )
