"""``train(recipe)`` and ``prefopt train`` on the saved tiny model: checkpoint/resume equality, LoRA adapters."""

from __future__ import annotations

import json

import peft
import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_helpers import write_pairs
from transformers import AutoModelForCausalLM, TrainerCallback

from prefopt.cli import main
from prefopt.config import load_recipe
from prefopt.train import train

STEPS = 4


def recipe_file(tmp_path, model_dir: str, **sections) -> str:
    """A small full-fine-tuning DPO recipe on the tiny model; ``sections`` update its sections."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = {
        "model": {"name_or_path": model_dir},
        "data": {
            "train": write_pairs(tmp_path / "pairs.jsonl", n=12),
            "max_length": 256,
            "max_prompt_length": 64,
        },
        "loss": {"name": "dpo", "beta": 0.1, "reference_cache_dir": str(tmp_path / "reference-cache")},
        "optim": {"lr": 1e-2, "warmup_ratio": 0.25, "scheduler": "cosine"},
        "train": {
            "output_dir": str(tmp_path / "out"),
            "max_steps": STEPS,
            "batch_size": 2,
            "grad_accum": 2,
            "seed": 3,
        },
        "logging": {"logging_steps": 1},
    }
    for name, values in sections.items():
        raw[name] = {**raw[name], **values}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


class StopAt(TrainerCallback):
    """Stops training after ``step`` optimizer steps, as a crash or a pre-emption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}], ids=["full", "lora"])
def test_resume_from_checkpoint_gives_identical_parameters(tmp_path, tiny_model_dir, lora):
    """4 steps in one go == 2 steps, stop, resume from checkpoint-2 (optimizer, schedule, data order, RNG)."""
    straight = train(load_recipe(recipe_file(tmp_path / "a", tiny_model_dir, model={"lora": lora})))
    assert straight.global_step == STEPS

    path = recipe_file(tmp_path / "b", tiny_model_dir, model={"lora": lora}, train={"save_steps": 2})
    stopped = train(load_recipe(path), callbacks=[StopAt(2)])
    assert stopped.global_step == 2 and (tmp_path / "b/out/checkpoint-2").is_dir()
    with pytest.raises(AssertionError):  # sanity: the interrupted run really is behind
        torch.testing.assert_close(parameters(stopped.model), parameters(straight.model))

    resumed = train(load_recipe(path, ["train.resume=true"]))
    assert resumed.global_step == STEPS
    torch.testing.assert_close(parameters(resumed.model), parameters(straight.model), rtol=1e-6, atol=1e-7)
    state = json.loads((tmp_path / "b/out/trainer_state.json").read_text())
    assert state["global_step"] == STEPS and [e["step"] for e in state["log_history"] if "loss" in e] == [
        1,
        2,
        3,
        4,
    ]


def test_gradient_accumulation_matches_a_larger_batch(tmp_path, tiny_model_dir):
    """batch 4 x 1 == batch 2 x 2 micro-batches (SGD, no clipping: unlike Adam it shows any loss mis-scaling)."""
    results = []
    for name, batch, accum in (("big", 4, 1), ("accumulated", 2, 2)):
        path = recipe_file(
            tmp_path / name,
            tiny_model_dir,
            optim={
                "optimizer": "sgd",
                "lr": 0.5,
                "warmup_ratio": 0.0,
                "scheduler": "constant",
                "max_grad_norm": 1e9,
            },
            train={"batch_size": batch, "grad_accum": accum, "max_steps": 2},
        )
        results.append(parameters(train(load_recipe(path)).model))
    assert not torch.equal(results[0]["model.norm.weight"], torch.ones_like(results[0]["model.norm.weight"]))
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)


def test_resume_names_a_missing_checkpoint(tmp_path, tiny_model_dir):
    recipe = load_recipe(recipe_file(tmp_path, tiny_model_dir), [f"train.resume={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="train.resume=.*no such checkpoint directory"):
        train(recipe)


def test_prefopt_train_lora_end_to_end(tmp_path, tiny_model_dir, capsys):
    """The CLI trains LoRA adapters with the adapter-disabled reference, evaluates, saves them as safetensors."""
    path = recipe_file(
        tmp_path, tiny_model_dir, model={"lora": {"r": 4, "alpha": 8}}, loss={"reference_cache_dir": None}
    )
    overrides = [
        "loss.reference=adapter_disabled",
        "train.max_steps=2",
        "train.save_steps=1",
        "train.eval_steps=1",
    ]
    assert main(["train", path, *overrides, f"data.eval={write_pairs(tmp_path / 'eval.jsonl', n=4)}"]) == 0
    out = tmp_path / "out"
    assert "prefopt train: 2 steps; model, tokenizer and recipe saved to" in capsys.readouterr().out
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "recipe.yaml",
        "all_results.json",
    } <= {p.name for p in out.iterdir()}
    assert not (out / "model.safetensors").exists()  # only the adapter, not a full copy of the base model
    assert (out / "training_args.json").is_file() and not list(out.glob("*.bin"))  # no pickles in the model dir
    assert (out / "checkpoint-2/adapter_model.safetensors").is_file()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["loss"]["reference"] == "adapter_disabled"
    results = json.loads((out / "all_results.json").read_text())
    assert {"train_loss", "eval_loss", "eval_rewards/margins", "eval_length/rejected"} <= set(results)
    assert results["eval_rewards/margins"] > 0

    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in adapter.items())
    loaded = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out))
    assert loaded.peft_config["default"].r == 4
