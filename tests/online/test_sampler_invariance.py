"""Batch-invariant sampling, decoding only running rows, no generation_config leak, progress, rendering.

The ``lively_model``'s logits are far apart, so the floating-point differences between batch
shapes never flip a token and the rollouts must be exactly equal.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
from tokenizers.processors import TemplateProcessing

from prefopt.data.tokenize import encode_pairs
from prefopt.online import hf_sampler as hf_module
from prefopt.online.decoding import row_uniforms, select_tokens
from prefopt.online.sampler import HFSampler
from prefopt.sampling import PromptItem, SamplingParams, stream_seed

PROMPTS = [
    PromptItem("a", "Hi"),
    PromptItem("b", [{"role": "user", "content": "What is two plus two, please?"}]),
    PromptItem("c", "A longer plain prompt here"),
    PromptItem("d", "x"),
    PromptItem("e", [{"role": "user", "content": "ok"}]),
]
SAMPLE = dict(n=3, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=5)


def by_key(rollouts):
    return {(r.prompt_id, r.sample_index): (r.completion_ids, r.finish_reason) for r in rollouts}


@pytest.fixture()
def stopping_model(lively_model, tiny_tokenizer):
    """Several frequent tokens end a completion, so rows finish at different steps (the batch shrinks)."""
    sampler = HFSampler(lively_model, tiny_tokenizer, progress=False)
    free, _ = sampler.sample(PROMPTS, SamplingParams(**{**SAMPLE, "max_new_tokens": 6}))
    counts: dict[int, int] = {}
    for r in free:
        for t in r.completion_ids[1:]:
            counts[t] = counts.get(t, 0) + 1
    stops = sorted(counts, key=counts.get, reverse=True)[:4]
    lively_model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, *stops]
    return lively_model


def test_rollouts_do_not_depend_on_batch_size_order_or_batch_mates(stopping_model, tiny_tokenizer):
    sampler = HFSampler(stopping_model, tiny_tokenizer, progress=False)
    params = SamplingParams(**SAMPLE, batch_size=len(PROMPTS))
    reference = by_key(sampler.sample(PROMPTS, params)[0])
    finishes = {f for _, f in reference.values()}
    assert finishes == {"stop", "length"}  # some rows finished early, some ran to the limit
    assert len({tuple(ids) for ids, _ in reference.values()}) == len(reference)  # every sample its own stream
    for batch_size in (1, 3):
        got = by_key(sampler.sample(PROMPTS, SamplingParams(**SAMPLE, batch_size=batch_size))[0])
        assert got == reference, f"batch_size={batch_size}"
    shuffled = PROMPTS[:]
    random.Random(0).shuffle(shuffled)
    assert by_key(sampler.sample(shuffled, params)[0]) == reference
    mates = [PromptItem("other", "Completely different company"), PROMPTS[1], PromptItem("z", "zz")]
    got = by_key(sampler.sample(mates, SamplingParams(**SAMPLE, batch_size=3))[0])
    assert {k: v for k, v in got.items() if k[0] == "b"} == {k: v for k, v in reference.items() if k[0] == "b"}


def test_greedy_equals_generate_one_prompt_at_a_time(stopping_model, tiny_tokenizer):
    sampler = HFSampler(stopping_model, tiny_tokenizer, progress=False)
    rollouts, _ = sampler.sample(PROMPTS, SamplingParams(greedy=True, max_new_tokens=10, batch_size=len(PROMPTS)))
    for item, rollout in zip(PROMPTS, rollouts):
        ids = torch.tensor([hf_module.render_prompt(tiny_tokenizer, item.prompt)])
        out = stopping_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                                      pad_token_id=tiny_tokenizer.pad_token_id)
        expected = out[0, ids.shape[1]:].tolist()
        assert rollout.completion_ids == expected[: len(rollout.completion_ids)]
        if rollout.finish_reason == "length":
            assert len(expected) == 10


def test_finished_rows_leave_the_batch(stopping_model, tiny_tokenizer, monkeypatch):
    sampler = HFSampler(stopping_model, tiny_tokenizer, progress=False)
    widths: list[int] = []
    forward = stopping_model.forward

    def spy(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(stopping_model, "forward", spy)
    rollouts, _ = sampler.sample(PROMPTS, SamplingParams(**SAMPLE, batch_size=len(PROMPTS)))
    assert widths[0] == len(PROMPTS)  # the prefill runs each prompt once, not n times
    decode = widths[1:]
    assert decode[0] == len(rollouts) and decode == sorted(decode, reverse=True) and decode[-1] < decode[0]
    running = [sum(r.length > step for r in rollouts) for step in range(1, len(decode) + 1)]
    # every decode step runs at most the running rows plus the finished ones not yet compacted away (< 1/8)
    assert all(run <= width < max(run + 1, run * 8 / 7 + 1) for run, width in zip(running, decode))


def test_model_generation_config_does_not_leak_in(lively_model, tiny_tokenizer):
    clean = HFSampler(copy.deepcopy(lively_model), tiny_tokenizer, progress=False)
    lively_model.generation_config.update(repetition_penalty=3.0, top_k=2, temperature=0.05, top_p=0.3,
                                          no_repeat_ngram_size=1, do_sample=False, max_new_tokens=2)
    leaky = HFSampler(lively_model, tiny_tokenizer, progress=False)
    for params in (SamplingParams(**SAMPLE), SamplingParams(greedy=True, max_new_tokens=10)):
        want = by_key(clean.sample(PROMPTS, params)[0])
        assert by_key(leaky.sample(PROMPTS, params)[0]) == want
        assert any(len(set(ids)) < len(ids) for ids, _ in want.values())  # repeats that a penalty would forbid


def test_progress_advances_as_rollouts_finish(stopping_model, tiny_tokenizer, monkeypatch):
    updates: list[int] = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total = total

        def update(self, count):
            updates.append(count)

        def set_postfix(self, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setattr(hf_module, "tqdm", Bar)
    rollouts, _ = HFSampler(stopping_model, tiny_tokenizer).sample(PROMPTS, SamplingParams(**SAMPLE, batch_size=5))
    assert sum(updates) == len(rollouts) and len(updates) > 1  # not one jump at the end of the batch


def test_sampled_prompt_ids_are_the_training_prompt_ids(lively_model, tiny_tokenizer, monkeypatch):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    bos = tokenizer.bos_token
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    seen: list[list[int]] = []
    forward = lively_model.forward

    def spy(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 1:  # the prefill
            for ids, mask in zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist()):
                seen.append([t for t, m in zip(ids, mask) if m])
        return forward(*args, **kwargs)

    sampler = HFSampler(lively_model, tokenizer, progress=False)
    monkeypatch.setattr(lively_model, "forward", spy)
    plain = ["Hi there", "A longer plain prompt"]
    chat = [[{"role": "user", "content": "two plus two?"}]]
    sampler.sample(
        [PromptItem(str(i), p) for i, p in enumerate(plain + chat)], SamplingParams(greedy=True, max_new_tokens=2)
    )
    training = encode_pairs(plain, ["a", "b"], ["c", "d"], tokenizer)[0]
    training += encode_pairs(chat, [[{"role": "assistant", "content": "4"}]],
                             [[{"role": "assistant", "content": "5"}]], tokenizer)[0]
    assert seen == [list(ids) for ids in training]
    assert seen[0][0] == tokenizer.bos_token_id  # plain text gets the tokenizer's BOS, as in training
    assert seen[2].count(tokenizer.bos_token_id) == 0  # the chat template writes its own specials


# ----------------------------------------------------------------- token selection


def test_stream_seed_is_stable_and_distinct():
    assert stream_seed(0, "p", 0, 1) == stream_seed(0, "p", 0, 1)
    values = {stream_seed(s, p, j, t) for s in (0, 1) for p in ("p", "q") for j in (0, 1) for t in (0, 1)}
    assert len(values) == 16 and all(0 <= v < 2**63 for v in values)
    assert stream_seed(0, "p", 0) == 5650462520607353380  # fixed across processes and Python versions
    u = row_uniforms(0, [("p", 0), ("p", 1)], step=3)
    assert u.dtype == torch.float64 and ((0 <= u) & (u < 1)).all() and u[0] != u[1]


def test_select_tokens_inverse_cdf_follows_the_distribution():
    probs = torch.tensor([0.1, 0.6, 0.3])
    logits = probs.log().expand(1000, 3)
    uniforms = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000  # evenly spaced: exact frequencies
    tokens = select_tokens(logits, SamplingParams(), uniforms)
    assert torch.bincount(tokens, minlength=3).tolist() == [100, 600, 300]
    # top_p = 0.8: the nucleus is {1, 2} (0.6 + 0.3 >= 0.8), renormalised to 2/3, 1/3
    tokens = select_tokens(logits, SamplingParams(top_p=0.8), uniforms)
    assert torch.bincount(tokens, minlength=3).tolist() == [0, 667, 333]
    # temperature 0.5 squares the probabilities: 0.01, 0.36, 0.09 over 0.46 (CDF 0.0217, 0.8043)
    tokens = select_tokens(logits, SamplingParams(temperature=0.5), uniforms)
    assert torch.bincount(tokens, minlength=3).tolist() == [22, 782, 196]


def test_select_tokens_greedy_and_tiny_top_p_are_argmax():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    u = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert select_tokens(logits, SamplingParams(greedy=True)).tolist() == logits.argmax(-1).tolist()
    assert select_tokens(logits, SamplingParams(top_p=1e-9), u).tolist() == logits.argmax(-1).tolist()
    with pytest.raises(ValueError, match="one uniform per row"):
        select_tokens(logits, SamplingParams(), u[:3])


def naive_nucleus(logits: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """The definition, row by row: full stable sort, smallest prefix of mass >= top_p, inverse CDF."""
    out = []
    for row, draw in zip(logits, u.tolist()):
        probs = torch.softmax(row.double() / temperature, dim=-1)
        sorted_probs, order = torch.sort(probs, descending=True, stable=True)
        cumulative = sorted_probs.cumsum(0)
        kept = int(((cumulative - sorted_probs) < top_p).sum())
        target = draw * float(cumulative[kept - 1])
        position = min(int(torch.searchsorted(cumulative[:kept], torch.tensor([target], dtype=torch.float64),
                                              right=True)), kept - 1)
        out.append(int(order[position]))
    return torch.tensor(out)


@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])  # flat (full sort), medium (2048 candidates), peaked (64)
def test_select_tokens_matches_the_definition_and_each_row_alone(scale):
    generator = torch.Generator().manual_seed(int(scale * 10))
    logits = torch.randn(24, 5000, generator=generator) * scale
    u = torch.rand(24, dtype=torch.float64, generator=generator)
    params = SamplingParams(temperature=0.7, top_p=0.9)
    tokens = select_tokens(logits, params, u)
    assert tokens.tolist() == naive_nucleus(logits, 0.7, 0.9, u).tolist()
    assert [int(select_tokens(logits[i : i + 1], params, u[i : i + 1])) for i in range(24)] == tokens.tolist()
    free = SamplingParams(temperature=0.7)
    alone = [int(select_tokens(logits[i : i + 1], free, u[i : i + 1])) for i in range(24)]
    assert select_tokens(logits, free, u).tolist() == alone


def test_top_p_one_tail_beyond_the_candidates_keeps_the_distribution(monkeypatch):
    from prefopt.online import decoding

    monkeypatch.setattr(decoding, "CANDIDATES", (4,))
    probs = torch.softmax(torch.randn(40, generator=torch.Generator().manual_seed(0)), dim=0).double()
    n = 100_000
    uniforms = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    tokens = torch.cat([select_tokens(probs.log().float().expand(10_000, 40), SamplingParams(), chunk)
                        for chunk in uniforms.split(10_000)])
    counts = torch.bincount(tokens, minlength=40).double()
    assert (counts - probs * n).abs().max() <= 2  # every token, head and tail, at its probability
