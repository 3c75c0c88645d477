"""The chunked log-prob engine against the naive full-logits computation (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from peft import LoraConfig, get_peft_model
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from prefopt.logps import (
    LogitTransform,
    completion_logps,
    pair_logps,
    reference_pair_logps,
    selected_token_logps,
)


def make_batch(vocab: int, prompt_lens, completion_lens, seed: int = 0):
    """Right-padded rows of prompt + completion; returns ids, attention and completion masks."""
    gen = torch.Generator().manual_seed(seed)
    total = max(p + c for p, c in zip(prompt_lens, completion_lens)) + 2
    ids = torch.zeros(len(prompt_lens), total, dtype=torch.long)
    attn = torch.zeros_like(ids)
    comp = torch.zeros_like(ids, dtype=torch.bool)
    for n, (p, c) in enumerate(zip(prompt_lens, completion_lens)):
        ids[n, : p + c] = torch.randint(0, vocab, (p + c,), generator=gen)
        attn[n, : p + c] = 1
        comp[n, p : p + c] = True
    return ids, attn, comp


def naive_logps(model, ids, attn, comp):
    """The textbook computation: full fp32 log-softmax, shift by one, gather, left-justify."""
    logits = model(input_ids=ids, attention_mask=attn).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = comp[:, 1:]
    width = int(mask.sum(1).max())
    out = torch.zeros(ids.shape[0], width)
    out_mask = torch.zeros(ids.shape[0], width, dtype=torch.bool)
    for n in range(ids.shape[0]):
        row = logp[n][mask[n]]
        out[n, : len(row)] = row
        out_mask[n, : len(row)] = True
    return out, out_mask


def grads_of(model, fn, *args):
    model.zero_grad()
    logps, mask = fn(model, *args)
    weights = torch.linspace(0.5, 1.5, logps.numel()).view_as(logps)
    (logps * weights * mask).sum().backward()
    return logps.detach(), mask, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


PROMPTS, COMPLETIONS = [3, 5, 1, 4], [4, 1, 6, 3]


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1000])
def test_chunked_equals_naive_values_and_gradients(tiny_tokenizer, chunk_size):
    model = make_tiny_model(tiny_tokenizer)
    batch = make_batch(model.config.vocab_size, PROMPTS, COMPLETIONS)
    ref, ref_mask, ref_grads = grads_of(model, naive_logps, *batch)
    chunked = lambda m, *a: completion_logps(m, *a, chunk_size=chunk_size, method="chunked")  # noqa: E731
    got, mask, got_grads = grads_of(model, chunked, *batch)
    assert torch.equal(mask, ref_mask)
    assert mask.sum(1).tolist() == COMPLETIONS
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert model.config.tie_word_embeddings and "model.embed_tokens.weight" in got_grads
    assert set(got_grads) == set(ref_grads)
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_naive_method_matches_and_head_is_restored(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    head = model.lm_head
    batch = make_batch(model.config.vocab_size, PROMPTS, COMPLETIONS, seed=1)
    ref, _ = naive_logps(model, *batch)
    for method in ("naive", "chunked", "auto"):
        got, _ = completion_logps(model, *batch, method=method)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert model.lm_head is head


@pytest.mark.parametrize("method", ["chunked", "naive"])
def test_log_sum_sq_for_wpo_matches_the_full_softmax(tiny_tokenizer, method):
    """``log_sum_sq=True`` adds log sum_v p(v)^2 per completion position, detached, left-justified like the logps."""
    model = make_tiny_model(tiny_tokenizer)
    ids, attn, comp = make_batch(model.config.vocab_size, PROMPTS, COMPLETIONS, seed=2)
    logps, mask, sum_sq = completion_logps(model, ids, attn, comp, chunk_size=3, method=method, log_sum_sq=True)
    torch.testing.assert_close(logps, naive_logps(model, ids, attn, comp)[0], atol=1e-5, rtol=0)
    all_logps = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
    full = torch.logsumexp(2 * all_logps, -1)
    for n in range(ids.shape[0]):
        torch.testing.assert_close(sum_sq[n][mask[n]], full[n][comp[n, 1:]], atol=1e-5, rtol=0)
    assert not sum_sq.requires_grad and (sum_sq[mask] <= 0).all()


def test_padding_does_not_change_a_row(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    ids, attn, comp = make_batch(model.config.vocab_size, [4], [5])
    alone, _ = completion_logps(model, ids, attn, comp)
    wide = torch.nn.functional.pad(ids, (0, 6), value=tiny_tokenizer.pad_token_id)
    together, mask = completion_logps(
        model, torch.cat([wide, wide]), torch.nn.functional.pad(torch.cat([attn, attn]), (0, 6)),
        torch.nn.functional.pad(torch.cat([comp, comp]), (0, 6)),
    )
    torch.testing.assert_close(together[0, :5], alone[0], atol=1e-5, rtol=0)
    assert mask.sum().item() == 10


def test_completion_at_position_zero_is_rejected(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    ids, attn, comp = make_batch(model.config.vocab_size, [0, 2], [3, 3])
    with pytest.raises(ValueError, match="rows \\[0\\]: completion starts at position 0"):
        completion_logps(model, ids, attn, comp)


def test_top_level_forward_hooks_fire(tiny_tokenizer):
    """Wrappers (DDP, FSDP, PEFT) rely on their own forward being called."""
    model = make_tiny_model(tiny_tokenizer)
    calls = []
    model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    completion_logps(model, *make_batch(model.config.vocab_size, [2], [3]), method="chunked")
    assert calls == [1]


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "lm_head"]])
def test_peft_lora_model_matches_naive(tiny_tokenizer, targets):
    model = make_tiny_model(tiny_tokenizer)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    batch = make_batch(model.config.vocab_size, PROMPTS, COMPLETIONS, seed=2)
    ref, _, ref_grads = grads_of(peft_model, naive_logps, *batch)
    got, _, got_grads = grads_of(peft_model, lambda m, *a: completion_logps(m, *a, chunk_size=5), *batch)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert ref_grads and set(got_grads) == set(ref_grads)
    assert all("lora_" in name for name in got_grads)
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_chunked_rejects_non_linear_head(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["lm_head"]))
    with pytest.raises(TypeError, match="plain nn.Linear output head"):
        completion_logps(peft_model, *make_batch(model.config.vocab_size, [2], [2]), method="chunked")


def test_final_logit_softcapping_matches_naive():
    config = Gemma3TextConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=3.0, sliding_window=8,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    batch = make_batch(300, PROMPTS, COMPLETIONS, seed=3)
    ref, _, ref_grads = grads_of(model, naive_logps, *batch)
    got, _, got_grads = grads_of(model, lambda m, *a: completion_logps(m, *a, chunk_size=4, method="chunked"), *batch)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("transform", [LogitTransform(scale=0.25), LogitTransform(scale=2.0, softcap=1.5)])
def test_selected_token_logps_gradients_with_bias_and_transforms(transform):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=True).double()
    hidden = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (6,))

    def naive(h, w, b):
        logits = transform.apply(torch.nn.functional.linear(h, w, b).float())
        return torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)

    got = selected_token_logps(hidden, head, targets, chunk_size=4, transform=transform)
    want = naive(hidden, head.weight, head.bias)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    upstream = torch.randn(6, dtype=torch.float32)
    g_got = torch.autograd.grad(got, (hidden, head.weight, head.bias), upstream)
    g_want = torch.autograd.grad(want, (hidden, head.weight, head.bias), upstream)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def pair_batch(model, tokenizer):
    ids, attn, comp = make_batch(model.config.vocab_size, [3, 2, 3, 2], [4, 2, 1, 5], seed=4)
    return {"input_ids": ids, "attention_mask": attn, "completion_mask": comp, "weights": torch.tensor([1.0, 0.5])}


def test_pair_logps_splits_chosen_and_rejected(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    batch = pair_batch(model, tiny_tokenizer)
    full, _ = naive_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    out = pair_logps(model, batch)
    assert out.chosen_mask.sum(1).tolist() == [4, 2] and out.rejected_mask.sum(1).tolist() == [1, 5]
    assert out.chosen.shape == (2, 4) and out.rejected.shape == (2, 5)
    torch.testing.assert_close(out.chosen, full[:2, :4], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.rejected, full[2:, :5], atol=1e-5, rtol=0)
    assert out.ref_chosen is None and torch.equal(out.weights, batch["weights"])


def test_pair_logps_reference_from_cache_model_and_disabled_adapter(tiny_tokenizer):
    policy = make_tiny_model(tiny_tokenizer, seed=1)
    reference = make_tiny_model(tiny_tokenizer, seed=2)
    batch = pair_batch(policy, tiny_tokenizer)
    from_model = pair_logps(policy, batch, ref_model=reference)
    expected = pair_logps(reference, batch)
    torch.testing.assert_close(from_model.ref_chosen, expected.chosen)
    torch.testing.assert_close(from_model.ref_rejected, expected.rejected)
    assert not from_model.ref_chosen.requires_grad and from_model.chosen.requires_grad

    cached = pair_logps(policy, {**batch, "ref_chosen": expected.chosen, "ref_rejected": expected.rejected})
    torch.testing.assert_close(cached.ref_chosen, expected.chosen)

    base = pair_logps(policy, batch)
    peft_model = get_peft_model(policy, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    with_adapter = pair_logps(peft_model, batch, ref_model="adapter_disabled")
    torch.testing.assert_close(with_adapter.ref_chosen, base.chosen.detach())
    assert not torch.allclose(with_adapter.chosen, base.chosen)
    ref_c, ref_r = reference_pair_logps("adapter_disabled", batch, policy=peft_model)
    torch.testing.assert_close(ref_r, base.rejected.detach())


def test_pair_logps_rejects_odd_batches_and_unknown_reference(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    ids, attn, comp = make_batch(model.config.vocab_size, [2, 2, 2], [1, 1, 1])
    with pytest.raises(ValueError, match="expected 2B"):
        pair_logps(model, {"input_ids": ids, "attention_mask": attn, "completion_mask": comp})
    with pytest.raises(ValueError, match="adapter_disabled"):
        pair_logps(model, pair_batch(model, tiny_tokenizer), ref_model="frozen")


def test_chunked_under_autocast_is_as_accurate_as_naive(tiny_tokenizer):
    """bf16 autocast: the backward recomputes logits under the forward's autocast state, so values match
    the naive autocast computation and gradients are at least as close to the fp32 ones."""
    model = make_tiny_model(tiny_tokenizer)
    batch = make_batch(model.config.vocab_size, PROMPTS, COMPLETIONS, seed=5)
    _, _, exact = grads_of(model, naive_logps, *batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, _, ref_grads = grads_of(model, naive_logps, *batch)
        got, _, got_grads = grads_of(model, lambda m, *a: completion_logps(m, *a, chunk_size=3, method="chunked"), *batch)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    for name in exact:
        naive_error = (ref_grads[name] - exact[name]).abs().max()
        chunked_error = (got_grads[name] - exact[name]).abs().max()
        assert chunked_error <= naive_error * 1.05 + 1e-6, name
