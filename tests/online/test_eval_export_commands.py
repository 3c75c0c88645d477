"""``prefopt eval accuracy`` and ``prefopt export`` on the tiny model: the shared GSM8K / MATH-500 copies,
sampled pass@k, rounds of a run (``RUN@ROUND``), paired comparisons, the exported directory, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_rounds import recipe_file  # noqa: F401  (the rounds tests' tiny recipe; registers its reward)

from prefopt.cli import main

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "gsm8k").is_dir(), reason="../shared/data is not available")
FAST = ["--max-new-tokens", "4", "--batch-size", "2", "--quiet"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@needs_shared
def test_gsm8k_greedy_with_vs_writes_every_completion(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "gsm8k.json"
    status, stdout, _ = run(capsys, "eval", "accuracy", tiny_model_dir, SHARED / "gsm8k" / "test.jsonl", "--limit", 3,
                            "--vs", tiny_model_dir, "--out", out, *FAST)
    assert status == 0
    result = json.loads(out.read_text())
    assert result["n_problems"] == 3 and result["settings"]["greedy"] is True
    completions = result["model"]["completions"]
    assert [c["prompt_id"] for c in completions] == ["0", "1", "2"]  # GSM8K has no ids: row numbers
    assert all(c["length"] <= 4 and c["finish_reason"] in ("stop", "length") for c in completions)
    assert result["model"]["instruction"].endswith("after ####.")  # the GSM8K format's default
    # the same model against itself: identical greedy answers, no discordant problems
    assert result["paired_difference"] == {"model_minus_vs": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                                           "mcnemar_p_value": 1.0, "model_only": 0, "vs_only": 0, "n": 3}
    assert "accuracy 0.0% [95% CI 0.0, 56.1] on 3 problems" in stdout and "McNemar p=1" in stdout


@needs_shared
def test_math500_format_is_detected_and_sampling_gives_pass_at_k(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "math.json"
    status, stdout, _ = run(capsys, "eval", "accuracy", tiny_model_dir, SHARED / "math500" / "test.jsonl",
                            "--limit", 2, "--n", 4, "--temperature", 0.9, "--out", out, *FAST)
    assert status == 0
    result = json.loads(out.read_text())
    model = result["model"]
    assert model["instruction"].endswith("\\boxed{}.") and model["samples"] == 4
    assert sorted(model["pass_at_k"]) == ["1", "2", "4"] and 0 <= model["mean_at_n"] <= 1
    assert len(model["completions"]) == 8 and {c["prompt_id"] for c in model["completions"]} == {
        "test/precalculus/807.json", "test/intermediate_algebra/1994.json"}
    assert "4 samples each (accuracy: sample 0): mean@4" in stdout and "pass@4" in stdout
    status, stdout, _ = run(capsys, "eval", "accuracy", tiny_model_dir, SHARED / "math500" / "test.jsonl",
                            "--limit", 1, "--json", "--out", tmp_path / "one.json", *FAST)
    summary = json.loads(stdout)
    assert status == 0 and summary["n_problems"] == 1 and summary["model"]["n"] == 1
    assert "completions" not in summary["model"] and "outcomes" not in summary["model"]


@pytest.fixture()
def trained_run(recipe_file):  # noqa: F811
    """A one-round run of the rounds tests' tiny recipe (rounds 0 and 1 exist)."""
    assert main(["rounds", str(recipe_file), "rounds.count=1", "--quiet"]) == 0
    return recipe_file.parent / "runs" / "tiny", recipe_file.parent / "test.jsonl"


def test_rounds_of_a_run_export_and_evaluate(trained_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefopt.online.round_policy import load_round

    root, problems = trained_run
    capsys.readouterr()
    exported = tmp_path / "exported"
    status, stdout, _ = run(capsys, "export", f"{root}@1", exported)
    assert status == 0 and "AutoModelForCausalLM.from_pretrained" in stdout
    assert (exported / "model.safetensors").is_file() and not (exported / "adapter_config.json").exists()
    assert exported.stat().st_mode & 0o755 == 0o755 and (exported / "model.safetensors").stat().st_mode & 0o644 == 0o644
    model = AutoModelForCausalLM.from_pretrained(exported)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    policy, _, recipe = load_round(f"{root}@1")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Tom has 3 apples."}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, policy(ids).logits)  # the merged round-1 policy, exactly
        initial, _, _ = load_round(f"{root}@0")
        assert not torch.equal(initial(ids).logits, policy(ids).logits)  # training changed it
    assert json.loads((exported / "prefopt_export.json").read_text())["source"] == f"{root}@1"
    # exporting onto a non-empty directory is refused
    status, _, err = run(capsys, "export", f"{root}@1", exported)
    assert status == 1 and "exists and is not empty" in err

    out = tmp_path / "r1.json"  # the run's own evaluation settings: the same answers as its eval.json
    status, stdout, _ = run(capsys, "eval", "accuracy", f"{root}@1", problems, "--vs", f"{root}@0", "--out", out,
                            "--verifier", "exact", "--max-new-tokens", 5, "--batch-size", 2, "--quiet")
    assert status == 0
    result = json.loads(out.read_text())
    assert result["model"]["instruction"] == "Answer after ####."  # the run's own instruction
    assert result["model"]["model"] == f"{root}@1" and result["vs"]["model"] == f"{root}@0"
    for role, index in (("model", 1), ("vs", 0)):
        logged = json.loads((root / f"round_{index:03d}" / "eval.json").read_text())["sets"]["test"]
        assert [c["completion"] for c in result[role]["completions"]] == [c["completion"] for c in logged["completions"]]
        assert result[role]["accuracy"] == logged["accuracy"]
    assert result["paired_difference"]["n"] == 3
    # the exported round answers exactly as the round does, with the run's instruction it carries
    status, _, _ = run(capsys, "eval", "accuracy", exported, problems, "--vs", f"{root}@1", "--out", out,
                       "--verifier", "exact", "--max-new-tokens", 5, "--batch-size", 2, "--quiet")
    result = json.loads(out.read_text())
    assert status == 0 and result["model"]["instruction"] == "Answer after ####."
    assert result["model"]["completions"] == result["vs"]["completions"]

    status, _, err = run(capsys, "eval", "accuracy", f"{root}@5", problems, *FAST)
    assert status == 1 and "round 5 has not been trained" in err and err.count("\n") == 1
    status, _, err = run(capsys, "export", f"{tmp_path}@1", tmp_path / "x")
    assert status == 1 and "is not a prefopt rounds run directory" in err


def test_bad_inputs_are_one_line_errors(tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    status, _, err = run(capsys, "eval", "accuracy", tiny_model_dir, missing, *FAST)
    assert status == 1 and "no such file or directory" in err and err.count("\n") == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    status, _, err = run(capsys, "eval", "accuracy", tiny_model_dir, bad, *FAST)
    assert status == 1 and "bad.jsonl, row 2, field 'answer'" in err
    status, _, err = run(capsys, "eval", "accuracy", tiny_model_dir, bad, "--limit", "0", *FAST)
    assert status == 2 and "--limit must be at least 1, got 0" in err
    status, _, err = run(capsys, "eval", "accuracy", tiny_model_dir, bad, "--verifier", "nope", *FAST)
    assert status == 2 and "--verifier: unknown verifier 'nope'" in err
    status, _, err = run(capsys, "eval", "accuracy", tiny_model_dir, bad, "--n", "2", "--temperature", "0", *FAST)
    assert status == 2 and "sampling needs temperature > 0" in err
    status, _, err = run(capsys, "export", "runs/no-round-given", tmp_path / "x")
    assert status == 2 and "not of the form RUN_DIR@ROUND" in err
    old_run = tmp_path / "old"  # a run whose stored recipe this version no longer accepts
    old_run.mkdir()
    (old_run / "manifest.json").write_text(json.dumps({"recipe": {"problems": {"train": "t", "heldout": "h"}},
                                                       "rounds": {}}))
    status, _, err = run(capsys, "export", f"{old_run}@0", tmp_path / "x")
    assert status == 2 and "(the run's stored recipe): invalid rounds recipe" in err and "heldout moved" in err


def test_format_choices_match_the_formats():
    from prefopt.commands.eval import FORMAT_CHOICES
    from prefopt.online.model_eval import PROBLEM_FORMATS

    assert FORMAT_CHOICES == ("auto", *PROBLEM_FORMATS)
