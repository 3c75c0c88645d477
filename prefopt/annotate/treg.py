"""T-REG self-generated token rewards by contrastive prompting (Zhou et al., arXiv 2412.02685; SPEC §5).

For every completion token y_t, under the reference model π_ref (no gradients)::

    r̂_t = σ( log π_ref(y_t | x_better, y_<t) − log π_ref(y_t | x_worse, y_<t) ) − 0.5      ∈ (−0.5, 0.5)

``x_better`` / ``x_worse`` wrap the prompt with opposite instructions (:class:`TregTemplates`;
the template's ``{prompt}`` is the prompt string, or the content of a conversation's last user
turn). The completion token ids are the *policy* tokenization the trainer uses
(``chosen_ids`` / ``rejected_ids`` from :func:`prefopt.data.tokenize_pairs`), so
``len(chosen_token_rewards) == len(chosen_ids)``, EOS included; the two prompt prefixes may have
different lengths, and the completion-aligned log-probs of :func:`prefopt.logps.completion_logps`
re-index every y_t for each prefix. The rewards are stored with the pairs as
``chosen_token_rewards`` / ``rejected_token_rewards`` for the ``treg`` loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefopt.annotate.scoring import Prompt
from prefopt.data import tokenize_pairs
from prefopt.data.collate import sequence_batch
from prefopt.data.tokenize import encode_prompts
from prefopt.logps import completion_logps

REWARD_COLUMNS = ("chosen_token_rewards", "rejected_token_rewards")


@dataclass(frozen=True)
class TregTemplates:
    """Opposite instructions around the prompt; each must contain ``{prompt}`` exactly once."""

    better: str = "{prompt}\n\nGive a helpful, correct and concise answer."
    worse: str = "{prompt}\n\nGive an unhelpful, incorrect and verbose answer."

    def __post_init__(self) -> None:
        for name in ("better", "worse"):
            if getattr(self, name).count("{prompt}") != 1:
                raise ValueError(
                    f"the T-REG {name!r} template must contain '{{prompt}}' exactly once, got {getattr(self, name)!r}"
                )


def contrastive_token_rewards(better_logps: torch.Tensor, worse_logps: torch.Tensor) -> torch.Tensor:
    """``σ(better − worse) − 0.5`` elementwise: token log-probs under x_better and x_worse -> r̂."""
    return torch.sigmoid(better_logps.float() - worse_logps.float()) - 0.5


def wrap_prompt(prompt: Prompt, template: str) -> Prompt:
    """Fill ``template`` with a string prompt, or with the content of the last user turn of a conversation."""
    if isinstance(prompt, str):
        return template.replace("{prompt}", prompt)
    last = max((i for i, m in enumerate(prompt) if m["role"] == "user"), default=None)
    if last is None:
        raise ValueError("a conversational prompt needs a user turn to wrap with the T-REG instructions")
    wrapped = {**prompt[last], "content": template.replace("{prompt}", prompt[last]["content"])}
    return [*prompt[:last], wrapped, *prompt[last + 1 :]]


@torch.no_grad()
def _completion_logps(
    model: PreTrainedModel, prefixes: list[list[int]], completions: list[list[int]], pad: int
) -> list[list[float]]:
    device = next(model.parameters()).device
    input_ids, attention, completion = sequence_batch(prefixes, completions, pad)
    logps, _ = completion_logps(model, input_ids.to(device), attention.to(device), completion.to(device))
    return [row[: len(c)] for row, c in zip(logps.cpu(), completions)]


def token_rewards(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    completions: Sequence[list[int]],
    *,
    templates: TregTemplates = TregTemplates(),
    batch_size: int = 8,
    progress: bool = True,
) -> list[list[float]]:
    """r̂ for each token of ``completions[i]`` (policy token ids) answering ``prompts[i]``; one list per completion."""
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    better = encode_prompts([wrap_prompt(p, templates.better) for p in prompts], tokenizer)
    worse = encode_prompts([wrap_prompt(p, templates.worse) for p in prompts], tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    rewards: list[list[float]] = []
    try:
        for first in tqdm(
            range(0, len(prompts), batch_size), desc="T-REG token rewards", unit="batch", disable=not progress
        ):
            sl = slice(first, first + batch_size)
            ids = list(completions[sl])
            b = _completion_logps(model, better[sl], ids, pad)
            w = _completion_logps(model, worse[sl], ids, pad)
            rewards.extend(contrastive_token_rewards(x, y).tolist() for x, y in zip(b, w))
    finally:
        model.train(was_training)
    return rewards


def annotate_token_rewards(
    pairs: datasets.Dataset,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    templates: TregTemplates = TregTemplates(),
    batch_size: int = 8,
    progress: bool = True,
) -> datasets.Dataset:
    """Add ``chosen_token_rewards`` / ``rejected_token_rewards`` to normalized pairs (from ``load_pairs``).

    ``model`` is the reference model and ``tokenizer`` the policy's tokenizer: completions are
    tokenized exactly as :func:`prefopt.data.tokenize_pairs` does for training (no truncation), so
    the stored rewards have one value per training completion token. Existing reward columns are
    replaced.
    """
    pairs = pairs.remove_columns([c for c in REWARD_COLUMNS if c in pairs.column_names])
    tokenized, _ = tokenize_pairs(pairs, tokenizer)
    prompts = list(pairs["prompt"])
    for side, column in zip(("chosen", "rejected"), REWARD_COLUMNS):
        values = token_rewards(
            model,
            tokenizer,
            prompts,
            list(tokenized[f"{side}_ids"]),
            templates=templates,
            batch_size=batch_size,
            progress=progress,
        )
        pairs = pairs.add_column(column, values)
    return pairs
