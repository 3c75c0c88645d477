"""Problem loading: the shared GSM8K and MATH-500 files with the recipes' field settings, and error messages.

The real-data tests read ``../shared/data`` in place (never copied into the repository) and skip
where it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefopt.online.problems import Problem, load_problems
from prefopt.online.verifier import get_verifier

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
GSM8K_TEST = SHARED / "gsm8k" / "test.jsonl"
MATH500 = SHARED / "math500" / "test.jsonl"
# The field settings of recipes/online/gsm8k.yaml and recipes/online/math500.yaml.
GSM8K_FIELDS = {"question_field": "question", "answer_field": "answer", "id_field": None}
MATH_FIELDS = {"question_field": "problem", "answer_field": "solution", "id_field": "unique_id"}
ROWS_CHECKED = 12

needs_shared = pytest.mark.skipif(
    not (GSM8K_TEST.is_file() and MATH500.is_file()),
    reason="../shared/data (GSM8K, MATH-500) is not available",
)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@needs_shared
def test_gsm8k_rows_are_numbered_and_gold_ends_with_the_answer():
    problems = load_problems(GSM8K_TEST, **GSM8K_FIELDS, limit=ROWS_CHECKED)
    first = json.loads(GSM8K_TEST.read_text().splitlines()[0])
    assert [p.id for p in problems] == [str(i) for i in range(ROWS_CHECKED)]
    assert problems[0] == Problem("0", first["question"], first["answer"])
    assert all("\n#### " in p.gold for p in problems)


@needs_shared
def test_math500_ids_and_boxed_solutions():
    problems = load_problems(MATH500, **MATH_FIELDS)
    rows = [json.loads(line) for line in MATH500.read_text().splitlines()]
    assert len(problems) == len(rows) == 500
    assert [p.id for p in problems] == [row["unique_id"] for row in rows]
    assert problems[0].id == "test/precalculus/807.json" and "\\boxed{" in problems[0].gold


@needs_shared
def test_math_verifier_accepts_the_gold_solutions():
    gsm8k = load_problems(GSM8K_TEST, **GSM8K_FIELDS, limit=ROWS_CHECKED)
    math = load_problems(MATH500, **MATH_FIELDS, limit=ROWS_CHECKED)
    answers = [json.loads(line)["answer"] for line in MATH500.read_text().splitlines()[:ROWS_CHECKED]]
    with get_verifier("math", fallback="none") as verifier:
        # A worked solution, given as the completion, is right against itself (`#### N` / last \boxed{}).
        own = verifier.verify_batch([p.gold for p in gsm8k + math], [p.gold for p in gsm8k + math])
        # A model answering MATH-500's curated `answer` in \boxed{} is right against the recipe's gold (`solution`).
        boxed = verifier.verify_batch(
            [f"The answer is $\\boxed{{{a}}}$." for a in answers], [p.gold for p in math]
        )
        # And a wrong number is not.
        wrong = verifier.verify_batch(
            [f"#### {int(p.gold.rsplit('####', 1)[1].replace(',', '')) + 1}" for p in gsm8k],
            [p.gold for p in gsm8k],
        )
    assert [r.status for r in own + boxed] == ["ok"] * (3 * ROWS_CHECKED)
    assert all(r.correct for r in own + boxed)
    assert not any(r.correct for r in wrong)


def test_prompt_item_appends_the_instruction():
    problem = Problem("p1", "What is 2 + 3?", "5")
    assert problem.prompt_item("Answer after ####.").prompt == [
        {"role": "user", "content": "What is 2 + 3?\nAnswer after ####."}
    ]
    assert problem.prompt_item().prompt == [{"role": "user", "content": "What is 2 + 3?"}]
    assert problem.prompt_item().id == "p1"


def test_local_formats_ids_and_limit(tmp_path):
    rows = [{"id": f"q{i}", "question": f"question {i}", "answer": str(i)} for i in range(4)]
    jsonl = write_rows(tmp_path / "p.jsonl", rows)
    array = tmp_path / "p.json"
    array.write_text(json.dumps(rows))
    from datasets import Dataset

    parquet = tmp_path / "p.parquet"
    Dataset.from_list(rows).to_parquet(str(parquet))
    for path in (jsonl, array, parquet):
        assert [p.id for p in load_problems(path)] == ["q0", "q1", "q2", "q3"], path.suffix
    assert [p.id for p in load_problems(jsonl, id_field=None)] == ["0", "1", "2", "3"]
    assert [p.id for p in load_problems(jsonl, id_field="missing")] == ["0", "1", "2", "3"]  # rows lack it
    assert [p.gold for p in load_problems(jsonl, limit=2)] == ["0", "1"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"id": "b", "answer": "2"}, "question"),
        ({"id": "b", "question": "  ", "answer": "2"}, "question"),
        ({"id": "b", "question": "q", "answer": ""}, "answer"),
        ({"id": "b", "question": "q", "answer": 2}, "answer"),  # not a string
    ],
)
def test_missing_or_empty_field_names_file_row_and_field(tmp_path, row, field):
    path = write_rows(tmp_path / "bad.jsonl", [{"id": "a", "question": "q", "answer": "1"}, row])
    with pytest.raises(ValueError, match=rf"bad\.jsonl, row 2, field '{field}': missing or empty") as info:
        load_problems(path)
    assert "fields present" in str(info.value) and "question_field" in str(info.value)


def test_row_without_id_names_file_row_and_field(tmp_path):
    path = write_rows(
        tmp_path / "ids.jsonl",
        [{"id": "a", "question": "q", "answer": "1"}, {"question": "q2", "answer": "2"}],
    )
    with pytest.raises(ValueError, match=r"ids\.jsonl, row 2, field 'id': missing.*id_field: null"):
        load_problems(path)


def test_duplicate_ids_are_rejected(tmp_path):
    rows = [{"id": i, "question": f"q{n}", "answer": "1"} for n, i in enumerate(["a", "b", "a"])]
    path = write_rows(tmp_path / "dup.jsonl", rows)
    with pytest.raises(
        ValueError, match=r"dup\.jsonl, row 3, field 'id': problem id 'a' repeats row 1.*id_field: null"
    ):
        load_problems(path)
    assert len(load_problems(path, id_field=None)) == 3


def test_missing_file_and_corrupt_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.jsonl: no such file"):
        load_problems(tmp_path / "nothere.jsonl")
    bad = tmp_path / "corrupt.jsonl"
    bad.write_text('{"id": "a", "question": "q", "answer": "1"}\n\n{"id": "b", "question":\n')
    with pytest.raises(ValueError, match=r"corrupt\.jsonl, row 3: malformed JSON"):
        load_problems(bad)
