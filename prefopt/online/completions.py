"""Pieces both sampling engines share: the prompt's token ids, the stop tokens, the rollout records.

:func:`render_prompt` is the training renderer (:func:`prefopt.data.tokenize.encode_prompts`) applied
to one prompt, so the policy samples from exactly the token ids it is trained on: chat messages
through the chat template with the generation prompt (the template writes its own specials),
plain text with the tokenizer's special tokens (e.g. BOS).
"""

from __future__ import annotations

from typing import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefopt.data.tokenize import encode_prompts
from prefopt.online.types import FinishReason, Prompt, Rollout
from prefopt.sampling import PromptItem


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    """Token ids of ``prompt`` exactly as training tokenizes it (see the module docstring)."""
    return list(encode_prompts([prompt], tokenizer)[0])


def eos_ids(model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The ids that end a completion: the model's ``generation_config.eos_token_id`` and the tokenizer's EOS."""
    eos = None if model is None else model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def split_completion(generated: list[int], stop_ids: set[int]) -> tuple[list[int], FinishReason]:
    """Cut a generated row after its first EOS: ``(completion_ids, finish_reason)``.

    EOS is kept (it counts in the length); a row without EOS was truncated (``"length"``).
    """
    for i, token in enumerate(generated):
        if token in stop_ids:
            return generated[: i + 1], "stop"
    return generated, "length"


def make_rollouts(
    prompts: Sequence[PromptItem],
    completions: Sequence[Sequence[tuple[list[int], FinishReason]]],
    tokenizer: PreTrainedTokenizerBase,
    round_index: int,
) -> list[Rollout]:
    """Rollout records grouped by prompt in input order: ``completions[i][j]`` is sample ``j`` of prompt ``i``."""
    return [
        Rollout(
            prompt_id=item.id,
            sample_index=j,
            prompt=item.prompt,
            completion=tokenizer.decode(ids, skip_special_tokens=True),
            completion_ids=list(ids),
            length=len(ids),
            finish_reason=finish,
            round=round_index,
        )
        for item, samples in zip(prompts, completions)
        for j, (ids, finish) in enumerate(samples)
    ]
