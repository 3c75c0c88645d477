"""The recipe schema (prefopt.config): unknown keys, bad combinations, overrides, error messages."""

from __future__ import annotations

import pytest
import torch
import yaml

from prefopt.config import RecipeError, apply_overrides, load_recipe, validate_recipe

BASE = {
    "model": {"name_or_path": "some/model", "lora": {"r": 8}},
    "data": {"train": "pairs.jsonl"},
    "loss": {"name": "dpo", "beta": 0.1},
    "train": {"output_dir": "out"},
}


@pytest.fixture()
def recipe_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return path


def error_of(path, *overrides: str) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, list(overrides))
    return str(info.value)


def test_valid_recipe_fills_defaults(recipe_file):
    recipe = load_recipe(recipe_file)
    assert recipe.loss.reference == "precomputed"  # the default for a loss that needs a reference
    assert recipe.loss.hparams == {"beta": 0.1}
    assert recipe.optim.scheduler == "cosine" and recipe.train.batch_size == 2
    assert yaml.safe_load(recipe.to_yaml())["loss"] == {
        "name": "dpo",
        "reference": "precomputed",
        "reference_model": None,
        "reference_batch_size": 8,
        "reference_cache_dir": None,
        "beta": 0.1,
    }


@pytest.mark.parametrize(
    ("override", "where", "valid"),
    [
        ("trian.max_steps=3", "trian", "model, data, loss, optim, train, logging"),
        ("train.max_step=3", "train.max_step", "epochs, max_steps, batch_size"),
        ("model.lora.rank=4", "model.lora.rank", "r, alpha, dropout, target_modules, modules_to_save"),
    ],
)
def test_unknown_keys_name_the_valid_ones(recipe_file, override, where, valid):
    message = error_of(recipe_file, override)
    assert message.startswith(f"{recipe_file}: invalid recipe:")
    assert f"{where}: unknown key; valid keys here: {valid}" in message


def test_unknown_loss_hyperparameter_lists_the_valid_ones(recipe_file):
    message = error_of(recipe_file, "loss.betta=0.2")
    assert "['betta']" in message and "valid: ['beta', 'label_smoothing', 'f_divergence', 'f_alpha']" in message


def test_unknown_loss_name_lists_registered_losses(recipe_file):
    assert "unknown loss 'dpoo'; registered losses: alphapo, aot, aot_unpaired, apo_down" in error_of(
        recipe_file, "loss.name=dpoo"
    )


@pytest.mark.parametrize(
    "option", ["reference=live", "reference_model=other/model", "reference_cache_dir=cache"]
)
def test_reference_free_loss_rejects_reference_options(recipe_file, option):
    message = error_of(recipe_file, "loss.name=simpo", "loss.beta=2.5", f"loss.{option}")
    key = option.partition("=")[0]
    assert f"loss 'simpo' is reference-free, so loss.{key} does nothing; remove it" in message


def test_reference_free_loss_has_no_reference_mode(recipe_file):
    recipe = load_recipe(recipe_file, ["loss.name=simpo", "loss.beta=2.5", "loss.gamma_beta_ratio=0.55"])
    assert recipe.loss.reference is None and not recipe.loss.requires_reference


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_ld_alpha_outside_unit_interval(recipe_file, alpha):
    message = error_of(recipe_file, "loss.name=ld_dpo", f"loss.ld_alpha={alpha}")
    assert f"  loss.ld_alpha: ld_alpha must be in [0, 1], got {alpha}" in message


def test_ld_alpha_bounds_are_valid(recipe_file):
    for alpha in (0, 1):
        assert (
            load_recipe(recipe_file, ["loss.name=ld_dpo", f"loss.ld_alpha={alpha}"]).loss.hparams["ld_alpha"]
            == alpha
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="QLoRA is allowed where CUDA is available")
def test_qlora_on_cpu_says_why(recipe_file):
    message = error_of(recipe_file, "model.qlora=true")
    assert "model.qlora needs a CUDA GPU: bitsandbytes 4-bit layers have no CPU kernels" in message
    assert "model.qlora=false" in message  # what to do instead


def test_qlora_needs_lora(recipe_file):
    assert "add a model.lora section" in error_of(recipe_file, "model.lora=null", "model.qlora=true")


def test_adapter_disabled_needs_lora(recipe_file):
    assert load_recipe(recipe_file, ["loss.reference=adapter_disabled"]).loss.reference == "adapter_disabled"
    message = error_of(recipe_file, "loss.reference=adapter_disabled", "model.lora=null")
    assert (
        "  loss.reference=adapter_disabled uses the policy with its LoRA adapters switched off, but model.lora is not set"
        in message
    )


def test_adapter_disabled_rejects_a_reference_model(recipe_file):
    message = error_of(recipe_file, "loss.reference=adapter_disabled", "loss.reference_model=other/model")
    assert "loss.reference_model cannot be used with reference=adapter_disabled" in message


def test_other_cross_field_checks(recipe_file):
    assert "train.eval_steps is set but data.eval is not" in error_of(recipe_file, "train.eval_steps=5")
    message = error_of(recipe_file, "data.max_length=64", "data.max_prompt_length=64")
    assert "data.max_prompt_length=64 leaves no room for the completion within data.max_length=64" in message
    assert "optim.scheduler: must be one of 'linear', 'cosine'" in error_of(
        recipe_file, "optim.scheduler=cosin"
    )
    assert "train.batch_size: Input should be greater than 0" in error_of(recipe_file, "train.batch_size=0")


def test_optimizer_and_scheduler_names_are_transformers_own(recipe_file):
    """Every name the torch-free tuples accept is one the installed transformers accepts (a release that
    drops a name fails here); names a newer release adds are accepted once the tuples list them."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from prefopt.optim_names import OPTIMIZERS, SCHEDULERS

    assert set(SCHEDULERS) <= {s.value for s in SchedulerType}
    assert set(OPTIMIZERS) <= {o.value for o in OptimizerNames}
    assert {"cosine", "constant", "linear"} <= set(SCHEDULERS) and {"adamw_torch", "sgd"} <= set(OPTIMIZERS)
    recipe = load_recipe(recipe_file, ["optim.optimizer=sgd", "optim.scheduler=constant_with_warmup"])
    assert (recipe.optim.optimizer, recipe.optim.scheduler) == ("sgd", "constant_with_warmup")
    assert "optim.optimizer: must be one of 'adamw_torch'" in error_of(recipe_file, "optim.optimizer=adam_w")
    assert "optim.scheduler: must be one of" in error_of(recipe_file, "optim.scheduler=adamw_torch")  # per field


def test_every_problem_is_reported_at_once(recipe_file):
    message = error_of(recipe_file, "train.batch_size=0", "optim.lr=-1", "logging.colour=1")
    assert all(key in message for key in ("train.batch_size:", "optim.lr:", "logging.colour:"))


def test_overrides_parse_yaml_values(recipe_file):
    recipe = load_recipe(
        recipe_file,
        [
            "train.max_steps=2",
            "loss.beta=0.2",
            "model.lora.target_modules=[q_proj, v_proj]",
            "logging.report_to=[tensorboard]",
            "train.resume=true",
            "data.eval=eval.jsonl",
        ],
    )
    assert recipe.train.max_steps == 2 and recipe.loss.hparams == {"beta": 0.2}
    assert recipe.model.lora.target_modules == ["q_proj", "v_proj"] and recipe.logging.report_to == [
        "tensorboard"
    ]
    assert recipe.train.resume is True and recipe.data.eval == "eval.jsonl"


def test_override_null_removes_a_section_and_creates_missing_ones(recipe_file):
    assert load_recipe(recipe_file, ["model.lora=null"]).model.lora is None
    recipe = load_recipe(recipe_file, ["model.lora=null", "model.lora.r=4"])  # recreated from defaults
    assert recipe.model.lora.r == 4 and recipe.model.lora.alpha == 32


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train", "override 'train' is not of the form section.key=value"),
        ("=3", "override '=3' is not of the form section.key=value"),
        ("train..max_steps=3", "is not of the form section.key=value"),
        ("model.name_or_path.revision=main", "model.name_or_path is a value, not a section"),
        ("loss.beta=[0.1", "the value is not valid YAML"),
    ],
)
def test_bad_overrides_name_the_file(recipe_file, override, expected):
    message = error_of(recipe_file, override)
    assert message.startswith(f"{recipe_file}: ") and expected in message


def test_apply_overrides_in_place():
    raw = {"train": {"output_dir": "a"}}
    assert apply_overrides(raw, ["train.output_dir=b", "logging.logging_steps=1"]) is raw
    assert raw == {"train": {"output_dir": "b"}, "logging": {"logging_steps": 1}}


def test_file_problems_name_the_file(tmp_path):
    assert error_of(tmp_path / "missing.yaml") == f"{tmp_path / 'missing.yaml'}: no such recipe file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert error_of(bad).startswith(f"{bad}: not valid YAML")
    listing = tmp_path / "list.yaml"
    listing.write_text("- model\n")
    assert error_of(listing) == f"{listing}: a recipe must be a YAML mapping of sections, got list"


def test_missing_required_keys(recipe_file):
    raw = {k: dict(v) for k, v in BASE.items()}
    del raw["train"]["output_dir"], raw["model"]
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, source="inline.yaml")
    message = str(info.value)
    assert message.startswith("inline.yaml: invalid recipe:")
    assert "  model: Field required" in message and "  train.output_dir: Field required" in message


def test_rounds_recipe_is_redirected():
    with pytest.raises(RecipeError, match="has a 'rounds:' section, so it is a rounds recipe"):
        validate_recipe({**BASE, "rounds": {}}, source="online.yaml")
