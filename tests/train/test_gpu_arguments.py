"""The GPU-path arguments of ``prefopt train``: checkpointing keywords for the installed transformers
(non-reentrant, through the training loop), QLoRA preparation without peft's side effects, the
arguments built before the model is loaded, ``train.ddp_timeout`` and ``model.device``."""

from __future__ import annotations

import dataclasses
from unittest import mock

import peft
import pytest
import torch
from test_train_run import recipe_file
from transformers import TrainingArguments

import prefopt.train.run as run_module
from prefopt.config import ModelConfig, RecipeError, load_recipe
from prefopt.train import add_lora, train, training_arguments
from prefopt.train.compat import checkpointing_arguments


def test_checkpointing_arguments_use_the_fields_this_transformers_has():
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    on, off = checkpointing_arguments(True), checkpointing_arguments(False)
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    assert on == {name: True, f"{name}_kwargs": {"use_reentrant": False}}
    assert off == {name: False}
    assert set(on) <= fields
    TrainingArguments(output_dir="unused", report_to="none", **on)  # accepted without a TypeError


def test_train_checkpoints_non_reentrant_through_the_loop(tmp_path, tiny_model_dir):
    recipe = load_recipe(recipe_file(tmp_path, tiny_model_dir, train={"gradient_checkpointing": True, "max_steps": 1}))
    result = train(recipe)
    layer = result.model.model.layers[0]
    assert result.model.is_gradient_checkpointing
    assert layer._gradient_checkpointing_func.keywords == {"use_reentrant": False}


def test_train_without_checkpointing_leaves_it_off(tmp_path, tiny_model_dir):
    recipe = load_recipe(recipe_file(tmp_path, tiny_model_dir, train={"max_steps": 1}))
    assert not train(recipe).model.is_gradient_checkpointing


def test_qlora_base_keeps_the_recipe_dtype_and_skips_kbit_preparation(tiny_model, monkeypatch):
    """bitsandbytes cannot run here: a bf16 tiny model stands in for the 4-bit base (its non-quantized part)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # model.qlora is rejected without CUDA
    config = ModelConfig(name_or_path="unused", dtype="bfloat16", lora={"r": 4, "alpha": 8}, qlora=True)

    def forbidden(*args, **kwargs):
        raise AssertionError("prepare_model_for_kbit_training upcasts to fp32 and forces reentrant checkpointing")

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", forbidden)
    model = add_lora(tiny_model.to(torch.bfloat16), config)
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}  # peft's fp32 adapters
    assert not getattr(model.base_model.model, "is_gradient_checkpointing", False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_arguments_exist_before_the_model_is_loaded(tmp_path, tiny_model_dir, monkeypatch):
    """zero3_init_flag / fsdp_cpu_ram_efficient_loading act in from_pretrained only once the arguments exist."""
    events: list[str] = []
    real_arguments, real_build = run_module.training_arguments, run_module.build_model

    def arguments(recipe):
        events.append("arguments")
        return real_arguments(recipe)

    def build(config):
        events.append("model")
        return real_build(config)

    monkeypatch.setattr(run_module, "training_arguments", arguments)
    monkeypatch.setattr(run_module, "build_model", build)
    train(load_recipe(recipe_file(tmp_path, tiny_model_dir, train={"max_steps": 1})))
    assert events == ["arguments", "model"]


def test_ddp_timeout_and_cpu_device_reach_the_arguments(tmp_path, tiny_model_dir):
    recipe = load_recipe(recipe_file(tmp_path, tiny_model_dir, train={"ddp_timeout": 7200}, model={"device": "cpu"}))
    args = training_arguments(recipe)
    assert args.ddp_timeout == 7200 and args.use_cpu
    default = load_recipe(recipe_file(tmp_path / "d", tiny_model_dir))
    assert training_arguments(default).ddp_timeout == 1800
    with mock.patch("torch.accelerator.is_available", return_value=True):  # device "auto" with an accelerator
        assert not training_arguments(default).use_cpu
    with mock.patch("torch.accelerator.is_available", return_value=False):  # no accelerator: bf16 needs use_cpu
        assert training_arguments(default).use_cpu


def test_train_rejects_a_device_it_does_not_place(tmp_path, tiny_model_dir):
    recipe = load_recipe(recipe_file(tmp_path, tiny_model_dir, model={"device": "cuda:1"}))
    with pytest.raises(RecipeError, match="model.device"):
        train(recipe)


def test_model_device_must_be_a_torch_device(tmp_path, tiny_model_dir):
    with pytest.raises(RecipeError, match="model.device"):
        load_recipe(recipe_file(tmp_path, tiny_model_dir, model={"device": "gpu-please"}))


def test_full_bf16_fine_tuning_without_master_weights_is_warned_about(tmp_path, tiny_model_dir, monkeypatch, caplog):
    from prefopt.train.run import low_precision_warning

    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    full_bf16 = load_recipe(recipe_file(tmp_path, tiny_model_dir, model={"dtype": "bfloat16"}, train={"max_steps": 1}))
    assert "fp32 master" in low_precision_warning(full_bf16)
    assert low_precision_warning(load_recipe(recipe_file(tmp_path / "f", tiny_model_dir))) is None
    lora = load_recipe(recipe_file(tmp_path / "l", tiny_model_dir, model={"dtype": "bfloat16", "lora": {"r": 4}}))
    assert low_precision_warning(lora) is None
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert low_precision_warning(full_bf16) is None  # DeepSpeed keeps fp32 master weights
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    with caplog.at_level("WARNING", logger="prefopt.train.run"):
        train(full_bf16)
    assert any("fp32 master" in r.message for r in caplog.records)


@pytest.mark.parametrize("dtype, compute", [("bfloat16", torch.bfloat16), ("float16", torch.float16),
                                            ("float32", torch.bfloat16)])
def test_qlora_loads_4bit_on_this_process_gpu_in_the_recipe_dtype(tiny_model, monkeypatch, dtype, compute):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    calls = []
    monkeypatch.setattr(run_module, "load_model", lambda name, **kwargs: calls.append(kwargs) or tiny_model)
    config = ModelConfig(name_or_path="unused", dtype=dtype, lora={"r": 4, "alpha": 8}, qlora=True)
    run_module.build_model(config)
    (kwargs,) = calls
    quantization = kwargs["quantization"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_compute_dtype == compute
    assert kwargs["dtype"] == dtype and kwargs["device_map"] == {"": 3} and kwargs["device"] is None
