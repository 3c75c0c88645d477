"""Verifier: GSM8K/MATH golds from the shared data, answer extraction, hard time limits, registry."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from prefopt.online.answers import extract_answer, extract_gold, last_boxed
from prefopt.online.verifier import (
    VerifierStartupError,
    available_verifiers,
    get_verifier,
    register_verifier,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
LIMIT = 1.0  # seconds per item in these tests (the default is 5)
OVERHEAD = 1.0  # reply latency on a loaded machine (2 cores shared by many test runs)


def rows(name: str, n: int) -> list[dict]:
    with open(DATA / name / "test.jsonl") as fh:
        return [json.loads(next(fh)) for _ in range(n)]


@pytest.fixture(scope="module")
def math_verifier():
    """Default time limit (5 s): correctness checks must not flake on a loaded machine."""
    with get_verifier("math") as verifier:
        yield verifier


@pytest.fixture(scope="module")
def strict_verifier():
    """A short limit for the adversarial inputs; warmed so that worker start-up is not timed."""
    with get_verifier("math", timeout=LIMIT) as verifier:
        verifier.verify(r"\boxed{1}", "1")
        yield verifier


def test_extraction_order_boxed_then_hashes_then_last_number():
    assert last_boxed(r"x \boxed{\frac{1}{2}} then \boxed{a_{1}}") == "a_{1}"
    assert extract_answer(r"#### 5 but \boxed{7}") == "7"
    assert extract_answer("so we get\n#### $1,234.\nDone") == "1234"
    assert extract_answer("I think it is 12, maybe 13.") == "13"
    assert extract_answer("I think it is 13.", fallback="none") is None
    assert extract_gold("blah <<2*3=6>>\n#### 70,000") == "70000"
    assert (
        extract_gold(r"so $\boxed{\left( 3, \frac{\pi}{2} \right)}$.") == r"\left( 3, \frac{\pi}{2} \right)"
    )
    assert extract_gold(r"\frac{14}{3}") == r"\frac{14}{3}"


def test_gsm8k_golds_positive_and_negative(math_verifier):
    data = rows("gsm8k", 4)  # golds 18, 3, 70000, 540
    golds = [r["answer"] for r in data]
    right = [
        r"She makes 9 * 2 = 18 dollars, so the answer is \boxed{18}.",
        "2 + 1 = 3 bolts.\n#### 3",
        "The profit is $70,000.",  # last-number fallback with a thousands separator
        r"\boxed{540 \text{ meters}}",
    ]
    wrong = [r"\boxed{19}", "#### 4", "The profit is $7,000.", "He runs 54 meters."]
    assert [r.correct for r in math_verifier.verify_batch(right, golds)] == [True] * 4
    results = math_verifier.verify_batch(wrong, golds)
    assert [r.correct for r in results] == [False] * 4 and {r.status for r in results} == {"ok"}


def test_math500_golds_positive_and_negative(math_verifier):
    data = rows("math500", 12)
    picks = {0: r"(3, \pi/2)", 2: r"14/3", 8: r"\sqrt{117}", 11: r"\dfrac{3}{56}", 7: r"90^\circ"}
    golds_answer = [data[i]["answer"] for i in picks]
    golds_solution = [data[i]["solution"] for i in picks]  # gold given as the full solution with \boxed{}
    answers = [rf"Therefore the answer is $\boxed{{{a}}}$." for a in picks.values()]
    assert [r.correct for r in math_verifier.verify_batch(answers, golds_answer)] == [True] * 5
    assert [r.correct for r in math_verifier.verify_batch(answers, golds_solution)] == [True] * 5
    wrong = [
        r"\boxed{(3, \pi)}",
        r"\boxed{14/5}",
        r"\boxed{\sqrt{118}}",
        r"\boxed{3/65}",
        r"\boxed{45^\circ}",
    ]
    assert [r.correct for r in math_verifier.verify_batch(wrong, golds_answer)] == [False] * 5


def test_missing_answer_and_unparsable_gold_are_incorrect_with_status(math_verifier):
    no_answer, bad_gold = math_verifier.verify_batch(
        ["no digits here", r"\boxed{3}"], ["#### 3", r"\boxed{}"]
    )
    assert (no_answer.correct, no_answer.status) == (False, "no_answer")
    assert (bad_gold.correct, bad_gold.status) == (False, "parse_error")


ADVERSARIAL = [
    r"\boxed{9^9^9^9}",
    r"\boxed{10**10**10}",
    r"\boxed{" + "(" * 400 + "1" + ")" * 400 + "}",
    r"\boxed{" + r"\frac{1}{" * 150 + "2" + "}" * 150 + "}",
    r"\boxed{1000000!}",
    r"\boxed{(10^{10^{10}})!}",
    "#### " + "9" * 5000,
    r"\boxed{" + "x^" * 300 + "2}",
]


def test_adversarial_answers_return_within_the_limit_and_count_as_incorrect(strict_verifier):
    for answer in ADVERSARIAL:
        start = time.monotonic()
        result = strict_verifier.verify(answer, "#### 1000")
        elapsed = time.monotonic() - start
        assert elapsed < LIMIT + OVERHEAD, (answer[:40], elapsed)
        assert not result.correct, answer[:40]
        assert result.status in {"ok", "timeout", "parse_error"}
    assert strict_verifier.verify(r"\boxed{1000}", "#### 1000").correct  # the worker recovered


def test_timeouts_are_recorded_and_the_batch_goes_on(strict_verifier):
    nested = r"\boxed{" + "(" * 400 + "1" + ")" * 400 + "}"
    results = strict_verifier.verify_batch(
        [nested, r"\boxed{3}", nested, "#### 5"], ["#### 1", "#### 3", "#### 1", "#### 5"]
    )
    assert [r.status for r in results] == ["timeout", "ok", "timeout", "ok"]
    assert [r.correct for r in results] == [False, True, False, True]


def test_exact_match_verifier():
    with get_verifier("exact", ignore_case=True) as verifier:
        results = verifier.verify_batch(
            [r"\boxed{Evelyn}", "#### 18", "nothing"], [r"\text{evelyn}", "#### 18", "x"]
        )
    assert [r.correct for r in results] == [False, True, False]
    assert results[2].status == "no_answer"
    assert get_verifier("exact", extract=False).verify(" a  b ", "a b").correct


def mentions_gold(completion: str, gold: str) -> bool:
    """A user verifier (module level, so the worker can import it).

    ``hang`` sleeps (the in-worker SIGALRM interrupts it); ``hang_hard`` blocks SIGALRM first, like
    a hang inside C code, so only the parent's hard deadline (kill + warm spare) can end it.
    """
    if gold == "hang_hard":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    if gold.startswith("hang"):
        time.sleep(60)
    if gold == "boom":
        raise ValueError("bad row")
    return gold in completion


def test_registered_callable_runs_under_the_time_limit():
    register_verifier("mentions_gold")(mentions_gold)
    assert "mentions_gold" in available_verifiers()
    with get_verifier("mentions_gold", timeout=LIMIT) as verifier:
        start = time.monotonic()
        results = verifier.verify_batch(
            ["says cat", "says dog", "x", "x", "x", "cat!"],
            ["cat", "cat", "hang", "boom", "hang_hard", "cat"],
        )
        elapsed = time.monotonic() - start
    assert [r.correct for r in results] == [True, False, False, False, False, True]
    assert [r.status for r in results] == ["ok", "ok", "timeout", "error", "timeout", "ok"]
    assert "bad row" in results[3].detail
    assert "restarted" in results[4].detail and "interrupted" in results[2].detail
    assert elapsed < 2 * LIMIT + 3 * OVERHEAD


def unimportable_check(completion: str, gold: str) -> bool:
    """Registered below under a module name the worker cannot import."""
    return True


unimportable_check.__module__ = "no_such_module_for_prefopt_tests"


def test_a_worker_that_cannot_start_raises_with_its_stderr():
    register_verifier("unimportable")(unimportable_check)
    verifier = get_verifier("unimportable", timeout=LIMIT)
    with pytest.raises(VerifierStartupError, match="No module named 'no_such_module_for_prefopt_tests'"):
        verifier.verify("a", "b")


def test_registry_errors_are_explicit():
    with pytest.raises(ValueError, match="module level"):
        register_verifier("local")(lambda completion, gold: True)
    with pytest.raises(ValueError, match="already registered"):
        register_verifier("math")(mentions_gold)
    with pytest.raises(KeyError, match="registered verifiers"):
        get_verifier("nope")
    with pytest.raises(TypeError, match="fallback"):
        get_verifier("math", fallback="first_number")
