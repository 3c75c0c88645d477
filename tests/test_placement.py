"""Where prefopt puts the models it loads: the accelerator when there is one (CUDA mocked here), an explicit
override, the CPU for callers that place models themselves — for ``load_model``, the rounds' policies and
``prefopt annotate``."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from transformers import PreTrainedModel

from prefopt.commands import annotate
from prefopt.config import ModelConfig
from prefopt.models import load_model, resolve_device
from prefopt.online import policy as policy_module
from prefopt.online.run_dir import RunDir


@pytest.fixture()
def fake_cuda(monkeypatch) -> list[torch.device]:
    """CUDA reported available; ``PreTrainedModel.to`` records the target and keeps the model on the CPU."""
    moves: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def record(self, *args, **kwargs):
        moves.append(torch.device(args[0] if args else kwargs["device"]))
        return self

    monkeypatch.setattr(PreTrainedModel, "to", record)
    return moves


def test_auto_prefers_the_accelerator_and_explicit_devices_override(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu-please")


def test_load_model_places_unless_told_not_to(tiny_model_dir, fake_cuda):
    load_model(tiny_model_dir)
    load_model(tiny_model_dir, device="cpu")
    load_model(tiny_model_dir, device=None)  # the trainer / DeepSpeed place it
    assert fake_cuda == [torch.device("cuda"), torch.device("cpu")]


def test_rounds_policies_go_to_the_accelerator_and_the_merged_copy_is_built_on_cpu(tiny_model_dir, tiny_tokenizer,
                                                                                  tmp_path, fake_cuda, monkeypatch):
    config = ModelConfig(name_or_path=tiny_model_dir)
    run = RunDir(tmp_path / "run")
    policy_module.load_policy(config, run, 0)
    policy_module.load_policy(ModelConfig(name_or_path=tiny_model_dir, device="cpu"), run, 0)
    assert fake_cuda == [torch.device("cuda"), torch.device("cpu")]
    fake_cuda.clear()
    monkeypatch.setattr(policy_module, "_trained_rounds", lambda run, upto: [])
    monkeypatch.setattr(policy_module, "resolve", lambda name: (name + "-missing", "x.gguf"))  # force a merged copy
    policy_module.merged_policy_dir(config, run, 0, tiny_tokenizer)
    assert fake_cuda == [torch.device("cpu")]


def run_annotate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    annotate.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["annotate", *argv])
    return args.func(args)


@pytest.mark.parametrize("flag, want", [([], "cuda"), (["--device", "cpu"], "cpu")])
def test_annotate_treg_and_cdr_run_on_the_accelerator(tiny_model_dir, tmp_path, fake_cuda, flag, want):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Q?", "chosen": "A.", "rejected": "No idea."}) + "\n")
    assert run_annotate(["treg", "--model", tiny_model_dir, "--pairs", str(pairs), "--out", str(tmp_path / "t.jsonl"),
                         "--no-progress", *flag]) == 0
    assert run_annotate(["cdr", "--strong", tiny_model_dir, "--weak", tiny_model_dir, "--pairs", str(pairs),
                         "--out", str(tmp_path / "c.jsonl"), "--no-progress", *flag]) == 0
    assert fake_cuda == [torch.device(want)] * 3
