"""PreferenceTrainer from plain Python on the tiny model: metrics, reference modes, reference-free losses."""

from __future__ import annotations

import math

import peft
import pytest
import torch
from conftest import make_tiny_model
from train_helpers import LENGTH_METRICS, TRL_METRICS, LogRecorder, pairs_dataset, quiet_config

import prefopt.train.trainer as trainer_module
from prefopt.losses import get_loss
from prefopt.train import PreferenceTrainer


def lora(model):
    return peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    )


def test_plain_python_logs_trl_and_length_metrics(tmp_path, tiny_tokenizer):
    """One step over the whole (raw, untokenized) dataset: the logged metrics are exact dataset means."""
    recorder = LogRecorder()
    trainer = PreferenceTrainer(
        make_tiny_model(tiny_tokenizer),
        quiet_config(tmp_path, max_steps=1, per_device_train_batch_size=8),
        loss=get_loss("dpo", beta=0.1),
        train_dataset=pairs_dataset(8),
        eval_dataset=pairs_dataset(4),
        processing_class=tiny_tokenizer,
        callbacks=[recorder],
    )
    data = trainer.train_dataset  # tokenized here, with the precomputed reference columns
    assert {"prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps"} <= set(
        data.column_names
    )
    trainer.train()
    log = recorder.logs[0]
    assert set(TRL_METRICS + LENGTH_METRICS) <= set(log)
    assert log["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 1
    assert log["rewards/chosen"] == log["rewards/margins"] == log["rewards/accuracies"] == 0
    assert log["length/chosen"] == pytest.approx(sum(map(len, data["chosen_ids"])) / 8)
    assert log["length/rejected"] == pytest.approx(sum(map(len, data["rejected_ids"])) / 8)
    assert log["logps/chosen"] == pytest.approx(sum(map(sum, data["ref_chosen_logps"])) / 8, rel=1e-5)
    assert log["logps/rejected"] == pytest.approx(sum(map(sum, data["ref_rejected_logps"])) / 8, rel=1e-5)

    metrics = trainer.evaluate()
    assert {f"eval_{name}" for name in TRL_METRICS + LENGTH_METRICS} <= set(metrics)
    assert metrics["eval_rewards/margins"] > 0  # one step of DPO already separates the pairs
    assert not any(k.startswith("eval_") for k in recorder.logs[0])


def run_losses(tmp_path, model, tokenizer, reference: str, ref_model=None, loss: str = "dpo") -> list[float]:
    recorder = LogRecorder()
    trainer = PreferenceTrainer(
        model,
        quiet_config(tmp_path / reference),
        loss=get_loss(loss, beta=0.1),
        train_dataset=pairs_dataset(8),
        processing_class=tokenizer,
        ref_model=ref_model,
        reference=reference,
        callbacks=[recorder],
    )
    trainer.train()
    return recorder.train_losses()


def test_reference_modes_agree_with_lora(tmp_path, tiny_tokenizer):
    """precomputed (adapters off), live (a separate base model) and adapter_disabled: same losses, step by step."""
    losses = {
        "precomputed": run_losses(
            tmp_path, lora(make_tiny_model(tiny_tokenizer)), tiny_tokenizer, "precomputed"
        ),
        "live": run_losses(
            tmp_path,
            lora(make_tiny_model(tiny_tokenizer)),
            tiny_tokenizer,
            "live",
            ref_model=make_tiny_model(tiny_tokenizer),
        ),
        "adapter_disabled": run_losses(
            tmp_path, lora(make_tiny_model(tiny_tokenizer)), tiny_tokenizer, "adapter_disabled"
        ),
    }
    first = losses["precomputed"]
    assert len(first) == 3 and first[0] == pytest.approx(math.log(2), abs=1e-6) and first[2] < first[0]
    for mode in ("live", "adapter_disabled"):
        torch.testing.assert_close(losses[mode], first, rtol=1e-5, atol=1e-6, msg=f"{mode} vs precomputed")


def test_precomputed_and_live_agree_with_a_different_reference(tmp_path, tiny_tokenizer):
    """Full fine-tuning against a reference that is not the initial policy (so step 1 is not log 2)."""
    precomputed = run_losses(
        tmp_path,
        make_tiny_model(tiny_tokenizer),
        tiny_tokenizer,
        "precomputed",
        ref_model=make_tiny_model(tiny_tokenizer, seed=1),
    )
    live = run_losses(
        tmp_path,
        make_tiny_model(tiny_tokenizer),
        tiny_tokenizer,
        "live",
        ref_model=make_tiny_model(tiny_tokenizer, seed=1),
    )
    assert abs(precomputed[0] - math.log(2)) > 1e-3
    torch.testing.assert_close(live, precomputed, rtol=1e-5, atol=1e-6)


def test_reference_free_loss_skips_the_reference(tmp_path, tiny_tokenizer, monkeypatch):
    def no_reference(*args, **kwargs):
        raise AssertionError("a reference-free loss must not compute reference log-probs")

    monkeypatch.setattr(trainer_module, "add_reference_logps", no_reference)
    recorder = LogRecorder()
    trainer = PreferenceTrainer(
        make_tiny_model(tiny_tokenizer),
        quiet_config(tmp_path, max_steps=2),
        loss=get_loss("simpo", beta=2.5, gamma_beta_ratio=0.55),
        train_dataset=pairs_dataset(8),
        processing_class=tiny_tokenizer,
        callbacks=[recorder],
    )
    assert trainer.reference is None and trainer.ref_model is None
    assert "ref_chosen_logps" not in trainer.train_dataset.column_names
    trainer.train()
    assert len(recorder.train_losses()) == 2 and set(TRL_METRICS) <= set(recorder.logs[0])
    with pytest.raises(ValueError, match="reference-free; do not pass reference= or ref_model="):
        PreferenceTrainer(
            make_tiny_model(tiny_tokenizer),
            quiet_config(tmp_path),
            loss=get_loss("simpo"),
            train_dataset=pairs_dataset(2),
            processing_class=tiny_tokenizer,
            reference="live",
        )


def test_reference_settings_the_model_cannot_provide(tmp_path, tiny_tokenizer):
    def build(model, **kwargs):
        return PreferenceTrainer(
            model,
            quiet_config(tmp_path),
            loss=get_loss("dpo"),
            train_dataset=pairs_dataset(2),
            processing_class=tiny_tokenizer,
            **kwargs,
        )

    with pytest.raises(ValueError, match="needs a PEFT model"):
        build(make_tiny_model(tiny_tokenizer), reference="adapter_disabled")
    with pytest.raises(ValueError, match="reference='live' with a PEFT policy: pass ref_model"):
        build(lora(make_tiny_model(tiny_tokenizer)), reference="live")
    with pytest.raises(ValueError, match="reference must be one of"):
        build(make_tiny_model(tiny_tokenizer), reference="cached")
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        PreferenceTrainer(
            make_tiny_model(tiny_tokenizer),
            quiet_config(tmp_path, remove_unused_columns=True),
            loss=get_loss("dpo"),
            train_dataset=pairs_dataset(2),
            processing_class=tiny_tokenizer,
        )
