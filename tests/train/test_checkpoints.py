"""last_complete_checkpoint: a checkpoint a killed process was writing is never resumed."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import save_file

from prefopt.train.checkpoints import checkpoint_problem, last_complete_checkpoint


def write_checkpoint(root, step: int, *, adapter: bool = False):
    directory = root / f"checkpoint-{step}"
    directory.mkdir(parents=True)
    save_file({"w": torch.ones(4, 4)}, directory / ("adapter_model.safetensors" if adapter else "model.safetensors"))
    torch.save({"state": {0: torch.zeros(3)}}, directory / "optimizer.pt")
    torch.save({"last_epoch": step}, directory / "scheduler.pt")
    torch.save({"python": 1}, directory / "rng_state.pth")
    (directory / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return directory


def truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_complete_checkpoints_newest_first(tmp_path):
    write_checkpoint(tmp_path, 2)
    write_checkpoint(tmp_path, 10, adapter=True)
    (tmp_path / "runs").mkdir()  # not a checkpoint
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # 10 > 2 numerically
    assert last_complete_checkpoint(tmp_path / "missing") is None
    assert last_complete_checkpoint(tmp_path / "runs") is None


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda d: truncate(d / "trainer_state.json"), "not valid JSON"),
        (lambda d: (d / "trainer_state.json").write_text('{"global_step": 3}'), "global_step 3"),
        (lambda d: (d / "model.safetensors").unlink(), "no weights file"),
        (lambda d: truncate(d / "model.safetensors", 0.9), "model.safetensors: truncated"),
        (lambda d: truncate(d / "model.safetensors", 0.01), "unreadable safetensors header"),
        (lambda d: truncate(d / "optimizer.pt"), "optimizer.pt: not a complete torch archive"),
        (lambda d: truncate(d / "rng_state.pth"), "rng_state.pth: not a complete torch archive"),
    ],
)
def test_partial_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage, reason):
    write_checkpoint(tmp_path, 4)
    damage(write_checkpoint(tmp_path, 8))
    assert reason in checkpoint_problem(tmp_path / "checkpoint-8")
    with caplog.at_level(logging.WARNING, logger="prefopt.train.checkpoints"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-8" in caplog.text and reason in caplog.text
    assert (tmp_path / "checkpoint-8").is_dir()  # left in place


def test_sharded_weights_need_every_shard(tmp_path):
    directory = write_checkpoint(tmp_path, 5)
    (directory / "model.safetensors").rename(directory / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"w": "model-00001-of-00002.safetensors", "v": "model-00002-of-00002.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "missing shard(s) ['model-00002-of-00002.safetensors']" in checkpoint_problem(directory)
    save_file({"v": torch.ones(2)}, directory / "model-00002-of-00002.safetensors")
    assert checkpoint_problem(directory) is None
    assert last_complete_checkpoint(tmp_path) == str(directory)


def test_nothing_complete(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    assert last_complete_checkpoint(tmp_path) is None


def test_a_real_trainer_checkpoint_is_complete_and_its_torn_copy_is_not(tmp_path, tiny_model, tiny_tokenizer):
    from transformers import Trainer, TrainingArguments

    data = [{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}] * 4
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, save_steps=1, save_strategy="steps",
                             per_device_train_batch_size=2, report_to=[], use_cpu=True, disable_tqdm=True)
    Trainer(model=tiny_model, args=args, train_dataset=data).train()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    truncate(tmp_path / "checkpoint-2" / "model.safetensors")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-1")
