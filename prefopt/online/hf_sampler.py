"""The Hugging Face engine: batched prefill, KV-cache decoding of only the rows still running.

One batch (``params.batch_size`` prompts) at a time:

1. **Prefill** each distinct prompt once, left-padded, with position ids counted over real tokens
   only (``cumsum(mask) - 1``, as ``generate`` does) and logits for the last position only; the
   leading tokens every prompt of the batch shares (the chat template's system prompt) are computed
   once. The cache and the last logits are then repeated ``n`` times, one row per sample. The cache
   writes each step in place (:mod:`prefopt.online.kv_cache`) instead of concatenating.
2. **Decode**: each step picks every running row's next token (:mod:`prefopt.online.decoding`:
   greedy, or a per-rollout random stream), and rows that emitted EOS or reached
   ``max_new_tokens`` finish. Finished rows are dropped from the batch, the attention mask and the
   KV cache (``Cache.batch_select_indices``) once they make up an eighth of the batch, so the tail
   of a batch no longer pays for padding; compacting less often bounds the cost of copying the cache.

Every sampling parameter comes from :class:`~prefopt.sampling.SamplingParams`: the model's own
``generation_config`` (``top_k``, ``repetition_penalty``, ``temperature``, ...) is never applied —
only its ``eos_token_id`` is read, to know where completions end. The progress bar counts finished
rollouts as they finish.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefopt.online.completions import eos_ids, make_rollouts, render_prompt
from prefopt.online.decoding import row_uniforms, select_tokens
from prefopt.online.kv_cache import preallocated_cache
from prefopt.online.types import FinishReason, Rollout
from prefopt.sampling import PromptItem, SamplerStats, SamplingParams

logger = logging.getLogger(__name__)

COMPACT_FRACTION = 8  # drop finished rows once they are >= 1/COMPACT_FRACTION of the batch
MIN_SHARED_PREFIX = 8  # prefill a batch's common leading tokens once when there are at least this many


def shared_prefix_length(encoded: Sequence[Sequence[int]]) -> int:
    """Leading tokens common to every prompt, leaving each prompt at least one token of its own
    (the last prompt token's logits start the decode)."""
    common = os.path.commonprefix([list(ids) for ids in encoded])  # element-wise, so token lists work too
    return max(min(len(common), min(len(ids) for ids in encoded) - 1), 0)


class HFSampler:
    """Batched decoding with the KV cache on an in-memory Hugging Face model (any device)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, progress: bool = True):
        if tokenizer.pad_token_id is None:
            raise ValueError("HFSampler: the tokenizer has no pad token; set tokenizer.pad_token before sampling")
        self.model = model
        self.tokenizer = tokenizer
        self.progress = progress
        # transformers 5 renames the forward's ``past_key_values`` to ``cache`` model by model.
        self._cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @torch.inference_mode()
    def sample(
        self, prompts: Sequence[PromptItem], params: SamplingParams, round_index: int = 0
    ) -> tuple[list[Rollout], SamplerStats]:
        """``params.n`` completions per prompt, decoded in batches of ``params.batch_size`` prompts."""
        was_training = self.model.training
        self.model.eval()
        start = time.perf_counter()
        bar = tqdm(total=len(prompts) * params.n, desc="sampling", unit="rollout", disable=not self.progress)
        produced = [0]

        def report(finished: int, tokens: int) -> None:
            produced[0] += tokens
            if finished:
                bar.update(finished)
                bar.set_postfix(tok_s=f"{produced[0] / (time.perf_counter() - start):.0f}")

        completions: list[list[tuple[list[int], FinishReason]]] = []
        try:
            for first in range(0, len(prompts), params.batch_size):
                completions += self._decode(prompts[first : first + params.batch_size], params, report)
        finally:
            bar.close()
            self.model.train(was_training)
        rollouts = make_rollouts(prompts, completions, self.tokenizer, round_index)
        tokens = sum(r.length for r in rollouts)
        stats = SamplerStats(len(prompts), len(rollouts), tokens, time.perf_counter() - start)
        logger.info("sampled %d rollouts, %d tokens at %.1f tokens/s", len(rollouts), tokens, stats.tokens_per_second)
        return rollouts, stats

    def _prefill(self, batch: Sequence[PromptItem], params: SamplingParams):
        """Left-padded forward over the prompts; returns last logits, cache, mask and next positions, ``n`` rows each.

        The prompts' shared leading tokens (the chat template's system prompt and role header) are
        computed once, at batch size 1, and the cache repeated for every prompt before the rest of each
        prompt is prefilled; its rows are then laid out as ``[shared prefix][padding][own tokens]``.
        """
        device = next(self.model.parameters()).device
        encoded = [render_prompt(self.tokenizer, item.prompt) for item in batch]
        shared = shared_prefix_length(encoded) if len(encoded) > 1 else 0
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        width = max(len(ids) for ids in encoded) - shared
        cache = preallocated_cache(self.model.config, shared + width + params.max_new_tokens)
        if shared:
            prefix = torch.tensor([encoded[0][:shared]], device=device)
            self.model(input_ids=prefix, use_cache=True, logits_to_keep=1, **{self._cache_name: cache})
            cache.batch_repeat_interleave(len(encoded))
        pad = self.tokenizer.pad_token_id
        rest = [ids[shared:] for ids in encoded]
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in rest], device=device)
        own = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rest], device=device)
        positions = (shared + own.cumsum(-1) - 1).clamp_(min=0)
        mask = torch.cat([own.new_ones(len(rest), shared), own], dim=1)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **{self._cache_name: cache})
        n = params.n
        if n > 1:
            cache.batch_repeat_interleave(n)
        next_positions = torch.tensor([len(ids) for ids in encoded], device=device).repeat_interleave(n)
        return out.logits[:, -1].repeat_interleave(n, dim=0), cache, mask.repeat_interleave(n, dim=0), next_positions

    def _decode(
        self, batch: Sequence[PromptItem], params: SamplingParams, report: Callable[[int, int], None]
    ) -> list[list[tuple[list[int], FinishReason]]]:
        """Completions of one batch: ``[prompt][sample] -> (ids, finish_reason)``; ``report(finished, tokens)``
        is called after every step with the rollouts that finished and the tokens generated in it."""
        stop = eos_ids(self.model, self.tokenizer)
        logits, cache, mask, positions = self._prefill(batch, params)
        keys = [(item.id, j) for item in batch for j in range(params.n)]
        generated: list[list[int]] = [[] for _ in keys]
        finish: list[FinishReason | None] = [None] * len(keys)
        rows = list(range(len(keys)))  # rollout index of each batch row; finished rows stay until compaction
        for step in range(params.max_new_tokens):
            uniforms = None if params.greedy else row_uniforms(params.seed, [keys[r] for r in rows], step)
            tokens = select_tokens(logits, params, uniforms)
            done_now = appended = 0
            for position, token in enumerate(tokens.tolist()):
                rollout = rows[position]
                if finish[rollout] is not None:
                    continue
                generated[rollout].append(token)
                appended += 1
                if token in stop:
                    finish[rollout] = "stop"
                elif len(generated[rollout]) == params.max_new_tokens:
                    finish[rollout] = "length"
                done_now += finish[rollout] is not None
            report(done_now, appended)
            running = [i for i, r in enumerate(rows) if finish[r] is None]
            if not running:
                break
            if (len(rows) - len(running)) * COMPACT_FRACTION >= len(rows):
                index = torch.tensor(running, device=mask.device)
                cache.batch_select_indices(index)
                mask, positions, tokens = mask[index], positions[index], tokens[index]
                rows = [rows[i] for i in running]
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                             use_cache=True, **{self._cache_name: cache})
            logits, positions = out.logits[:, -1], positions + 1
        return [[(generated[i * params.n + j], finish[i * params.n + j]) for j in range(params.n)]
                for i in range(len(batch))]
