"""Held-out accuracy and completion length, with a 95% Wilson interval and the paired difference.

:func:`evaluate_accuracy` decodes each held-out problem once (greedy by default), verifies it and
returns an :class:`AccuracyReport`: accuracy with its Wilson score interval, mean/median completion
length in tokens (EOS counted when generated) and the truncation rate, plus the per-problem outcomes
(``problem id → correct``) so two evaluations on the same problems can be compared *paired*.

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

from prefopt.online.verifier import Verifier
from prefopt.sampling import PromptItem, Sampler, SamplingParams

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``(0, 1)`` when ``n == 0``)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # p inside, despite rounding


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
    """One evaluation: accuracy (+ Wilson CI), completion lengths and per-problem outcomes."""

    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_length: float
    median_length: float
    truncation_rate: float
    seconds: float
    tokens_per_second: float
    outcomes: dict[str, bool] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The scalar fields (no per-problem data), for metrics files and tables."""
        data = asdict(self)
        data.pop("outcomes")
        data.pop("lengths")
        return data

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict including the per-problem outcomes and lengths."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AccuracyReport":
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def summarize(
    outcomes: Mapping[str, bool],
    lengths: Mapping[str, int],
    truncated: Mapping[str, bool],
    seconds: float = 0.0,
    tokens_per_second: float = 0.0,
) -> AccuracyReport:
    """Build an :class:`AccuracyReport` from per-problem outcomes, lengths and truncation flags."""
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
    )


def evaluate_accuracy(
    sampler: Sampler,
    problems: Sequence[PromptItem],
    golds: Sequence[str],
    verifier: Verifier,
    params: SamplingParams | None = None,
) -> AccuracyReport:
    """Decode each problem once (greedy unless ``params`` says otherwise), verify, and summarize.

    ``golds[i]`` is the reference answer of ``problems[i]``. With ``params.n > 1`` only sample 0 of
    each problem is scored, so the report stays one outcome per problem (paired comparisons).
    """
    if len(problems) != len(golds):
        raise ValueError(f"evaluate_accuracy: {len(problems)} problems but {len(golds)} gold answers")
    params = params or SamplingParams(greedy=True)
    start = time.perf_counter()
    rollouts, stats = sampler.sample(problems, params)
    first = [r for r in rollouts if r.sample_index == 0]
    gold_of = {p.id: g for p, g in zip(problems, golds)}
    results = verifier.verify_batch([r.completion for r in first], [gold_of[r.prompt_id] for r in first])
    return summarize(
        outcomes={r.prompt_id: v.correct for r, v in zip(first, results)},
        lengths={r.prompt_id: r.length for r in first},
        truncated={r.prompt_id: r.finish_reason == "length" for r in first},
        seconds=time.perf_counter() - start,
        tokens_per_second=stats.tokens_per_second,
    )
