"""The arithmetic generators: deterministic, disjoint splits, correct gold answers, valid pairs, and an
out-of-template set that shares no fixed word sequence with the training templates."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


SPLITS = ("train", "validation", "test", "validation_oot", "test_oot")


def _load_generator(name: str):
    spec = importlib.util.spec_from_file_location(name, DATA / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _load_generator("make_arithmetic")


@pytest.fixture(scope="module")
def oot():
    return _load_generator("make_arithmetic_oot")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_committed_files_match_the_generators(gen, oot, tmp_path):
    gen.main(["--out", str(tmp_path)])
    oot.main(["--out", str(tmp_path)])
    for rel in [f"arithmetic/{split}.jsonl" for split in SPLITS] + ["arithmetic_pairs.jsonl"]:
        assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), f"data/{rel} is stale; rerun the generator"


def test_splits_are_disjoint_with_unique_ids():
    splits = {name: _rows(DATA / f"arithmetic/{name}.jsonl") for name in SPLITS}
    assert {name: len(rows) for name, rows in splits.items()} == {
        "train": 2000, "validation": 200, "test": 200, "validation_oot": 200, "test_oot": 200}
    questions = [r["question"] for rows in splits.values() for r in rows]
    ids = [r["id"] for rows in splits.values() for r in rows]
    assert len(questions) == len(set(questions)) and len(ids) == len(set(ids))
    for name, rows in splits.items():
        assert all(r["id"].startswith(f"{name}-") for r in rows)
        assert {r["difficulty"] for r in rows} == {1, 2, 3}
        assert all(set(r) == {"id", "question", "answer", "difficulty"} for r in rows)


def test_test_split_does_not_change_train_or_validation(gen):
    small = gen.generate(0, 50, 10, 5, 5, gen.DEFAULT_MIX)
    large = gen.generate(0, 50, 10, 40, 5, gen.DEFAULT_MIX)
    assert small[0] == large[0] and small[1] == large[1] and small[3] == large[3]
    assert small[2] == large[2][:5]


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
        gen.parse_mix("4:1.0")


def _words(text: str) -> list[str]:
    return re.findall(r"<\w+>|[a-z]+", re.sub(r"\d+", " <n> ", text.lower()))


def _training_fixed_sequences(gen) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """The training templates' fixed parts, read off the training questions.

    Names, items and numbers are the templates' slots. Returns the runs of two or more consecutive
    fixed words ("how many", "have now", "doubles the", "ends up with", ...) and the fixed words
    next to a number slot ("has <n>", "<n> more", "<n> times", ...).
    """
    slots = {**{n.lower(): "<name>" for n in gen.NAMES}, **{i: "<item>" for i in gen.ITEMS}}
    runs: set[tuple[str, ...]] = set()
    number_frames: set[tuple[str, ...]] = set()
    for row in _rows(DATA / "arithmetic/train.jsonl"):
        for sentence in re.split(r"[.?]", row["question"]):
            tokens = [slots.get(w, w) for w in _words(sentence)]
            run: list[str] = []
            for token in tokens + ["<end>"]:
                if token.startswith("<"):
                    if len(run) >= 2:
                        runs.add(tuple(run))
                    run = []
                else:
                    run.append(token)
            for left, right in zip(tokens, tokens[1:]):
                if (left == "<n>") != (right == "<n>") and not {left, right} & {"<name>", "<item>"}:
                    number_frames.add((left, right))
    return runs, number_frames


def _contains(tokens: list[str], sequence: tuple[str, ...]) -> bool:
    return any(tuple(tokens[i : i + len(sequence)]) == sequence for i in range(len(tokens)))


def test_out_of_template_questions_share_no_fixed_words_with_the_training_templates(gen):
    runs, number_frames = _training_fixed_sequences(gen)
    assert {("how", "many"), ("have", "now"), ("ends", "up", "with"), ("is", "given")} <= runs
    assert {("has", "<n>"), ("<n>", "more"), ("<n>", "times")} <= number_frames
    slot_words = {n.lower() for n in gen.NAMES} | set(gen.ITEMS)
    for split in ("validation_oot", "test_oot"):
        for row in _rows(DATA / f"arithmetic/{split}.jsonl"):
            tokens = _words(row["question"])
            assert not slot_words & set(tokens), (row["id"], slot_words & set(tokens))
            for sequence in runs | number_frames:
                assert not _contains(tokens, sequence), (row["id"], " ".join(sequence))


def test_out_of_template_gold_is_the_arithmetic_of_the_question(oot):
    """Same arithmetic as training: the question's numbers are the start and the operands, in the
    levels' ranges, and the steps evaluated end at the gold."""
    import random

    rng = random.Random(7)
    scenes = set()
    for difficulty in (1, 2, 3):
        for _ in range(300):
            question, answer, steps = oot.make_problem(rng, difficulty)
            scenes.add(question.split()[1])
            assert len(steps) == (2 if difficulty == 3 else 1)
            value = int(steps[0].expression.split()[0])
            operands = []
            for step in steps:
                left, op, right = step.expression.split()
                assert int(left) == value and (op == "+" or difficulty > 1)
                operands.append(int(right))
                value = {"+": value + int(right), "-": value - int(right), "*": value * int(right)}[op]
                assert value == step.value > 0
            assert value == answer
            numbers = sorted(int(n) for n in re.findall(r"\d+", question))
            assert numbers == sorted([int(steps[0].expression.split()[0]), *operands]), question
            limit = 10 if difficulty == 1 else 20
            assert int(steps[0].expression.split()[0]) <= limit
            for step in steps:  # the training ranges: additions up to the level's limit, factors up to 5
                _, op, right = step.expression.split()
                if op != "-":  # a subtraction is bounded by the running total (checked above: it stays > 0)
                    assert int(right) <= {"+": limit, "*": 5}[op]
    assert len(scenes) >= 8  # many different openings, not one story

