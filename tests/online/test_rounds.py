"""The rounds loop on the tiny model: run directory contents, metrics, and kill-and-resume.

A killed run resumed with the same command must end exactly where an uninterrupted run ends: the
same rollouts, pairs, metrics and policy weights. Faults are injected at named points
(``PREFOPT_ROUNDS_FAULT``): in-process (raising) at many points, and once as a real process exit
(``os._exit``, what a kill looks like) through the ``prefopt rounds`` command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from prefopt.io import FAULT_ENV, InjectedFault
from prefopt.online.config import RoundsRecipe, load_rounds_recipe

REWARD_MODULE = '''
from prefopt.online.rewards import available_rewards, register_reward

if "sample_index" not in available_rewards():
    @register_reward("sample_index")
    def sample_index(group, state):
        """Reward = the rollout's index in its group: never tied, so every group gives a pair."""
        return {"reward": [float(i) for i in range(len(group))]}
'''
exec(REWARD_MODULE, {})  # the same registration in-process; the subprocess test imports it from a file

QUESTIONS = [("Tom has 3 apples. Tom buys 2 more apples. How many apples does Tom have now?", "5"),
             ("Ana has 9 cards. Ana loses 4 cards. How many cards does Ana have now?", "5"),
             ("Leo has 4 coins. Leo doubles the coins. How many coins does Leo have now?", "8"),
             ("Mia has 7 books. Mia buys 6 more books. How many books does Mia have now?", "13"),
             ("Raj has 12 shells. Raj sells 5 shells. How many shells does Raj have now?", "7"),
             ("Ben has 2 stamps. Ben triples the stamps. How many stamps does Ben have now?", "6"),
             ("Nora has 8 marbles. Nora gets 8 more marbles. How many marbles does Nora have now?", "16")]


def write_problems(path: Path, rows: list[tuple[str, str]], prefix: str) -> str:
    path.write_text("".join(json.dumps({"id": f"{prefix}-{i}", "question": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate(rows)))
    return str(path)


@pytest.fixture()
def recipe_file(tmp_path, tiny_model_dir) -> Path:
    raw = {
        "run": {"name": "tiny", "output_root": str(tmp_path / "runs")},
        "model": {"name_or_path": tiny_model_dir, "lora": {"r": 4, "alpha": 8}},
        "problems": {"train": write_problems(tmp_path / "train.jsonl", QUESTIONS[:6], "train"),
                     "instruction": "Answer after ####."},
        "rounds": {"count": 2, "prompts_per_round": 3, "reference": "initial"},
        "sampler": {"engine": "hf", "n": 3, "max_new_tokens": 5, "batch_size": 2},
        "verifier": {"name": "exact"},
        "reward": {"name": "sample_index"},
        "pairs": {"strategy": "best_vs_worst"},
        "loss": {"name": "dpo", "beta": 0.1},
        "optim": {"lr": 0.01},
        "train": {"max_steps": 2, "batch_size": 2, "save_steps": 1, "max_length": 256, "max_prompt_length": 200},
        "eval": {"sets": {"test": {"path": write_problems(tmp_path / "test.jsonl", QUESTIONS[4:], "test")},
                          "other": {"path": write_problems(tmp_path / "other.jsonl", QUESTIONS[:2], "other"),
                                    "limit": 1}},
                 "max_new_tokens": 5, "batch_size": 2},
        "logging": {"report_to": "none", "logging_steps": 1},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_in_process(recipe: RoundsRecipe) -> list[dict]:
    from prefopt.online.rounds import RoundsRunner

    return RoundsRunner(recipe, progress=False).run_all()


def without_timings(metrics: dict) -> dict:
    """``metrics`` (and each evaluation set's figures) without the wall-clock values."""
    return {k: without_timings(v) if isinstance(v, dict) else v for k, v in metrics.items()
            if "seconds" not in k and "per_second" not in k}


def assert_same_run(a: Path, b: Path, rounds: int) -> None:
    """Two run directories hold the same rollouts, pairs, held-out outcomes and policy weights."""
    for r in range(rounds + 1):
        ra, rb = a / f"round_{r:03d}", b / f"round_{r:03d}"
        assert without_timings(json.loads((ra / "metrics.json").read_text())) == \
            without_timings(json.loads((rb / "metrics.json").read_text()))
        ea, eb = json.loads((ra / "eval.json").read_text()), json.loads((rb / "eval.json").read_text())
        for name in ea["sets"]:
            assert ea["sets"][name]["completions"] == eb["sets"][name]["completions"]
        if r == 0:
            continue
        for name in ("rollouts.jsonl", "scored.jsonl", "pairs.jsonl", "reward_state.json"):
            assert (ra / name).read_text() == (rb / name).read_text(), f"round {r}: {name} differs"
        wa, wb = load_file(ra / "policy" / "adapter_model.safetensors"), load_file(rb / "policy" / "adapter_model.safetensors")
        assert wa.keys() == wb.keys()
        for key in wa:
            assert (wa[key] == wb[key]).all(), f"round {r}: adapter weight {key} differs"


def test_rounds_write_every_step_and_metrics(recipe_file):
    recipe = load_rounds_recipe(recipe_file)
    rows = run_in_process(recipe)
    root = recipe.run.directory
    assert [row["round"] for row in rows] == [0, 1, 2]
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["rounds"]["1"]) == {"sample", "score", "pairs", "train", "eval"}
    assert manifest["rounds"]["1"]["pairs"]["pairs"] == 3  # one pair per prompt: rewards never tie
    assert manifest["rounds"]["2"]["train"]["policy"] == "adapter"
    rollouts = [json.loads(line) for line in (root / "round_001" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 9 and {r["sample_index"] for r in rollouts} == {0, 1, 2}
    assert all(r["length"] == len(r["completion_ids"]) <= 5 for r in rollouts)
    train_prompts = {r["prompt_id"] for r in rollouts}
    round2 = {json.loads(line)["prompt_id"] for line in (root / "round_002" / "rollouts.jsonl").read_text().splitlines()}
    assert len(train_prompts) == 3 and not train_prompts & round2  # disjoint partitions
    assert list(rows[2]["sets"]) == ["test", "other"]  # the recipe's order
    assert (rows[2]["sets"]["test"]["n"], rows[2]["sets"]["other"]["n"]) == (3, 1)  # "other" has limit 1
    for key in ("accuracy", "ci_low", "ci_high", "mean_length", "median_length", "truncation_rate",
                "accuracy_diff_vs_round0", "diff_ci_low", "diff_p_value", "length_change_vs_round0"):
        assert key in rows[2]["sets"]["test"] and key in rows[2]["sets"]["other"], key
    for key in ("pairs", "skipped_groups", "sampling_seconds", "training_seconds", "eval_seconds", "train_accuracy"):
        assert key in rows[2], key
    # eval.json keeps every completion with its verdict, so every figure can be audited
    evaluation = json.loads((root / "round_002" / "eval.json").read_text())["sets"]
    completions = evaluation["test"]["completions"]
    assert [c["prompt_id"] for c in completions] == ["test-0", "test-1", "test-2"]
    assert set(completions[0]) == {"prompt_id", "sample_index", "completion", "extracted", "correct", "verify_status",
                                   "length", "finish_reason"}
    assert rows[2]["sets"]["test"]["accuracy"] == sum(c["correct"] for c in completions) / 3
    assert rows[2]["sets"]["test"]["mean_length"] == sum(c["length"] for c in completions) / 3
    assert not list(root.rglob(".tmp-*")) and not (root / "round_001" / "train").exists()
    # a finished run has nothing left to do: running it again changes nothing
    before = (root / "manifest.json").read_text()
    assert run_in_process(recipe) == rows
    assert (root / "manifest.json").read_text() == before


@pytest.mark.parametrize("faults", [
    ["0:eval:written", "1:sample:written", "write:scored.jsonl"],
    ["1:pairs:start", "1:train:saved1", "1:train:step2"],
    ["dir:policy", "2:train:step1", "2:eval:start", "write:metrics.json"],
])
def test_killed_run_resumes_to_the_uninterrupted_result(recipe_file, tmp_path, monkeypatch, faults):
    reference = load_rounds_recipe(recipe_file)
    run_in_process(reference)
    resumed = load_rounds_recipe(recipe_file, [f"run.output_root={tmp_path / 'resumed'}"])
    monkeypatch.setenv(f"{FAULT_ENV}_MODE", "raise")
    for fault in faults:
        monkeypatch.setenv(FAULT_ENV, fault)
        with pytest.raises(InjectedFault, match=fault):
            run_in_process(resumed)
    monkeypatch.delenv(FAULT_ENV)
    run_in_process(resumed)
    assert_same_run(reference.run.directory, resumed.run.directory, rounds=2)


def test_process_exit_mid_training_resumes_through_the_cli(recipe_file, tmp_path):
    """A real process exit (``os._exit``) during round 1's training, then the same command again."""
    (tmp_path / "register_reward.py").write_text(REWARD_MODULE)
    driver = "import sys, register_reward; from prefopt.cli import main; sys.exit(main(sys.argv[1:]))"
    repo = Path(__file__).resolve().parents[2]  # this checkout's prefopt, not whichever one is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(repo)]), FAULT_ENV: "1:train:saved1"}
    command = [sys.executable, "-c", driver, "rounds", str(recipe_file), "--quiet"]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert killed.returncode == 75, killed.stderr[-2000:]
    root = tmp_path / "runs" / "tiny"
    assert (root / "round_001" / "train" / "checkpoint-1").is_dir()
    del env[FAULT_ENV]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["rounds"]["1"]["train"]["resumed_from"].endswith("checkpoint-1")
    assert "| round |" in done.stdout and (root / "accuracy_vs_length.png").stat().st_size > 1000
    reference = load_rounds_recipe(recipe_file, [f"run.output_root={tmp_path / 'reference'}"])
    run_in_process(reference)
    assert_same_run(reference.run.directory, root, rounds=2)


def test_resume_with_a_changed_recipe_is_refused(recipe_file):
    from prefopt.config import RecipeError
    from prefopt.online.rounds import RoundsRunner

    run_in_process(load_rounds_recipe(recipe_file, ["rounds.count=1"]))
    extended = load_rounds_recipe(recipe_file)  # more rounds on a finished run: allowed
    assert len(run_in_process(extended)) == 3
    with pytest.raises(RecipeError, match="loss"):
        RoundsRunner(load_rounds_recipe(recipe_file, ["loss.beta=0.5"]), progress=False)


def test_too_few_problems_for_disjoint_rounds(recipe_file):
    from prefopt.config import RecipeError
    from prefopt.online.rounds import RoundsRunner

    with pytest.raises(RecipeError, match="need 9 training problems but .* has 6"):
        RoundsRunner(load_rounds_recipe(recipe_file, ["rounds.count=3"]), progress=False)



@pytest.mark.slow
def test_quickstart_recipe_runs_on_the_real_model(tmp_path):
    """The README's quickstart recipe, shrunk to minutes: the embedded SmolLM2, the math verifier, DPO on LoRA."""
    repo = Path(__file__).resolve().parents[2]
    overrides = [f"run.output_root={tmp_path}", "rounds.count=1", "rounds.prompts_per_round=4", "sampler.n=2",
                 "sampler.max_new_tokens=24", "eval.max_new_tokens=24", "eval.sets.test.limit=6",
                 "eval.sets.test_oot.limit=6"]
    recipe = load_rounds_recipe(repo / "recipes" / "quickstart.yaml", overrides)
    recipe.problems.train = str(repo / recipe.problems.train)
    for eval_set in recipe.eval.sets.values():
        eval_set.path = str(repo / eval_set.path)
    rows = run_in_process(recipe)
    assert [row["round"] for row in rows] == [0, 1] and list(rows[1]["sets"]) == ["test", "test_oot"]
    manifest = json.loads((recipe.run.directory / "manifest.json").read_text())
    assert manifest["rounds"]["1"]["sample"]["rollouts"] == 8
    for values in rows[1]["sets"].values():
        assert values["n"] == 6 and 0 < values["mean_length"] <= 24 and 0 <= values["accuracy"] <= 1
