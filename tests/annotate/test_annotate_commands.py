"""``prefopt annotate cdr|treg`` end to end on tiny models saved to disk."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import make_tiny_model, make_tiny_tokenizer

from prefopt.commands import annotate


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    annotate.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["annotate", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("models")
    dirs = []
    for seed, templated in ((0, True), (1, False)):
        tokenizer = make_tiny_tokenizer()
        if not templated:
            tokenizer.chat_template = None
        path = root / f"tiny{seed}"
        make_tiny_model(tokenizer, seed=seed).save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs.append(str(path))
    return dirs[0], dirs[1]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_cdr_relabel_and_candidates(tmp_path, model_dirs, capsys):
    strong, weak = model_dirs
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": f"Q{i}?", "chosen": f"Answer {i}.", "rejected": "No." * (i + 1)} for i in range(4)],
    )
    out = tmp_path / "relabel.jsonl"
    assert (
        run(
            [
                "cdr",
                "--strong",
                strong,
                "--weak",
                weak,
                "--pairs",
                pairs,
                "--criteria",
                "chat",
                "--on-disagree",
                "flip",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "relabel.report.json").read_text())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and report["n_flipped"] == 4 - report["n_agree"]
    assert all(r["meta"]["cdr_chosen"] > r["meta"]["cdr_rejected"] for r in rows)
    assert "CDR agrees with the labels on" in capsys.readouterr().out
    assert len((tmp_path / "relabel.scores.jsonl").read_text().splitlines()) == 16  # 8 responses x 2 models

    candidates = write_jsonl(
        tmp_path / "cands.jsonl", [{"prompt": "Hi", "candidates": ["Hello", "Hey there", "..."]}]
    )
    out = tmp_path / "pairs.parquet"
    assert (
        run(
            [
                "cdr",
                "--strong",
                strong,
                "--weak",
                weak,
                "--candidates",
                candidates,
                "--normalize",
                "sum",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    from prefopt.data import load_pairs

    loaded = load_pairs(out)
    assert len(loaded) == 1 and loaded[0]["meta"]["n_candidates"] == 3


def test_treg_writes_rewards_the_data_pipeline_accepts(tmp_path, model_dirs):
    strong, _ = model_dirs
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": f"Q{i}?"}],
                "chosen": [{"role": "assistant", "content": f"A{i}."}],
                "rejected": [{"role": "assistant", "content": "No idea, sorry."}],
            }
            for i in range(3)
        ],
    )
    out = tmp_path / "treg.jsonl"
    assert (
        run(["treg", "--model", strong, "--pairs", pairs, "--out", str(out), "--limit", "2", "--quiet"])
        == 0
    )
    from prefopt.data import load_pairs, tokenize_pairs
    from prefopt.models import load_tokenizer

    tokenized, _ = tokenize_pairs(load_pairs(out), load_tokenizer(strong))
    assert len(tokenized) == 2
    assert [len(r) for r in tokenized["chosen_token_rewards"]] == [len(r) for r in tokenized["chosen_ids"]]


def test_invalid_pairs_fail_unless_dropped(tmp_path, model_dirs):
    from prefopt.data import DataValidationError

    strong, weak = model_dirs
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "Q1?", "chosen": "Yes.", "rejected": "No."},
            {"prompt": "Q2?", "chosen": "", "rejected": "No."},
        ],
    )
    out = tmp_path / "relabel.jsonl"
    argv = ["cdr", "--strong", strong, "--weak", weak, "--pairs", pairs, "--out", str(out), "--no-progress"]
    with pytest.raises(DataValidationError, match="row 2"):
        run(argv)
    assert run([*argv, "--drop-invalid"]) == 0
    assert json.loads((tmp_path / "relabel.report.json").read_text())["n_pairs"] == 1
