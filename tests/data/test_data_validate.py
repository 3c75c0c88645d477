"""Every validation problem names file, row and field; default mode raises, drop mode counts."""

from __future__ import annotations

import json
import logging

import pytest

from prefopt.data import DataValidationError, load_pairs, validate_pairs

GOOD = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}
USER = {"role": "user", "content": "Q?"}
ASSISTANT_A = {"role": "assistant", "content": "A"}
ASSISTANT_B = {"role": "assistant", "content": "B"}


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


# (raw jsonl line, expected field, expected reason); the line number is the position + 1.
STANDARD_CASES = [
    (line(GOOD), None, None),
    (b'{"prompt": "Q?", "chosen": "yes",\n', None, "malformed_json"),
    (b'{"prompt": "Q\xff?", "chosen": "yes", "rejected": "no"}\n', None, "invalid_utf8"),
    (line({"prompt": "Q?", "rejected": "no"}), "chosen", "missing_field"),
    (line({"prompt": "Q?", "chosen": 3, "rejected": "no"}), "chosen", "wrong_type"),
    (line({"prompt": "Q?", "chosen": "  ", "rejected": "no"}), "chosen", "empty_completion"),
    (line({"prompt": "Q?", "chosen": "same", "rejected": "same"}), "rejected", "identical"),
    (line({"prompt": "", "chosen": "yes", "rejected": "no"}), "prompt", "empty_prompt"),
    (line({**GOOD, "weight": -1}), "weight", "wrong_type"),
    (line({**GOOD, "chosen_token_rewards": ["x"]}), "chosen_token_rewards", "wrong_type"),
    (line({**GOOD, "prompt": [USER]}), "prompt", "inconsistent_format"),
    (line([1, 2]), None, "wrong_type"),
    (line({"prompt": "Q?", "chosen": "bad \ud800 surrogate", "rejected": "no"}), "chosen", "invalid_utf8"),
]

CONVERSATIONAL_CASES = [
    ({"prompt": [USER], "chosen": [ASSISTANT_A], "rejected": [ASSISTANT_B]}, None, None),
    ({"prompt": [USER], "chosen": [USER], "rejected": [ASSISTANT_B]}, "chosen[0].role", "wrong_role"),
    (
        {"prompt": [{"role": "robot", "content": "x"}], "chosen": [ASSISTANT_A], "rejected": [ASSISTANT_B]},
        "prompt[0].role",
        "wrong_role",
    ),
    (
        {
            "prompt": [USER, {"role": "system", "content": "late"}, USER],
            "chosen": [ASSISTANT_A],
            "rejected": [ASSISTANT_B],
        },
        "prompt[1].role",
        "wrong_role",
    ),
    (
        {"prompt": [USER, ASSISTANT_A], "chosen": [ASSISTANT_A], "rejected": [ASSISTANT_B]},
        "prompt[1].role",
        "wrong_role",
    ),
    (
        {"prompt": [USER], "chosen": [{"role": "assistant"}], "rejected": [ASSISTANT_B]},
        "chosen[0]",
        "wrong_type",
    ),
    (
        {"prompt": [USER], "chosen": [{"role": "assistant", "content": 5}], "rejected": [ASSISTANT_B]},
        "chosen[0].content",
        "wrong_type",
    ),
    ({"prompt": [USER], "chosen": [], "rejected": [ASSISTANT_B]}, "chosen", "empty_completion"),
]


def check_problems(path, report, cases):
    expected = [(i + 1, field, reason) for i, (_, field, reason) in enumerate(cases) if reason is not None]
    assert [(p.row, p.field, p.reason) for p in report.problems] == expected
    for problem in report.problems:
        text = str(problem)
        assert str(path) in text and f"row {problem.row}" in text
        if problem.field is not None:
            assert f"field '{problem.field}'" in text


def test_standard_problems_name_file_row_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(raw for raw, _, _ in STANDARD_CASES))
    report = validate_pairs(path)
    assert report.format == "standard"
    check_problems(path, report, STANDARD_CASES)
    assert len(report.pairs) == 1 and report.n_rows == len(STANDARD_CASES)


def test_conversational_role_problems(tmp_path):
    path = tmp_path / "bad_roles.jsonl"
    path.write_bytes(b"".join(line(row) for row, _, _ in CONVERSATIONAL_CASES))
    check_problems(path, validate_pairs(path), CONVERSATIONAL_CASES)


def test_implicit_and_hh_pairs_that_differ_before_the_last_turn(tmp_path):
    implicit = {
        "chosen": [USER, ASSISTANT_A, USER, ASSISTANT_A],
        "rejected": [USER, ASSISTANT_B, USER, ASSISTANT_A],
    }
    report = validate_pairs([implicit])
    # The shared prefix is [USER]; index 2 of each full list is the user turn inside the completion.
    assert [(p.field, p.reason) for p in report.problems] == [
        ("chosen[2].role", "wrong_role"),
        ("rejected[2].role", "wrong_role"),
    ]
    hh = {
        "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
        "rejected": "\n\nHuman: a\n\nAssistant: x\n\nHuman: c\n\nAssistant: d",
    }
    [problem] = validate_pairs([hh]).problems
    assert (problem.row, problem.field, problem.reason) == (1, "chosen", "wrong_role")


def test_unrecognized_format():
    report = validate_pairs([{"chosen": "plain text", "rejected": "other"}])
    assert report.format is None
    assert [(p.field, p.reason) for p in report.problems] == [("prompt", "missing_field")]


def test_prompt_over_token_budget(tiny_tokenizer):
    rows = [GOOD, {"prompt": "a much longer prompt", "chosen": "yes", "rejected": "no"}]
    report = validate_pairs(rows, tokenizer=tiny_tokenizer, max_prompt_length=5)
    [problem] = report.problems
    assert (problem.row, problem.field, problem.reason) == (2, "prompt", "prompt_too_long")
    assert "20 tokens > max_prompt_length=5" in problem.message


def test_default_raises_with_every_problem(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_bytes(
        line(GOOD) + b"".join(line({"prompt": "Q?", "chosen": "x", "rejected": "x"}) for _ in range(25))
    )
    with pytest.raises(DataValidationError) as info:
        load_pairs(path)
    err = info.value
    assert len(err.problems) == 25 and err.n_rows == 26
    message = str(err)
    assert "25 problem(s) in 25 of 26 row(s) (identical: 25)" in message
    assert f"{path}, row 2, field 'rejected'" in message and "... and 5 more" in message
    assert "drop_invalid=True" in message


def test_drop_invalid_reports_counts_by_reason(tmp_path, caplog):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(raw for raw, _, _ in STANDARD_CASES))
    with caplog.at_level(logging.WARNING, logger="prefopt.data.validate"):
        ds = load_pairs(path, drop_invalid=True)
    assert ds.num_rows == 1
    report = validate_pairs(path)
    assert report.dropped_by_reason() == {
        "wrong_type": 4,
        "invalid_utf8": 2,
        "malformed_json": 1,
        "missing_field": 1,
        "empty_completion": 1,
        "identical": 1,
        "empty_prompt": 1,
        "inconsistent_format": 1,
    }
    assert "dropped 12 of 13 rows (wrong_type: 4, invalid_utf8: 2" in caplog.text


def test_all_rows_invalid_still_raises_in_drop_mode():
    with pytest.raises(DataValidationError, match="No valid pairs"):
        load_pairs([{"prompt": "Q?", "chosen": "x", "rejected": "x"}], drop_invalid=True)
