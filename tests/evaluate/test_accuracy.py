"""Held-out accuracy: Wilson intervals, the paired difference with McNemar's test, summaries, evaluation."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy.stats import binomtest

from prefopt.evaluate.accuracy import (
    Z95,
    AccuracyReport,
    evaluate_accuracy,
    paired_difference,
    summarize,
    wilson_interval,
)
from prefopt.online.types import Rollout
from prefopt.online.verifier import get_verifier
from prefopt.sampling import PromptItem, SamplerStats, SamplingParams


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (50, 100, 0.4038, 0.5962),
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),  # z²/(n + z²) = 3.8415 / 13.8415
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_interval_hand_computed(successes, n, low, high):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=1e-4)
    assert got[0] <= successes / n <= got[1]


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for n in (1, 7, 1000):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    narrow, wide = wilson_interval(500, 1000), wilson_interval(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def outcomes(pattern: str, prefix: str = "p") -> dict[str, bool]:
    return {f"{prefix}{i}": c == "1" for i, c in enumerate(pattern)}


def test_paired_difference_on_constructed_outcomes():
    # 3 right under both, 2 wrong under both, 1 right only under a, 4 right only under b.
    a = outcomes("1110010000")
    b = outcomes("1110001111")
    result = paired_difference(a, b)
    assert (result.n, result.a_only, result.b_only) == (10, 1, 4)
    assert result.diff == pytest.approx(0.3)
    # McNemar exact: two-sided binomial on the 5 discordant problems, 4 for b: 2 * (1 + 5) / 32.
    assert result.p_value == pytest.approx(0.375) == binomtest(4, 5, 0.5).pvalue
    assert not result.significant
    # The 95% normal interval of the mean per-problem difference d_i ∈ {-1, 0, 1}.
    d = [int(b[k]) - int(a[k]) for k in a]
    half = Z95 * statistics.stdev(d) / math.sqrt(len(d))
    assert (result.ci_low, result.ci_high) == pytest.approx((0.3 - half, 0.3 + half))
    assert (result.ci_low, result.ci_high) == pytest.approx((-0.1183, 0.7183), abs=1e-4)


def test_paired_difference_significance_and_symmetry():
    a, b = outcomes("0" * 10 + "1" * 5), outcomes("1" * 15)
    result = paired_difference(a, b)
    assert result.p_value == pytest.approx(2 / 2**10) and result.significant
    reverse = paired_difference(b, a)
    assert reverse.diff == -result.diff and reverse.p_value == result.p_value
    same = paired_difference(a, a)
    assert (same.diff, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_difference_uses_shared_ids_only():
    a = {"x": True, "y": False, "only_a": True}
    b = {"x": True, "y": True, "only_b": False}
    result = paired_difference(a, b)
    assert (result.n, result.a_only, result.b_only, result.diff) == (2, 0, 1, 0.5)
    with pytest.raises(ValueError, match="share no problem ids"):
        paired_difference({"x": True}, {"y": True})


def test_summarize_lengths_and_truncation():
    report = summarize(
        outcomes={"a": True, "b": False, "c": True, "d": True},
        lengths={"a": 10, "b": 30, "c": 20, "d": 100},
        truncated={"a": False, "b": False, "c": False, "d": True},
        seconds=2.0,
        tokens_per_second=80.0,
    )
    assert (report.n, report.accuracy) == (4, 0.75)
    assert (report.ci_low, report.ci_high) == wilson_interval(3, 4)
    assert (report.mean_length, report.median_length, report.truncation_rate) == (40.0, 25.0, 0.25)
    assert "outcomes" not in report.summary() and report.summary()["tokens_per_second"] == 80.0
    assert AccuracyReport.from_dict(report.to_dict()) == report
    with pytest.raises(ValueError, match="held-out set is empty"):
        summarize({}, {}, {})


class FakeSampler:
    """Answers each prompt from a table; ``n`` rollouts per prompt, sample 0 first, with fake token ids."""

    def __init__(self, answers: dict[str, list[tuple[str, int, str]]]) -> None:
        self.answers = answers
        self.params: SamplingParams | None = None

    def sample(self, prompts, params, round_index=0):
        self.params = params
        rollouts = [
            Rollout(item.id, i, item.prompt, text, list(range(length)), length, finish, round_index)
            for item in prompts
            for i, (text, length, finish) in enumerate(self.answers[item.id][: params.n])
        ]
        return rollouts, SamplerStats(len(prompts), len(rollouts), sum(r.length for r in rollouts), 0.5)


def test_evaluate_accuracy_with_a_fake_sampler():
    problems = [PromptItem(f"q{i}", f"question {i}") for i in range(4)]
    golds = ["The sum is 2.\n#### 2", "7", "10", "4"]
    sampler = FakeSampler(
        {
            "q0": [("so #### 2", 5, "stop"), ("#### 9", 3, "stop")],
            "q1": [("#### 8", 9, "stop"), ("#### 7", 4, "stop")],  # only sample 0 counts: wrong
            "q2": [("\\boxed{10}", 4, "stop"), ("#### 1", 2, "stop")],
            "q3": [("still thinking", 12, "length"), ("#### 4", 3, "stop")],  # truncated, no answer
        }
    )
    with get_verifier("exact") as verifier:
        report = evaluate_accuracy(sampler, problems, golds, verifier)
        assert sampler.params == SamplingParams(greedy=True)  # greedy by default
        assert report.outcomes == {"q0": True, "q1": False, "q2": True, "q3": False}
        assert report.lengths == {"q0": 5, "q1": 9, "q2": 4, "q3": 12}
        assert (report.n, report.accuracy, report.truncation_rate) == (4, 0.5, 0.25)
        assert report.mean_length == 7.5 and report.tokens_per_second == 30 / 0.5  # n=1: sample 0 only

        sampled = evaluate_accuracy(sampler, problems, golds, verifier, SamplingParams(n=2, seed=3))
        assert sampler.params.n == 2 and sampled.outcomes == report.outcomes  # sample 0 of each problem

        with pytest.raises(ValueError, match="4 problems but 3 gold answers"):
            evaluate_accuracy(sampler, problems, golds[:3], verifier)
