"""The sampler's prefill of a batch's shared prompt prefix and its in-place key/value cache.

Both are speed-ups only: rollouts must be exactly those of prompts decoded one at a time (the
``lively_model``'s logit gaps are far above the floating-point differences of batch shapes), and
the in-place cache must hand attention the very tensors ``DynamicCache`` would.
"""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest
import torch
from transformers import Gemma3TextConfig
from transformers.cache_utils import DynamicLayer

from prefopt.online import hf_sampler as hf_module
from prefopt.online.completions import render_prompt
from prefopt.online.kv_cache import PreallocatedLayer, preallocated_cache
from prefopt.online.sampler import HFSampler
from prefopt.sampling import PromptItem, SamplingParams

SYSTEM = {"role": "system", "content": "You are a careful assistant. Answer briefly."}
QUESTIONS = ["Hi", "What is two plus two, please?", "ok", "Tom has 3 apples and buys 2 more."]
PROMPTS = [PromptItem(f"q{i}", [SYSTEM, {"role": "user", "content": q}]) for i, q in enumerate(QUESTIONS)]
SAMPLE = dict(n=3, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=5)


def by_key(rollouts):
    return {(r.prompt_id, r.sample_index): (r.completion_ids, r.finish_reason) for r in rollouts}


@pytest.mark.parametrize(
    "encoded, expected",
    [
        ([[1, 2, 3, 4], [1, 2, 5]], 2),
        ([[1, 2, 3], [1, 2, 3, 4]], 2),  # the shorter prompt keeps its last token
        ([[7, 1], [8, 1]], 0),
        ([[1, 2, 3]], 2),
        ([[5], [5]], 0),
    ],
)
def test_shared_prefix_length(encoded, expected):
    assert hf_module.shared_prefix_length(encoded) == expected


def test_shared_prefix_is_prefilled_once_and_changes_no_rollout(lively_model, tiny_tokenizer, monkeypatch):
    encoded = [render_prompt(tiny_tokenizer, item.prompt) for item in PROMPTS]
    shared = hf_module.shared_prefix_length(encoded)
    assert shared >= hf_module.MIN_SHARED_PREFIX
    sampler = HFSampler(lively_model, tiny_tokenizer, progress=False)
    shapes: list[tuple[int, int]] = []
    forward = lively_model.forward

    def spy(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(lively_model, "forward", spy)
    for params in (SamplingParams(**SAMPLE), SamplingParams(greedy=True, max_new_tokens=10)):
        shapes.clear()
        batched = by_key(sampler.sample(PROMPTS, replace(params, batch_size=len(PROMPTS)))[0])
        width = max(len(ids) for ids in encoded)
        assert shapes[:2] == [(1, shared), (len(PROMPTS), width - shared)]  # prefix once, then each prompt's rest
        alone = by_key(sampler.sample(PROMPTS, replace(params, batch_size=1))[0])
        assert batched == alone
    monkeypatch.setattr(hf_module, "MIN_SHARED_PREFIX", 10**6)  # the prefix path off: the same rollouts
    assert by_key(sampler.sample(PROMPTS, SamplingParams(**SAMPLE, batch_size=len(PROMPTS)))[0]) == by_key(
        sampler.sample(PROMPTS, SamplingParams(**SAMPLE, batch_size=1))[0])


def test_greedy_with_a_shared_prefix_equals_generate(lively_model, tiny_tokenizer):
    rollouts, _ = HFSampler(lively_model, tiny_tokenizer, progress=False).sample(
        PROMPTS, SamplingParams(greedy=True, max_new_tokens=10, batch_size=len(PROMPTS)))
    for item, rollout in zip(PROMPTS, rollouts):
        ids = torch.tensor([render_prompt(tiny_tokenizer, item.prompt)])
        out = lively_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                                    pad_token_id=tiny_tokenizer.pad_token_id)
        assert rollout.completion_ids == out[0, ids.shape[1]:].tolist()[: len(rollout.completion_ids)]


def test_preallocated_layer_matches_dynamic_layer_through_every_operation():
    generator = torch.Generator().manual_seed(0)

    def states(rows, length):
        return (torch.randn(rows, 2, length, 4, generator=generator), torch.randn(rows, 2, length, 4, generator=generator))

    fast, slow = PreallocatedLayer(capacity=6), DynamicLayer()
    steps = [("update", states(3, 4)), ("repeat", 2), ("update", states(6, 1)), ("select", torch.tensor([0, 2, 5])),
             ("update", states(3, 1)), ("update", states(3, 3)), ("crop", -2), ("update", states(3, 1))]
    for op, arg in steps:  # the third update outgrows the capacity of 6: the buffer grows
        for layer in (fast, slow):
            if op == "update":
                out = layer.update(*arg)
            elif op == "repeat":
                layer.batch_repeat_interleave(arg)
            elif op == "select":
                layer.batch_select_indices(arg)
            else:
                layer.crop(arg)
        assert fast.get_seq_length() == slow.get_seq_length()
        assert torch.equal(fast.keys, slow.keys) and torch.equal(fast.values, slow.values), op
    assert fast.capacity >= 9
    assert torch.equal(out[0], slow.keys)


def test_preallocated_cache_replaces_only_full_attention_layers(tiny_model):
    cache = preallocated_cache(tiny_model.config, 4)  # outgrown by the second forward
    assert cache.layers and all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)
    name = "cache" if "cache" in inspect.signature(tiny_model.forward).parameters else "past_key_values"
    ids = torch.arange(7)[None]
    with torch.inference_mode():
        want = tiny_model(input_ids=ids).logits
        first = tiny_model(input_ids=ids[:, :3], use_cache=True, **{name: cache}).logits
        rest = tiny_model(input_ids=ids[:, 3:], use_cache=True, **{name: cache}).logits
    torch.testing.assert_close(torch.cat([first, rest], dim=1), want)
    gemma = Gemma3TextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=4,
                             layer_types=["sliding_attention", "full_attention"])
    kinds = [type(layer) for layer in preallocated_cache(gemma, 8).layers]
    assert kinds[0] is not PreallocatedLayer and issubclass(kinds[0], DynamicLayer) and kinds[1] is PreallocatedLayer
