"""inspect_pairs and the ``prefopt data inspect`` command."""

from __future__ import annotations

import argparse
import json

import datasets
import pytest

from prefopt.cli import main
from prefopt.commands import data as data_command
from prefopt.data import inspect_pairs

# Valid rows: chars (prompt, chosen, rejected) = (2, 3, 2), (6, 2, 5), (3, 7, 2); with the byte-level tiny
# tokenizer the completions gain one EOS token each.
ROWS = [
    {"prompt": "Q?", "chosen": "yes", "rejected": "no"},
    {"prompt": "Hello?", "chosen": "ok", "rejected": "fine!"},
    {"prompt": "Why", "chosen": "because", "rejected": "no"},
    {"prompt": "Same?", "chosen": "same", "rejected": "same"},
]


@pytest.fixture()
def pairs_path(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_counts_and_char_stats(pairs_path):
    result = inspect_pairs(pairs_path)
    assert (result["rows"], result["valid_pairs"], result["invalid_rows"]) == (4, 3, 1)
    assert result["format"] == "standard"
    # prompt chars [2, 6, 3]: mean 11/3, median 3, p90 = 3 + 0.8 * (6 - 3) (linear interpolation), max 6
    assert result["chars"]["prompt"] == {"mean": 3.7, "median": 3.0, "p90": pytest.approx(5.4), "max": 6}
    assert result["chars_comparison"] == {"chosen_longer": 0.6667, "equal": 0.0}
    assert result["problems_total"] == 1 and result["problems_by_reason"] == {"identical": 1}
    assert result["problems"][0]["row"] == 4 and result["problems"][0]["field"] == "rejected"
    assert "tokens" not in result


def test_token_stats(pairs_path, tiny_tokenizer):
    result = inspect_pairs(pairs_path, tokenizer=tiny_tokenizer)
    assert result["tokens"]["chosen"] == {"mean": 5.0, "median": 4.0, "p90": pytest.approx(7.2), "max": 8}
    assert result["tokens"]["rejected"]["max"] == 6
    assert result["tokens_comparison"]["chosen_longer"] == 0.6667


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="prefopt")
    data_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_text_and_json(pairs_path, tiny_tokenizer, tmp_path, capsys):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    assert run_cli(["data", "inspect", str(pairs_path), "--tokenizer", str(tmp_path / "tok")]) == 1
    text = capsys.readouterr().out
    assert f"{pairs_path}: 4 rows, 3 valid pairs, 1 invalid; format standard" in text
    assert "chosen longer than rejected (chars): 66.7% (equal: 0.0%)" in text
    assert f"tokenizer: {tmp_path / 'tok'}" in text and "problems: 1 (identical: 1)" in text
    assert f"{pairs_path}, row 4, field 'rejected': chosen and rejected are identical" in text

    assert run_cli(["data", "inspect", str(pairs_path), "--json", "--max-problems", "0"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["valid_pairs"] == 3 and result["problems"] == [] and result["problems_total"] == 1


def test_cli_clean_file_exits_zero(tmp_path, capsys):
    path = tmp_path / "clean.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    assert run_cli(["data", "inspect", str(path)]) == 0
    assert "problems: none" in capsys.readouterr().out


def test_cli_dataset_dict_without_split_is_a_one_line_error(tmp_path, capsys):
    splits = {"train": datasets.Dataset.from_list(ROWS[:1]), "test": datasets.Dataset.from_list(ROWS[1:2])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dsdict"))
    assert main(["data", "inspect", str(tmp_path / "dsdict")]) == 1  # through prefopt's error handling
    err = capsys.readouterr().err
    assert "pass split=... (--split), one of ['test', 'train']" in err and "Traceback" not in err
