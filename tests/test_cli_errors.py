"""The command line answers fast and fails in one line: start-up imports, user errors, ``--debug``, fail-fast data checks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefopt.cli import main

REPO = Path(__file__).resolve().parents[1]
GOOD_PAIR = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


def test_help_answers_in_well_under_three_seconds():
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "prefopt", "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert elapsed < 3.0, f"prefopt --help took {elapsed:.1f} s"  # generous: it is ~0.2 s on an idle machine


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"prefopt {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_lc_winrate_on_a_malformed_file_is_one_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "judged.jsonl", [{"output_1": "a", "output_2": "b", "preference": 2}, "{oops"])
    assert main(["eval", "lc-winrate", str(path)]) == 1
    assert "judged.jsonl, row 2: malformed JSON" in one_line_error(capsys, "eval")
    write_jsonl(path, [{"output_1": "a", "preference": 2}])
    assert main(["eval", "lc-winrate", str(path)]) == 1
    assert "judged.jsonl, row 1, field 'output_2': missing" in one_line_error(capsys, "eval")


def test_lc_winrate_selection_errors_are_user_errors(tmp_path, capsys):
    rows = [{"output_1": "a", "output_2": "bb", "preference": 2, "generator_2": g} for g in ("m1", "m2")]
    path = write_jsonl(tmp_path / "judged.jsonl", rows)
    assert main(["eval", "lc-winrate", str(path)]) == 1
    assert "several models" in one_line_error(capsys, "eval")


def test_debias_to_a_txt_file_is_one_line(tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [GOOD_PAIR])
    assert main(["data", "debias", str(pairs), "--out", str(tmp_path / "x.txt")]) == 1
    assert "x.txt: the output must end in .jsonl or .parquet" in one_line_error(capsys, "data")
    assert not (tmp_path / "x.txt").exists()


def test_corrupt_parquet_in_data_inspect_is_one_line(tmp_path, capsys):
    path = tmp_path / "pairs.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    assert main(["data", "inspect", str(path)]) == 1
    assert "pairs.parquet: not a readable parquet file" in one_line_error(capsys, "data")


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_an_empty_data_file_is_an_error_not_no_problems(tmp_path, capsys, content):
    path = tmp_path / "pairs.jsonl"
    path.write_text(content)
    assert main(["data", "inspect", str(path)]) == 1
    assert "pairs.jsonl: contains no rows" in one_line_error(capsys, "data")


def rounds_recipe(tmp_path: Path, train: Path) -> Path:
    recipe = (REPO / "recipes/quickstart.yaml").read_text()
    recipe = recipe.replace("name_or_path: smollm2-135m-instruct", f"name_or_path: {tmp_path / 'no-such-model'}")
    recipe = recipe.replace("train: data/arithmetic/train.jsonl", f"train: {train}")
    path = tmp_path / "rounds.yaml"
    path.write_text(recipe)
    return path


def test_rounds_reports_a_problem_row_before_loading_any_model(tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [{"id": "a", "question": "1+1?", "answer": "2"}, {"id": "b", "answer": "3"}])
    recipe = rounds_recipe(tmp_path, train)
    assert main(["rounds", str(recipe), f"run.output_root={tmp_path / 'runs'}", "--quiet"]) == 1
    err = one_line_error(capsys, "rounds")
    assert "train.jsonl, row 2, field 'question': missing or empty" in err and "no-such-model" not in err


def train_recipe(tmp_path: Path, pairs: Path) -> list[str]:
    return ["train", str(REPO / "recipes/cpu/dpo.yaml"), f"data.train={pairs}",
            f"model.name_or_path={tmp_path / 'no-such-model'}", f"train.output_dir={tmp_path / 'out'}"]


def test_train_reports_a_bad_row_before_loading_any_model(tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "chosen": ""}])
    assert main(train_recipe(tmp_path, pairs)) == 1
    err = one_line_error(capsys, "train")
    assert "pairs.jsonl, row 2, field 'chosen'" in err and "no-such-model" not in err
    # with the data fixed, the (missing) model is what fails next: the data check did not hide it
    write_jsonl(pairs, [GOOD_PAIR])
    assert main(train_recipe(tmp_path, pairs)) == 1
    assert "no-such-model: no such model directory or file" in one_line_error(capsys, "train")


@pytest.mark.parametrize("where", ["first", "after_command", "last"])
def test_debug_shows_the_traceback_wherever_it_is_placed(tmp_path, where):
    from prefopt.config import RecipeError

    argv = ["train", str(tmp_path / "nope.yaml")]
    argv = {"first": ["--debug", *argv], "after_command": [argv[0], "--debug", argv[1]], "last": [*argv, "--debug"]}
    with pytest.raises(RecipeError, match="no such recipe file"):
        main(argv[where])


def test_quiet_and_no_progress_are_one_flag():
    from prefopt.cli import build_parser

    parser = build_parser()
    base = ["annotate", "treg", "--pairs", "p.jsonl", "--model", "m", "--out", "o.jsonl"]
    assert parser.parse_args([*base, "--quiet"]).quiet and parser.parse_args([*base, "--no-progress"]).quiet
    assert not parser.parse_args(base).quiet
    assert parser.parse_args(["rounds", "r.yaml", "--quiet"]).quiet
    for argv in (["data", "inspect", "p.jsonl"], ["data", "debias", "p.jsonl", "--out", "o.jsonl"], base):
        assert parser.parse_args([*argv, "--trust-remote-code"]).trust_remote_code
