"""The arithmetic generator: deterministic, disjoint splits, correct gold answers, valid pairs."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_arithmetic", DATA / "make_arithmetic.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _load_generator()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_committed_files_match_the_generator(gen, tmp_path):
    gen.main(["--out", str(tmp_path)])
    for rel in ("arithmetic/train.jsonl", "arithmetic/heldout.jsonl", "arithmetic_pairs.jsonl"):
        assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), f"data/{rel} is stale; rerun the generator"


def test_splits_are_disjoint_with_unique_ids():
    train, heldout = _rows(DATA / "arithmetic/train.jsonl"), _rows(DATA / "arithmetic/heldout.jsonl")
    assert (len(train), len(heldout)) == (2000, 200)
    assert not {r["question"] for r in train} & {r["question"] for r in heldout}
    ids = [r["id"] for r in train + heldout]
    assert len(ids) == len(set(ids))
    assert {r["difficulty"] for r in train} == {1, 2, 3}
    assert all(set(r) == {"id", "question", "answer", "difficulty"} for r in train + heldout)


def test_gold_answer_equals_the_worked_arithmetic(gen):
    """The concise solution's equations, evaluated, must end at the gold answer."""
    import random

    rng = random.Random(123)
    for difficulty in (1, 2, 3):
        for _ in range(50):
            question, answer, steps = gen.make_problem(rng, difficulty)
            assert len(steps) == (2 if difficulty == 3 else 1)
            if difficulty == 1:  # one small addition
                assert steps[0].expression.split()[1] == "+" and max(int(n) for n in re.findall(r"\d+", question)) <= 10
            value = int(re.match(r"\w+ has (\d+)", question).group(1))
            for step in steps:
                left, op, right = step.expression.split()
                assert int(left) == value
                value = {"+": value + int(right), "-": value - int(right), "*": value * int(right)}[op]
                assert value == step.value > 0
            assert value == answer
            assert gen.concise_solution(steps, answer).endswith(f"#### {answer}")


def test_pairs_are_conversational_and_prefer_the_short_correct_answer():
    pairs = _rows(DATA / "arithmetic_pairs.jsonl")
    assert len(pairs) == 500
    train = {r["question"]: r["answer"] for r in _rows(DATA / "arithmetic/train.jsonl")}
    n_verbose = 0
    for pair in pairs:
        assert [m["role"] for m in pair["prompt"]] == ["user"]
        question = pair["prompt"][0]["content"].split("\n")[0]
        gold = train[question]
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert chosen.endswith(f"#### {gold}")
        if rejected.endswith(f"#### {gold}"):
            n_verbose += 1
            assert len(rejected) > 2 * len(chosen)
    assert 0.4 < n_verbose / len(pairs) < 0.8


def test_bad_mix_is_rejected(gen):
    with pytest.raises(ValueError, match="LEVEL:WEIGHT"):
        gen._parse_mix("4:1.0")
