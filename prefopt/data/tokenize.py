"""Normalized pairs -> tokenized pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``).

Conversational pairs go through the tokenizer's chat template: the prompt with
``add_generation_prompt=True``, each completion as the continuation of the full conversation,
with a check that the prompt's tokens are a prefix of the conversation's tokens. Standard pairs
are tokenized as prompt (with the tokenizer's special tokens, e.g. BOS) + completion + EOS.

A completion always ends with the EOS token unless it was truncated: text after the last EOS
the template emits (e.g. ChatML's ``"\\n"`` after ``<|im_end|>``) is cut, since generation stops
at EOS; if the template emits no EOS, one is appended. A completion the model did not finish —
``meta["chosen_finish_reason"]`` / ``meta["rejected_finish_reason"] == "length"``, as the online
pair builder records — is never given an EOS: the template's closing EOS (and what follows) is cut
and none is appended, so a cut-off rollout is not trained as if the model had chosen to stop.

Nothing is truncated silently: ``truncation="error"`` (default) raises on any over-long pair,
``"drop"`` drops it, ``"keep_start"`` keeps the prompt and the start of the completion. Counts are
returned in :class:`TokenizeStats` and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import datasets
from transformers import PreTrainedTokenizerBase

from prefopt.data.errors import DataValidationError, Problem, count_reasons

logger = logging.getLogger(__name__)

Truncation = Literal["error", "drop", "keep_start"]
TRUNCATIONS: tuple[str, ...] = ("error", "drop", "keep_start")
_STATUS_COLUMNS = ("_reason", "_field", "_message")
_OK, _TRUNCATED = "", "truncated"


@dataclass
class TokenizeStats:
    """What :func:`tokenize_pairs` did: rows in, rows out, truncated pairs, dropped pairs by reason."""

    n_rows: int
    n_kept: int
    n_truncated: int
    dropped: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        dropped = sum(self.dropped.values())
        text = f"tokenized {self.n_rows} pairs: kept {self.n_kept}, truncated {self.n_truncated}, dropped {dropped}"
        return text + (f" ({', '.join(f'{k}: {v}' for k, v in self.dropped.items())})" if dropped else "")


class TemplateMismatch(ValueError):
    """The chat template renders the prompt differently inside the full conversation."""


def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has no eos_token; set tokenizer.eos_token before tokenizing pairs"
        )
    return tokenizer.eos_token_id


def _end_with_eos(ids: list[int], eos: int, unfinished: bool = False) -> list[int]:
    """Cut what follows the last EOS (template whitespace), or append EOS if there is none.

    ``unfinished`` (a completion cut at the generation limit): cut the last EOS too, append none.
    """
    if eos in ids:
        end = len(ids) - ids[::-1].index(eos)
        return ids[: end - 1] if unfinished else ids[:end]
    return ids if unfinished else ids + [eos]


def _unfinished_flags(meta: list[Any] | None, side: str, n: int) -> list[bool]:
    """Per row, whether the ``side`` completion was cut at the generation limit (``meta[f"{side}_finish_reason"]``)."""
    if meta is None:
        return [False] * n
    return [isinstance(m, dict) and m.get(f"{side}_finish_reason") == "length" for m in meta]


def _render_prompts(prompts: list[str | list[dict]], tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Prompt texts as the model sees them (chat template with the generation prompt where conversational)."""
    return [
        p
        if isinstance(p, str)
        else tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]


def _encode_prompt_texts(
    texts: list[str], conversational: bool, tokenizer: PreTrainedTokenizerBase
) -> list[list[int]]:
    # Chat templates write their own special tokens (BOS); plain prompts get the tokenizer's.
    return tokenizer(texts, add_special_tokens=not conversational)["input_ids"]


def encode_prompts(prompts: list[str | list[dict]], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """Token ids of each prompt: chat-templated (no extra specials) or plain text with the tokenizer's specials."""
    conversational = bool(prompts) and not isinstance(prompts[0], str)
    return _encode_prompt_texts(_render_prompts(prompts, tokenizer), conversational, tokenizer)


def encode_pairs(
    prompts: list[Any],
    chosen: list[Any],
    rejected: list[Any],
    tokenizer: PreTrainedTokenizerBase,
    meta: list[Any] | None = None,
) -> tuple[list[list[int]], list[list[int] | TemplateMismatch], list[list[int] | TemplateMismatch]]:
    """Token ids of a batch of normalized pairs: ``(prompt_ids, chosen_ids, rejected_ids)``.

    A completion whose conversation does not start with the prompt's tokens is returned as a
    :class:`TemplateMismatch` (the caller reports it with its row) instead of ids. ``meta`` (the
    rows' ``meta`` column, optional) marks unfinished completions, which get no EOS.
    """
    eos = _eos_id(tokenizer)
    conversational = bool(prompts) and not isinstance(prompts[0], str)
    prompt_texts = _render_prompts(prompts, tokenizer)
    prompt_ids = _encode_prompt_texts(prompt_texts, conversational, tokenizer)
    out = []
    for side, completions in (("chosen", chosen), ("rejected", rejected)):
        unfinished = _unfinished_flags(meta, side, len(prompts))
        if not conversational:
            ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
            out.append([_end_with_eos(row, eos, cut) for row, cut in zip(ids, unfinished)])
            continue
        full_texts = [
            tokenizer.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)
        ]
        full_ids = tokenizer(full_texts, add_special_tokens=False)["input_ids"]
        out.append(
            [
                _continuation(prompt_text, full_text, p_ids, ids, eos, cut)
                for prompt_text, full_text, p_ids, ids, cut in zip(
                    prompt_texts, full_texts, prompt_ids, full_ids, unfinished
                )
            ]
        )
    return prompt_ids, out[0], out[1]


def _continuation(
    prompt_text: str, full_text: str, prompt_ids: list[int], full_ids: list[int], eos: int, unfinished: bool
) -> list[int] | TemplateMismatch:
    if not full_text.startswith(prompt_text):
        return TemplateMismatch(
            "the chat template renders the prompt differently when the completion follows it "
            f"(prompt ends {prompt_text[-40:]!r}, conversation has {full_text[len(prompt_text) - 40 : len(prompt_text)]!r}); "
            "use a template whose generation prompt is a prefix of the conversation"
        )
    if full_ids[: len(prompt_ids)] != prompt_ids:
        return TemplateMismatch(
            "the tokenizer merges tokens across the prompt/completion boundary, so the prompt's tokens are not "
            "a prefix of the conversation's; fix the chat template so the generation prompt ends on a token boundary"
        )
    return _end_with_eos(full_ids[len(prompt_ids) :], eos, unfinished)


class _Status(NamedTuple):
    """Outcome of one pair: ``reason`` is ``""`` (ok), ``"truncated"`` or a problem reason."""

    reason: str
    field: str = ""
    message: str = ""


_FINE, _CUT = _Status(_OK), _Status(_TRUNCATED)


@dataclass(frozen=True)
class _Limits:
    max_length: int | None
    max_prompt_length: int | None
    truncation: str


def _fit(
    prompt_len: int, completion: list[int], rewards: list[float] | None, field_name: str, limits: _Limits
) -> tuple[list[int], list[float] | None, _Status]:
    """Apply the length policy to one completion: its ids, its rewards and a status."""
    if rewards is not None and len(rewards) != len(completion):
        message = (
            f"has {len(rewards)} values but the {field_name} completion has {len(completion)} tokens "
            "(one reward per completion token, EOS included); recompute them with this tokenizer"
        )
        return completion, rewards, _Status("token_rewards_length", f"{field_name}_token_rewards", message)
    total = prompt_len + len(completion)
    if limits.max_length is None or total <= limits.max_length:
        return completion, rewards, _FINE
    budget = limits.max_length - prompt_len
    if limits.truncation != "keep_start" or budget < 1:
        message = (
            f"prompt ({prompt_len}) + {field_name} ({len(completion)}) = {total} tokens > "
            f"max_length={limits.max_length}; raise max_length, or use truncation='drop' or 'keep_start'"
        )
        return completion, rewards, _Status("too_long", field_name, message)
    return completion[:budget], None if rewards is None else rewards[:budget], _CUT


def _tokenize_batch(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, limits: _Limits
) -> dict[str, list]:
    prompt_ids, chosen_ids, rejected_ids = encode_pairs(
        batch["prompt"], batch["chosen"], batch["rejected"], tokenizer, batch.get("meta")
    )
    n = len(prompt_ids)
    out: dict[str, list] = {"prompt_ids": prompt_ids, "chosen_ids": [], "rejected_ids": []}
    out.update({name: [] for name in _STATUS_COLUMNS})
    has_rewards = {side: f"{side}_token_rewards" in batch for side in ("chosen", "rejected")}
    for side, present in has_rewards.items():
        if present:
            out[f"{side}_token_rewards"] = []
    for i in range(n):
        statuses = []
        prompt_len = len(prompt_ids[i])
        if prompt_len == 0:
            statuses.append(
                _Status("empty_prompt", "prompt", "the prompt encodes to 0 tokens; every pair needs one")
            )
        if limits.max_prompt_length is not None and prompt_len > limits.max_prompt_length:
            message = (
                f"the prompt has {prompt_len} tokens > max_prompt_length={limits.max_prompt_length}; "
                "raise max_prompt_length or use truncation='drop'"
            )
            statuses.append(_Status("prompt_too_long", "prompt", message))
        for side, ids in (("chosen", chosen_ids[i]), ("rejected", rejected_ids[i])):
            rewards = batch[f"{side}_token_rewards"][i] if has_rewards[side] else None
            if isinstance(ids, TemplateMismatch):
                statuses.append(_Status("template_mismatch", side, str(ids)))
                ids = []
            else:
                ids, rewards, status = _fit(prompt_len, ids, rewards, side, limits)
                statuses.append(status)
            out[f"{side}_ids"].append(ids)
            if has_rewards[side]:
                out[f"{side}_token_rewards"].append(rewards)
        problems = [s for s in statuses if s.reason not in (_OK, _TRUNCATED)]
        status = problems[0] if problems else (_CUT if _CUT in statuses else _FINE)
        out["_reason"].append(status.reason)
        out["_field"].append(status.field)
        out["_message"].append(status.message)
    return out


def tokenize_pairs(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    truncation: Truncation = "error",
    num_proc: int | None = None,
    batch_size: int = 256,
) -> tuple[datasets.Dataset, TokenizeStats]:
    """Tokenize normalized pairs (from :func:`prefopt.data.load_pairs`); returns ``(dataset, stats)``.

    Adds ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` and keeps every other column (token
    rewards are checked to have one value per completion token and truncated with it).
    ``max_length`` bounds prompt + completion (each side), ``max_prompt_length`` the prompt; ``None``
    means no bound. ``truncation``: ``"error"`` raises :class:`DataValidationError` listing every
    offending row, ``"drop"`` drops them (counts by reason in ``stats.dropped``), ``"keep_start"``
    keeps the prompt and truncates the completion to fit (losing its EOS) and raises on problems
    truncation cannot fix. Deterministic for any ``num_proc``.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    for name, value in (("max_length", max_length), ("max_prompt_length", max_prompt_length)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive number of tokens or None, got {value}")
    _eos_id(tokenizer)
    limits = _Limits(max_length, max_prompt_length, truncation)
    mapped = dataset.map(
        _tokenize_batch,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        fn_kwargs={"tokenizer": tokenizer, "limits": limits},
        desc="tokenizing pairs",
    )
    reasons = mapped["_reason"]
    problems = _problems(mapped, reasons)
    if problems and (truncation != "drop" or any(p.reason == "template_mismatch" for p in problems)):
        hint = (
            "Fix these rows, raise the limits, or pass truncation='drop' to drop them."
            if truncation != "drop"
            else "The chat template cannot be used for training; fix it."
        )
        raise DataValidationError(problems, n_rows=len(dataset), hint=hint)
    keep = [i for i, reason in enumerate(reasons) if reason in (_OK, _TRUNCATED)]
    result = mapped.select(keep) if len(keep) < len(mapped) else mapped
    stats = TokenizeStats(len(dataset), len(keep), reasons.count(_TRUNCATED), count_reasons(problems))
    logger.log(logging.WARNING if problems or stats.n_truncated else logging.INFO, "%s", stats)
    return result.remove_columns(list(_STATUS_COLUMNS)), stats


def _problems(mapped: datasets.Dataset, reasons: list[str]) -> list[Problem]:
    bad = [i for i, reason in enumerate(reasons) if reason not in (_OK, _TRUNCATED)]
    if not bad:
        return []
    rows = mapped.select(bad)
    files = rows["source_file"] if "source_file" in rows.column_names else ["<dataset>"] * len(bad)
    numbers = rows["source_row"] if "source_row" in rows.column_names else [i + 1 for i in bad]
    return [
        Problem(file, number, field_name, reason, message)
        for file, number, field_name, reason, message in zip(
            files, numbers, rows["_field"], rows["_reason"], rows["_message"]
        )
    ]
