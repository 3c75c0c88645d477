"""The rollout sampler: batched left-padded generation, grouping, seeds, EOS handling, engine choice.

Uses ``lively_model`` (tests/conftest.py), whose greedy continuations vary token by token.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prefopt
from prefopt.online import sampler as sampler_module
from prefopt.online.completions import render_prompt, split_completion
from prefopt.online.sampler import HFSampler, make_sampler, resolve_engine
from prefopt.sampling import PromptItem, SamplingParams

REPO = Path(prefopt.__file__).resolve().parents[1]
PROMPTS = [
    PromptItem("short", "Hi"),
    PromptItem("chat", [{"role": "user", "content": "What is two plus two, please?"}]),
    PromptItem("plain", "A longer plain prompt here"),
]


def greedy(max_new_tokens: int = 12, **kwargs) -> SamplingParams:
    return SamplingParams(greedy=True, max_new_tokens=max_new_tokens, **kwargs)


def test_left_padded_batch_equals_one_prompt_at_a_time(lively_model, tiny_tokenizer):
    sampler = HFSampler(lively_model, tiny_tokenizer, progress=False)
    widths = {len(render_prompt(tiny_tokenizer, item.prompt)) for item in PROMPTS}
    assert len(widths) == len(PROMPTS)  # different lengths, so the batch really is padded
    batched, _ = sampler.sample(PROMPTS, greedy(batch_size=len(PROMPTS)))
    singles = [sampler.sample([item], greedy(batch_size=1))[0][0] for item in PROMPTS]
    assert [r.prompt_id for r in batched] == [item.id for item in PROMPTS]
    for got, want in zip(batched, singles):
        assert got.completion_ids == want.completion_ids
        assert len(set(got.completion_ids)) > 1  # a varied continuation, not one repeated token


def test_n_samples_are_grouped_by_prompt_in_input_order(lively_model, tiny_tokenizer):
    sampler = HFSampler(lively_model, tiny_tokenizer, progress=False)
    rollouts, stats = sampler.sample(
        PROMPTS, SamplingParams(n=3, max_new_tokens=6, batch_size=2, seed=1), round_index=4
    )
    assert [(r.prompt_id, r.sample_index) for r in rollouts] == [
        (item.id, i) for item in PROMPTS for i in range(3)
    ]
    assert all(r.round == 4 and r.prompt == item.prompt for r, item in zip(rollouts[::3], PROMPTS))
    assert (stats.prompts, stats.rollouts) == (3, 9)
    assert stats.generated_tokens == sum(r.length for r in rollouts)
    # top_p ~ 0 keeps only the argmax token: each sample repeats its own prompt's greedy continuation,
    # so the rows belong to the right prompts.
    pairs, _ = sampler.sample(PROMPTS, SamplingParams(n=2, top_p=1e-9, max_new_tokens=12, batch_size=3))
    singles = [sampler.sample([item], greedy(batch_size=1))[0][0] for item in PROMPTS]
    for index, single in enumerate(singles):
        assert pairs[2 * index].completion_ids == pairs[2 * index + 1].completion_ids == single.completion_ids


def test_same_seed_same_rollouts_different_seed_different(lively_model, tiny_tokenizer):
    sampler = HFSampler(lively_model, tiny_tokenizer, progress=False)

    def ids(seed: int) -> list[list[int]]:
        rollouts, _ = sampler.sample(PROMPTS, SamplingParams(n=2, max_new_tokens=8, batch_size=2, seed=seed))
        return [r.completion_ids for r in rollouts]

    first = ids(7)
    assert ids(7) == first
    assert ids(8) != first


def test_finish_reason_stop_keeps_eos_and_counts_it(lively_model, tiny_tokenizer):
    sampler = HFSampler(lively_model, tiny_tokenizer, progress=False)
    free = sampler.sample(PROMPTS[:1], greedy(max_new_tokens=12))[0][0]
    assert free.finish_reason == "length" and free.length == 12 == len(free.completion_ids)
    # Declare the model's 4th greedy token an end-of-sequence token: generation must stop there.
    stop_token = free.completion_ids[3]
    cut = free.completion_ids.index(stop_token) + 1
    lively_model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, stop_token]
    stopped, stats = sampler.sample(PROMPTS[:1], greedy(max_new_tokens=12))
    rollout = stopped[0]
    assert rollout.finish_reason == "stop"
    assert rollout.completion_ids == free.completion_ids[:cut] and rollout.completion_ids[-1] == stop_token
    assert rollout.length == cut == stats.generated_tokens


def test_sampling_restores_training_mode(lively_model, tiny_tokenizer):
    lively_model.train()
    HFSampler(lively_model, tiny_tokenizer, progress=False).sample(PROMPTS[:1], greedy(max_new_tokens=2))
    assert lively_model.training


def test_hf_sampler_needs_a_pad_token(tiny_model, tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        HFSampler(tiny_model, tokenizer)


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ([5, 7, 2, 9], ([5, 7, 2], "stop")),
        ([5, 3, 2, 9], ([5, 3], "stop")),  # the first of several EOS ids ends it
        ([2], ([2], "stop")),
        ([5, 7, 9], ([5, 7, 9], "length")),
        ([], ([], "length")),
    ],
)
def test_split_completion(generated, expected):
    assert split_completion(generated, {2, 3}) == expected


def test_render_prompt_chat_and_plain(tiny_tokenizer):
    chat = render_prompt(tiny_tokenizer, [{"role": "user", "content": "hello"}])
    assert tiny_tokenizer.decode(chat) == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    plain = render_prompt(tiny_tokenizer, "hello")
    assert tiny_tokenizer.decode(plain) == "hello" and len(plain) == 5  # byte-level, no special tokens


def test_resolve_engine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_engine("auto") == "hf"
    assert resolve_engine("vllm") == "vllm" and resolve_engine("hf") == "hf"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sampler_module.importlib.util, "find_spec", lambda name: None)
    assert resolve_engine("auto") == "hf"  # CUDA but no vLLM installed
    with pytest.raises(ValueError, match="'auto', 'hf' or 'vllm'"):
        resolve_engine("sglang")


def test_make_sampler(monkeypatch, tiny_model, tiny_tokenizer):
    assert isinstance(make_sampler("hf", tiny_tokenizer, model=tiny_model, progress=False), HFSampler)
    with pytest.raises(ValueError, match="pass model"):
        make_sampler("hf", tiny_tokenizer)
    with pytest.raises(ValueError, match="model_path"):
        make_sampler("vllm", tiny_tokenizer)
    with pytest.raises(ValueError, match="explicit dtype"):
        make_sampler("vllm", tiny_tokenizer, model_path="/nonexistent")
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now fails, installed or not
    with pytest.raises(ImportError, match=r"prefopt\[gpu\]"):
        make_sampler("vllm", tiny_tokenizer, model_path="/nonexistent", dtype="float32")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, ">= 1"),
        ({"max_new_tokens": 0}, ">= 1"),
        ({"batch_size": 0}, ">= 1"),
        ({"temperature": 0.0}, "greedy=True"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"greedy": True, "n": 2}, "identical samples"),
    ],
)
def test_sampling_params_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_greedy_ignores_sampling_settings():
    assert SamplingParams(greedy=True, temperature=0.0, top_p=0.0).greedy


def test_sampling_types_import_without_the_online_package():
    """prefopt.sampling is the neutral layer: importing it, or the evaluator, loads no engine."""
    code = (
        "import sys, prefopt.sampling; assert not [m for m in sys.modules if m.startswith('prefopt.online')]; "
        "import prefopt.evaluate.accuracy; assert 'prefopt.online.sampler' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
