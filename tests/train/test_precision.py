"""bf16 autocast on fp32 weights: the reference runs in the policy's precision, so step 0 is exactly DPO's
ln 2 with zero margins, in every reference mode."""

from __future__ import annotations

import math

import peft
import pytest
import torch
from conftest import make_tiny_model
from train_helpers import LogRecorder, pairs_dataset, quiet_config

from prefopt import reference
from prefopt.data import load_pairs, tokenize_pairs
from prefopt.losses import get_loss
from prefopt.train import PreferenceTrainer


@pytest.mark.parametrize("mode", ["precomputed", "live", "adapter_disabled"])
def test_step_zero_is_ln2_with_zero_margins_under_bf16_autocast(tmp_path, tiny_tokenizer, mode):
    model = make_tiny_model(tiny_tokenizer)
    if mode == "adapter_disabled":
        model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                           task_type="CAUSAL_LM"))
    recorder = LogRecorder()
    trainer = PreferenceTrainer(
        model, quiet_config(tmp_path, max_steps=1, bf16=True, use_cpu=True), loss=get_loss("dpo", beta=0.1),
        train_dataset=pairs_dataset(8), processing_class=tiny_tokenizer, reference=mode, callbacks=[recorder],
    )
    assert trainer.accelerator.native_amp  # the policy's forward really is autocast to bf16
    trainer.train()
    first = next(log for log in recorder.logs if "loss" in log)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["rewards/margins"] == 0.0 and first["rewards/chosen"] == 0.0


def test_the_cache_keeps_precisions_apart(tiny_tokenizer, tmp_path):
    model, pairs = make_tiny_model(tiny_tokenizer), pairs_dataset(2)
    tokenized, _ = tokenize_pairs(load_pairs(pairs), tiny_tokenizer, max_length=256, max_prompt_length=64)
    plain = reference.add_reference_logps(tokenized, model, cache_dir=tmp_path, progress=False)
    bf16 = reference.add_reference_logps(tokenized, model, cache_dir=tmp_path, progress=False,
                                         autocast_dtype=torch.bfloat16)
    assert len(list(tmp_path.iterdir())) == 2
    assert plain["ref_chosen_logps"] != bf16["ref_chosen_logps"]
