"""The vLLM engine's arguments, seeds and finish reasons, against a fake ``vllm`` module (vLLM is GPU-only)."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import pytest

from prefopt.online.completions import render_prompt
from prefopt.online.sampler import make_sampler
from prefopt.online.vllm_sampler import VLLMSampler, lora_rank_for_vllm
from prefopt.sampling import PromptItem, SamplingParams, stream_seed

PROMPTS = [PromptItem("p1", "Hi"), PromptItem("p2", [{"role": "user", "content": "two?"}])]


@dataclass
class FakeCompletion:
    token_ids: list[int]
    finish_reason: str
    text: str = ""


@dataclass
class FakeOutput:
    outputs: list[FakeCompletion]


class FakeLLM:
    instances: list["FakeLLM"] = []
    finish = "stop"

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[tuple] = []
        FakeLLM.instances.append(self)

    def generate(self, requests, sampling, use_tqdm=True, lora_request=None):
        self.calls.append((requests, sampling, lora_request))
        return [FakeOutput([FakeCompletion([10 + i, 11], FakeLLM.finish if i == 1 else "length")])
                for i, _ in enumerate(requests)]


@pytest.fixture()
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = lambda **kwargs: kwargs
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda name, index, path: ("lora", name, index, path)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)
    FakeLLM.instances.clear()
    FakeLLM.finish = "stop"
    return vllm


def test_engine_arguments_are_explicit(fake_vllm, tiny_tokenizer, tmp_path):
    VLLMSampler(tmp_path, tiny_tokenizer, dtype="bfloat16", gpu_memory_utilization=0.4)
    assert FakeLLM.instances[-1].kwargs == {
        "model": str(tmp_path), "dtype": "bfloat16", "trust_remote_code": False, "generation_config": "vllm",
        "enable_lora": False, "gpu_memory_utilization": 0.4,
    }
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 12}))
    make_sampler("vllm", tiny_tokenizer, model_path=tmp_path, dtype="float16", trust_remote_code=True,
                 lora_path=adapter)
    kwargs = FakeLLM.instances[-1].kwargs
    assert (kwargs["dtype"], kwargs["trust_remote_code"]) == ("float16", True)
    assert (kwargs["enable_lora"], kwargs["max_lora_rank"]) == (True, 16)  # the adapter's r=12, rounded up
    VLLMSampler(tmp_path, tiny_tokenizer, dtype="float32", lora_path=adapter, max_lora_rank=64)
    assert FakeLLM.instances[-1].kwargs["max_lora_rank"] == 64
    with pytest.raises(ValueError, match="adapter_config.json"):
        VLLMSampler(tmp_path, tiny_tokenizer, dtype="float32", lora_path=tmp_path / "missing")


def test_lora_rank_for_vllm():
    assert [lora_rank_for_vllm(r) for r in (1, 4, 8, 9, 300, 512)] == [1, 8, 8, 16, 320, 512]
    with pytest.raises(ValueError, match="above vLLM's largest"):
        lora_rank_for_vllm(1024)


def test_one_request_per_sample_with_its_own_seed(fake_vllm, tiny_tokenizer, tmp_path):
    sampler = VLLMSampler(tmp_path, tiny_tokenizer, dtype="float32")
    rollouts, stats = sampler.sample(PROMPTS, SamplingParams(n=2, temperature=0.7, top_p=0.9, seed=3), round_index=2)
    requests, sampling, lora = FakeLLM.instances[-1].calls[-1]
    assert lora is None
    expected_ids = [render_prompt(tiny_tokenizer, item.prompt) for item in PROMPTS]
    assert [r["prompt_token_ids"] for r in requests] == [expected_ids[0]] * 2 + [expected_ids[1]] * 2
    assert [s["seed"] for s in sampling] == [stream_seed(3, p, j) for p in ("p1", "p2") for j in (0, 1)]
    assert len({s["seed"] for s in sampling}) == 4  # sample j of every prompt is its own stream
    assert all(s["n"] == 1 and s["temperature"] == 0.7 and s["top_p"] == 0.9 and s["top_k"] == 0
               and s["repetition_penalty"] == 1.0 and s["min_p"] == 0.0 for s in sampling)
    assert [(r.prompt_id, r.sample_index, r.finish_reason, r.round) for r in rollouts] == [
        ("p1", 0, "length", 2), ("p1", 1, "stop", 2), ("p2", 0, "length", 2), ("p2", 1, "length", 2)]
    assert stats.generated_tokens == 8 and stats.rollouts == 4
    greedy = VLLMSampler(tmp_path, tiny_tokenizer, dtype="float32")
    greedy.sample(PROMPTS, SamplingParams(greedy=True))
    assert all(s["temperature"] == 0.0 for s in FakeLLM.instances[-1].calls[-1][1])


@pytest.mark.parametrize("reason", ["abort", "error"])
def test_aborted_or_failed_requests_are_not_scored(fake_vllm, tiny_tokenizer, tmp_path, reason):
    FakeLLM.finish = reason
    sampler = VLLMSampler(tmp_path, tiny_tokenizer, dtype="float32")
    with pytest.raises(RuntimeError, match=rf"prompt 'p1' sample 1 with finish_reason '{reason}'"):
        sampler.sample(PROMPTS, SamplingParams(n=2))


def test_lora_request_is_passed(fake_vllm, tiny_tokenizer, tmp_path):
    sampler = VLLMSampler(tmp_path, tiny_tokenizer, dtype="float32", lora_path=tmp_path, max_lora_rank=8)
    sampler.sample(PROMPTS[:1], SamplingParams())
    assert FakeLLM.instances[-1].calls[-1][2] == ("lora", "policy", 1, str(tmp_path))
