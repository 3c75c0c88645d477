"""The chunked head under a partitioned (DeepSpeed ZeRO-3-style) output weight, and the fp32 accumulation of
the head's weight gradient across chunks."""

from __future__ import annotations

import copy

import pytest
import torch
from test_logps import COMPLETIONS, PROMPTS, grads_of, make_batch, naive_logps
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from prefopt.logps import completion_logps, default_chunk_size, selected_token_logps


class Partitioned:
    """ZeRO-3 stand-in on a plain ``nn.Linear``: its weight's data is empty except while its hooks hold it gathered.

    Gathered by a forward pre-hook, freed by the forward hook, which also arms a pre-backward gather on
    the output (as DeepSpeed's ``PreBackwardFunction`` does); freed again once its gradient is accumulated.
    The module stays a plain ``nn.Linear`` (as under DeepSpeed), so the chunked path is chosen.
    """

    def __init__(self, linear: nn.Linear) -> None:
        self.linear, self.full, self.gathers = linear, linear.weight.detach().clone(), 0
        self.release()
        linear.register_forward_pre_hook(lambda module, args: self.gather())
        linear.register_forward_hook(self._after_forward)
        linear.weight.register_post_accumulate_grad_hook(lambda param: self.release())

    def gather(self) -> None:
        self.gathers += 1
        self.linear.weight.data = self.full

    def release(self) -> None:
        self.linear.weight.data = torch.empty(0)

    def _after_forward(self, module, args, output):
        self.release()
        if output.requires_grad:
            output.register_hook(lambda grad: self.gather())
        return output


def untied_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def test_chunked_head_runs_where_the_partitioned_weight_is_gathered():
    plain = untied_model()
    sharded = copy.deepcopy(plain)
    partitioned = Partitioned(sharded.lm_head)
    batch = make_batch(plain.config.vocab_size, PROMPTS, COMPLETIONS, seed=2)
    want, mask, want_grads = grads_of(plain, naive_logps, *batch)
    got, got_mask, got_grads = grads_of(sharded, lambda m, *a: completion_logps(m, *a, chunk_size=3), *batch)
    assert torch.equal(mask, got_mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert sharded.lm_head.weight.numel() == 0  # released again after the backward
    assert partitioned.gathers == 3  # the log-prob forward, the model's (empty) logits, the backward
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_an_unmaterialised_head_is_a_clear_error_not_a_division_by_zero():
    with pytest.raises(ValueError, match="not materialised"):
        default_chunk_size(0)


def test_weight_gradient_is_summed_over_chunks_in_fp32():
    """bf16 head, 64 chunks: the weight gradient stays as close to fp64 as the unchunked bf16 computation."""
    torch.manual_seed(0)
    rows, hidden_size, vocab, chunk = 64 * 8, 64, 512, 8
    hidden64 = torch.randn(rows, hidden_size, dtype=torch.float64)
    weight64 = torch.randn(vocab, hidden_size, dtype=torch.float64) * 0.05
    targets = torch.randint(0, vocab, (rows,))
    upstream = torch.rand(rows, dtype=torch.float64)

    def weight_grad(dtype, chunked: bool) -> torch.Tensor:
        head = nn.Linear(hidden_size, vocab, bias=False).to(dtype)
        head.weight.data.copy_(weight64)
        hidden = hidden64.to(dtype)
        if chunked:
            logps = selected_token_logps(hidden, head, targets, chunk_size=chunk)
        else:
            logps = torch.log_softmax(head(hidden).float(), -1).gather(-1, targets[:, None]).squeeze(-1)
        (logps * upstream.to(logps.dtype)).sum().backward()
        return head.weight.grad.double()

    exact = weight_grad(torch.float64, chunked=False)

    def error(grad):
        return ((grad - exact).norm() / exact.norm()).item()

    naive, chunked = error(weight_grad(torch.bfloat16, False)), error(weight_grad(torch.bfloat16, True))
    assert chunked <= naive * 1.5, (chunked, naive)
    assert chunked < 5e-3


def test_wpo_log_sum_sq_is_computed_where_the_weight_is_gathered():
    plain = untied_model()
    sharded = copy.deepcopy(plain)
    Partitioned(sharded.lm_head)
    batch = make_batch(plain.config.vocab_size, PROMPTS, COMPLETIONS, seed=3)
    with torch.no_grad():
        _, _, want = completion_logps(plain, *batch, chunk_size=3, log_sum_sq=True)
        _, _, got = completion_logps(sharded, *batch, chunk_size=3, log_sum_sq=True)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
