"""Every key of a rounds recipe changes behaviour (a test fails if it stops) or is rejected at load.

:data:`KEYS` maps every declared key of :class:`RoundsRecipe` to the test that proves its effect,
or to an override that must be rejected naming the key. A new key without an entry fails
:func:`test_every_key_has_a_test_or_is_rejected`. Keys that only act on a GPU or the Hub are listed
with the reason in :data:`NOT_ON_THIS_MACHINE`. Registry hyperparameters (``reward.*``, ``loss.*``,
``pairs.*``, ``verifier.*`` extras) are checked against their registries at load and tested with
their rewards, losses and strategies.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import BaseModel
from scripted_rounds import Planned, run_rounds, write_recipe

from prefopt.config import RecipeError
from prefopt.online.config import RoundsRecipe, load_rounds_recipe
from prefopt.online.rounds import round_problems

TESTS = Path(__file__).resolve().parents[1]
K = "tests/online/test_rounds_keys.py::"
E2E = "tests/online/test_rounds_rewards.py::"
KEYS: dict[str, str | tuple[str, str]] = {
    "run.name": "tests/online/test_rounds.py::test_resume_with_a_changed_recipe_is_refused",
    "run.output_root": "tests/online/test_rounds.py::test_killed_run_resumes_to_the_uninterrupted_result",
    "model.name_or_path": "tests/online/test_rounds.py::test_quickstart_recipe_runs_on_the_real_model",
    "model.dtype": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "model.trust_remote_code": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "model.attn_implementation": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "model.device": "tests/test_placement.py::test_rounds_policies_go_to_the_accelerator_and_the_merged_copy_is_built_on_cpu",
    "model.lora.r": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "model.lora.alpha": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "model.lora.dropout": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "model.lora.target_modules": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "model.lora.modules_to_save": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "model.qlora": ("model.qlora=true", "model.qlora"),
    "problems.train": "tests/online/test_rounds_config.py::test_online_recipes_read_the_local_copies",
    "problems.question_field": "tests/online/test_rounds_config.py::test_online_recipes_read_the_local_copies",
    "problems.answer_field": "tests/online/test_rounds_config.py::test_online_recipes_read_the_local_copies",
    "problems.id_field": "tests/online/test_rounds_config.py::test_online_recipes_read_the_local_copies",
    "problems.instruction": "tests/online/test_rounds_config.py::test_online_recipes_read_the_local_copies",
    "rounds.count": K + "test_round_problems_follow_partition_seed_and_size",
    "rounds.prompts_per_round": K + "test_round_problems_follow_partition_seed_and_size",
    "rounds.partition": K + "test_round_problems_follow_partition_seed_and_size",
    "rounds.seed": K + "test_round_problems_follow_partition_seed_and_size",
    "rounds.reference": K + "test_rounds_reference_picks_the_reference_model",
    "sampler.n": K + "test_sampler_and_eval_keys_reach_the_sampler",
    "sampler.temperature": K + "test_sampler_and_eval_keys_reach_the_sampler",
    "sampler.top_p": K + "test_sampler_and_eval_keys_reach_the_sampler",
    "sampler.max_new_tokens": K + "test_sampler_and_eval_keys_reach_the_sampler",
    "sampler.batch_size": K + "test_sampler_and_eval_keys_reach_the_sampler",
    "sampler.engine": "tests/online/test_sampler.py::test_resolve_engine",
    "verifier.name": "tests/online/test_rounds_config.py::test_unknown_names_are_rejected_with_the_registered_ones",
    "verifier.timeout": "tests/online/test_verifier.py::test_timeouts_are_recorded_and_the_batch_goes_on",
    "verifier.truncated": "tests/online/test_truncation.py::test_verify_policy_credits_truncated_answers_in_the_loop",
    "verifier.format": K + "test_verifier_format_sets_the_loops_format_scores",
    "verifier.format_pattern": K + "test_verifier_format_sets_the_loops_format_scores",
    "reward.name": E2E + "test_every_builtin_reward_has_an_end_to_end_test",
    "pairs.strategy": "tests/online/test_truncation.py::test_the_loop_never_trains_a_truncated_rollout_with_eos",
    "loss.name": "tests/online/test_rounds.py::test_rounds_write_every_step_and_metrics",
    "loss.reference": K + "test_rounds_reference_picks_the_reference_model",
    "loss.reference_model": ("loss.reference_model=other", "loss.reference_model is not used by rounds"),
    "loss.reference_batch_size": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "loss.reference_cache_dir": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "optim.lr": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "optim.weight_decay": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "optim.warmup_ratio": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "optim.scheduler": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "optim.optimizer": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "optim.max_grad_norm": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "train.epochs": K + "test_train_epochs_batch_and_accumulation_set_the_steps",
    "train.max_steps": E2E + "test_tlts",
    "train.save_steps": "tests/online/test_rounds.py::test_process_exit_mid_training_resumes_through_the_cli",
    "train.batch_size": K + "test_train_epochs_batch_and_accumulation_set_the_steps",
    "train.grad_accum": K + "test_train_epochs_batch_and_accumulation_set_the_steps",
    "train.seed": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "train.max_length": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "train.max_prompt_length": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "train.gradient_checkpointing": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "train.bf16": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "train.logps_chunk_size": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "train.dataloader_num_workers": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "train.ddp_timeout": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "eval.sets.path": "tests/online/test_rounds.py::test_rounds_write_every_step_and_metrics",
    "eval.sets.limit": "tests/online/test_rounds.py::test_rounds_write_every_step_and_metrics",
    "eval.sets.question_field": "tests/online/test_rounds_config.py::test_eval_sets",
    "eval.sets.answer_field": "tests/online/test_rounds_config.py::test_eval_sets",
    "eval.sets.id_field": "tests/online/test_rounds_config.py::test_eval_sets",
    "eval.max_new_tokens": K + "test_sampler_and_eval_keys_reach_the_sampler",
    "eval.batch_size": K + "test_sampler_and_eval_keys_reach_the_sampler",
    "logging.report_to": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "logging.logging_steps": K + "test_training_receives_every_model_optim_train_and_logging_key",
    "logging.run_name": K + "test_training_receives_every_model_optim_train_and_logging_key",
}
NOT_ON_THIS_MACHINE = {
    "sampler.gpu_memory_utilization": "vLLM only (CUDA): passed to the vLLM engine",
    "sampler.tensor_parallel_size": "vLLM only (CUDA); its sharding and engine arguments: "
                                    "tests/online/test_rounds_processes.py",
    "problems.train_split": "Hub datasets only (this machine has no Hub access)",
    "eval.sets.split": "Hub datasets only (this machine has no Hub access)",
    "eval.sets.config_name": "Hub datasets only (this machine has no Hub access)",
    "problems.config_name": "Hub datasets only (this machine has no Hub access)",
}
GROUP = [Planned(11, True), Planned(31, True), Planned(21, False), Planned(41, False)]


def declared_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every declared field of a recipe section, nested sections flattened (``model.lora.r``)."""
    out = []
    for name, info in model.model_fields.items():
        nested = [a for a in (typing.get_args(info.annotation) or [info.annotation])
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        out += declared_keys(nested[0], f"{prefix}{name}.") if nested else [prefix + name]
    return out


def test_every_key_has_a_test_or_is_rejected(tmp_path, tiny_model_dir):
    keys = declared_keys(RoundsRecipe)
    missing = sorted(set(keys) - set(KEYS) - set(NOT_ON_THIS_MACHINE))
    assert not missing, f"rounds recipe keys with no test and no load-time rejection: {missing}"
    assert not set(KEYS) - set(keys), "entries for keys that no longer exist"
    path = write_recipe(tmp_path, tiny_model_dir)
    for key, target in KEYS.items():
        if isinstance(target, tuple):
            override, message = target
            with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
                load_rounds_recipe(path, [override])
            continue
        file, _, name = target.partition("::")
        tree = ast.parse((TESTS.parent / file).read_text())
        names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in names, f"{key}: {target} does not exist"


def test_round_problems_follow_partition_seed_and_size(tmp_path, tiny_model_dir):
    from prefopt.online.problems import Problem

    problems = [Problem(str(i), f"q{i}", "1") for i in range(5)]
    recipe = load_rounds_recipe(write_recipe(tmp_path, tiny_model_dir, rounds=4, prompts=2),
                                ["rounds.partition=disjoint", "rounds.count=2"])
    disjoint = [[p.id for p in round_problems(problems, recipe, r)] for r in (1, 2)]
    assert len(disjoint[0]) == 2 and not set(disjoint[0]) & set(disjoint[1])
    recipe.rounds.partition = "epochs"
    epochs = [[p.id for p in round_problems(problems, recipe, r)] for r in (1, 2, 3, 4, 5)]
    assert epochs[:2] == disjoint  # the first epoch is the disjoint order
    seen = [pid for ids in epochs for pid in ids]
    assert sorted(seen[:5]) == sorted(seen[5:10]) == [str(i) for i in range(5)]  # every problem once per epoch
    assert seen[5:10] != seen[:5]  # reshuffled
    recipe.rounds.seed = 1
    assert [p.id for p in round_problems(problems, recipe, 1)] != epochs[0]
    recipe.rounds.partition, recipe.rounds.prompts_per_round = "resample", 3
    drawn = [[p.id for p in round_problems(problems, recipe, r)] for r in (1, 2)]
    assert len(drawn[0]) == 3 and drawn[0] != drawn[1]


def test_sampler_and_eval_keys_reach_the_sampler(tmp_path, tiny_model_dir, monkeypatch):
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, lambda r, pid, k: GROUP[k], rounds=1,
                     overrides={"sampler": {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64,
                                            "batch_size": 3},
                                "eval": {"max_new_tokens": 48, "batch_size": 5}})
    sample = [p for p in run.sampler.calls if not p.greedy]
    evals = [p for p in run.sampler.calls if p.greedy]
    assert [(p.n, p.temperature, p.top_p, p.max_new_tokens, p.batch_size) for p in sample] == [(4, 0.7, 0.9, 64, 3)]
    assert {(p.n, p.max_new_tokens, p.batch_size) for p in evals} == {(1, 48, 5)} and len(evals) == 2


class _Recorder:
    """Stands in for ``PreferenceTrainer`` in the rounds module and records how each round builds it."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, model, args, **kwargs):
        self.calls.append({"model": model, "args": args, **kwargs})
        return self.real(model, args, **kwargs)


def recorded(monkeypatch) -> _Recorder:
    from prefopt.online import rounds

    recorder = _Recorder(rounds.PreferenceTrainer)
    monkeypatch.setattr(rounds, "PreferenceTrainer", recorder)
    return recorder


def test_training_receives_every_model_optim_train_and_logging_key(tmp_path, tiny_model_dir, monkeypatch):
    recorder = recorded(monkeypatch)
    lora = {"r": 2, "alpha": 6, "dropout": 0.25, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]}
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, lambda r, pid, k: GROUP[k], rounds=1, overrides={
        "model": {"lora": lora, "dtype": "float32", "attn_implementation": "eager", "trust_remote_code": False},
        "optim": {"lr": 0.02, "weight_decay": 0.05, "warmup_ratio": 0.2, "scheduler": "linear",
                  "optimizer": "adamw_torch", "max_grad_norm": 0.5},
        "train": {"max_steps": 1, "batch_size": 2, "seed": 7, "max_length": 200, "max_prompt_length": 100,
                  "gradient_checkpointing": True, "bf16": True, "logps_chunk_size": 64, "dataloader_num_workers": 0,
                  "ddp_timeout": 900},
        "loss": {"name": "dpo", "beta": 0.1, "reference_batch_size": 3, "reference_cache_dir": str(tmp_path / "cache")},
        "logging": {"report_to": "none", "logging_steps": 2, "run_name": "mine"}})
    (call,) = recorder.calls
    args, model = call["args"], call["model"]
    assert (args.learning_rate, args.weight_decay, args.warmup_steps, args.lr_scheduler_type.value,
            args.optim.value, args.max_grad_norm) == (0.02, 0.05, 0.2, "linear", "adamw_torch", 0.5)
    assert (args.seed, args.logging_steps, args.report_to, args.run_name) == (8, 2, [], "mine-round001")
    assert (args.reference_batch_size, args.reference_cache_dir) == (3, str(tmp_path / "cache"))
    assert (args.gradient_checkpointing or getattr(args, "activation_checkpointing", False)) and args.bf16
    assert (args.logps_chunk_size, args.dataloader_num_workers, args.ddp_timeout) == (64, 0, 900)
    assert any((tmp_path / "cache").iterdir()) and not (run.recipe.run.directory / "reference_cache").exists()
    peft = model.peft_config["default"]
    assert (peft.r, peft.lora_alpha, peft.lora_dropout, set(peft.target_modules)) == (2, 6, 0.25, {"q_proj", "v_proj"})
    assert "lm_head" in peft.modules_to_save and model.config._attn_implementation == "eager"
    assert next(model.parameters()).dtype == torch.float32
    dataset = call["train_dataset"]
    assert max(len(p) + len(c) for p, c in zip(dataset["prompt_ids"], dataset["chosen_ids"])) <= 200
    assert max(len(p) for p in dataset["prompt_ids"]) <= 100


def test_train_epochs_batch_and_accumulation_set_the_steps(tmp_path, tiny_model_dir, monkeypatch):
    """8 pairs (2 prompts × 2 correct × 2 wrong), batch 2 × accumulation 2 → 2 steps per epoch, 2 epochs → 4."""
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, lambda r, pid, k: GROUP[k], rounds=1,
                     overrides={"train": {"max_steps": None, "epochs": 2, "batch_size": 2, "grad_accum": 2}})
    assert run.record(1, "pairs")["pairs"] == 8 and run.record(1, "train")["steps"] == 4


@pytest.mark.parametrize("reference", ["initial", "previous"])
def test_rounds_reference_picks_the_reference_model(tmp_path, tiny_model_dir, monkeypatch, reference):
    """Round 2's reference: the initial model (a separate frozen model) or the policy the round starts from
    (``adapter_disabled``: the base weights under the fresh adapters, no second model)."""
    recorder = recorded(monkeypatch)
    loss = {"name": "dpo", "beta": 0.1, "reference": "precomputed" if reference == "initial" else "adapter_disabled"}
    run_rounds(tmp_path, tiny_model_dir, monkeypatch, lambda r, pid, k: GROUP[k],
               overrides={"rounds": {"reference": reference}, "loss": loss})
    first, second = recorder.calls
    assert first["ref_model"] is None and first["reference"] == loss["reference"]
    assert (second["ref_model"] is not None) == (reference == "initial")


def test_verifier_format_sets_the_loops_format_scores(tmp_path, tiny_model_dir, monkeypatch):
    """The scripted answers are '#### N': format hash/any/a matching pattern → 1, boxed or a pattern that
    does not match → 0, which the label-free format_length reward turns into 0."""
    runs = {}
    for name, fmt in {"boxed": {"format": "boxed"}, "pattern": {"format": "pattern", "format_pattern": r"#### \d+$"},
                      "other": {"format": "pattern", "format_pattern": r"\\boxed"}}.items():
        monkeypatch.chdir(tmp_path)
        (tmp_path / name).mkdir()
        runs[name] = run_rounds(tmp_path / name, tiny_model_dir, monkeypatch, lambda r, pid, k: GROUP[k], rounds=1,
                                overrides={"verifier": fmt, "reward": {"name": "format_length", "max_length": 64}})
    assert runs["boxed"].record(1, "score")["format_rate"] == 0.0 == runs["other"].record(1, "score")["format_rate"]
    assert runs["pattern"].record(1, "score")["format_rate"] == 1.0
    assert {s.reward for s in runs["boxed"].scored(1)} == {0.0} and min(s.reward for s in runs["pattern"].scored(1)) > 1


@pytest.mark.parametrize(("overrides", "message"), [
    (["verifier.format=pattern"], "verifier.format_pattern is required with format: pattern"),
    (["verifier.format_pattern=x"], "verifier.format_pattern is required with format: pattern and only used by it"),
    (["verifier.truncated=maybe"], "verifier.truncated"),
    (["reward.name=hapo", "rounds.partition=disjoint"], "set rounds.partition=epochs"),
    (["reward.name=tlts", "reward.clock=round"], r"reward.period=150 \(rounds, reward.clock=round\)"),
    (["reward.name=tlts", "train.max_steps=10"], r"reward.period=150 \(optimizer steps"),
    (["reward.name=tlts", "reward.schedule=linear", "reward.clock=round"], "reward.total=600"),
    (["reward.name=laser_d"], "reward.threshold_lower=4096 >= sampler.max_new_tokens=64"),
    (["reward.name=laser", "reward.target_length=64"], "reward.target_length=64 >= sampler.max_new_tokens=64"),
    (["reward.name=format_length"], "reward.max_length=4096 must be the generation limit"),
    (["pairs.strategy=best_vs_worst", "pairs.rejected=incorrect"], r"'best_vs_worst' takes no option\(s\) \[.*'rejected'"),
    (["pairs.drpo_lambda=0.2"], "only apply with weighting='drpo'"),
])
def test_settings_that_would_do_nothing_are_rejected_at_load(tmp_path, tiny_model_dir, overrides, message):
    path = write_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(RecipeError, match=message):
        load_rounds_recipe(path, overrides)


def test_tlts_schedules_that_move_are_accepted(tmp_path, tiny_model_dir):
    path = write_recipe(tmp_path, tiny_model_dir, rounds=3)
    assert load_rounds_recipe(path, ["reward.name=tlts", "reward.clock=round", "reward.period=2"]).reward.name == "tlts"
    assert load_rounds_recipe(path, ["reward.name=tlts", "train.max_steps=75"]).reward.hparams == {}
    assert load_rounds_recipe(path, ["reward.name=tlts", "reward.schedule=constant", "reward.clock=round"])


def test_hapo_under_epochs_that_never_recur_is_refused_at_start(tmp_path, tiny_model_dir):
    from prefopt.online.rounds import RoundsRunner

    recipe = load_rounds_recipe(write_recipe(tmp_path, tiny_model_dir, rounds=2, prompts=2), ["reward.name=hapo"])
    with pytest.raises(RecipeError, match="no problem recurs"):
        RoundsRunner(recipe, progress=False)


def test_recipe_yaml_written_by_the_harness_is_a_valid_rounds_recipe(tmp_path, tiny_model_dir):
    raw = yaml.safe_load(write_recipe(tmp_path, tiny_model_dir).read_text())
    assert set(raw) == set(RoundsRecipe.model_fields)
