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
)
from prefopt.online.types import Rollout
from prefopt.online.verifier import get_verifier
from prefopt.sampling import PromptItem, SamplerStats, SamplingParams
from prefopt.stats import wilson_interval


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


def test_pass_at_k_matches_the_combinatorial_definition():
    from itertools import combinations

    from prefopt.evaluate.accuracy import pass_at_k

    samples = [True, False, False, True, False]
    for k in range(1, 6):
        draws = list(combinations(samples, k))
        assert pass_at_k(5, 2, k) == pytest.approx(sum(any(d) for d in draws) / len(draws))
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    with pytest.raises(ValueError, match="0 < k <= n"):
        pass_at_k(2, 1, 3)


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

        assert [c["prompt_id"] for c in report.completions] == ["q0", "q1", "q2", "q3"]
        assert report.completions[0] == {"prompt_id": "q0", "sample_index": 0, "completion": "so #### 2",
                                         "extracted": "2", "correct": True, "verify_status": "ok", "length": 5,
                                         "finish_reason": "stop"}
        assert report.completions[3]["finish_reason"] == "length" and not report.completions[3]["correct"]
        assert (report.samples, report.mean_at_n, report.pass_at_k) == (1, None, {})

        sampled = evaluate_accuracy(sampler, problems, golds, verifier, SamplingParams(n=2, seed=3))
        assert sampler.params.n == 2 and sampled.outcomes == report.outcomes  # sample 0 of each problem
        assert len(sampled.completions) == 8 and sampled.samples == 2
        # right per problem: q0 1/2, q1 1/2, q2 1/2, q3 1/2 -> mean@2 = 0.5; pass@2 = 1 for each
        assert sampled.mean_at_n == 0.5 and sampled.pass_at_k == {"1": 0.5, "2": 1.0}
        assert AccuracyReport.from_dict(sampled.to_dict()) == sampled
        assert "completions" not in sampled.summary() and sampled.summary()["pass_at_k"] == {"1": 0.5, "2": 1.0}

        with pytest.raises(ValueError, match="4 problems but 3 gold answers"):
            evaluate_accuracy(sampler, problems, golds[:3], verifier)


def test_evaluation_never_credits_a_truncated_answer_by_default():
    """A greedy answer cut at the limit right after the gold number ("so \\boxed{4" / "... 4") is incorrect
    under the default policy (as in training), and verified as is with ``truncated="verify"``."""
    problems = [PromptItem("q0", "question 0"), PromptItem("q1", "question 1")]
    sampler = FakeSampler({"q0": [("#### 4", 12, "length")], "q1": [("#### 4", 3, "stop")]})
    with get_verifier("exact") as verifier:
        strict = evaluate_accuracy(sampler, problems, ["4", "4"], verifier)
        lenient = evaluate_accuracy(sampler, problems, ["4", "4"], verifier, truncated="verify")
    assert strict.outcomes == {"q0": False, "q1": True} and strict.completions[0]["verify_status"] == "truncated"
    assert lenient.outcomes == {"q0": True, "q1": True}
