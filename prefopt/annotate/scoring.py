"""Score responses with one model: ``log p(response | context, prompt)`` summed over response tokens.

Each model formats the conversation with its *own* tokenizer and chat template (SPEC §4):

* with a chat template: ``[system: context] + prompt messages`` rendered with the generation prompt
  (the prompt text), and the same messages plus the assistant response (the full text);
* without one, a plain format: ``"{context}\\n\\nUser: {prompt}\\nAssistant:"`` and the full text
  ``prompt + " " + response``.

The prompt/response token boundary is asserted: the prompt's tokens must be an exact prefix of the
full text's tokens. A tokenizer that merges a token across the boundary raises
:class:`~prefopt.data.tokenize.TemplateMismatch` instead of silently shifting the response by a token. The response tokens
are the full tokens after the prompt, cut after the last EOS (template whitespace such as ChatML's
trailing newline is not scored) or with EOS appended if the template emits none, the same rule the
data pipeline uses for training completions.

Log-probs come from :func:`prefopt.logps.completion_logps` under ``torch.no_grad()``. Scores are
cached per response in a :class:`~prefopt.annotate.cache.ScoreCache`, keyed by the model
fingerprint and the formatted texts, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefopt.annotate.cache import ScoreCache
from prefopt.data.collate import sequence_batch
from prefopt.data.tokenize import TemplateMismatch, split_conversation
from prefopt.fingerprint import model_fingerprint, tokenizer_fingerprint
from prefopt.logps import completion_logps

Prompt = str | list[dict]
Response = str | list[dict]


@dataclass(frozen=True)
class Scorer:
    """A model with its own tokenizer, and a fingerprint identifying both in the score cache."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fingerprint: str

    @classmethod
    def create(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fingerprint: str | None = None
    ) -> Scorer:
        """Wrap ``model``/``tokenizer``; the fingerprint defaults to :func:`scorer_fingerprint`."""
        return cls(model, tokenizer, fingerprint or scorer_fingerprint(model, tokenizer))


@dataclass(frozen=True)
class ResponseScore:
    """``logp``: summed log-prob of the ``n_tokens`` response tokens under one model."""

    logp: float
    n_tokens: int


@dataclass(frozen=True)
class _Encoded:
    key: str
    prompt_ids: list[int]
    response_ids: list[int]


def scorer_fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """The score cache's identity of a (model, tokenizer): :func:`prefopt.fingerprint.model_fingerprint`
    and :func:`~prefopt.fingerprint.tokenizer_fingerprint` together."""
    return f"{model_fingerprint(model)}-{tokenizer_fingerprint(tokenizer)}"


def _messages(prompt: Prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _with_context(messages: list[dict], context: str | None) -> list[dict]:
    """Prepend the context as a system turn (merged into an existing leading system turn)."""
    if not context:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{context}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": context}, *messages]


def _text(response: Response) -> str:
    return response if isinstance(response, str) else "\n".join(m["content"] for m in response)


def _plain_prompt(messages: list[dict]) -> str:
    names = {"user": "User", "assistant": "Assistant"}
    lines = []
    for m in messages:
        if m["role"] == "system":
            lines.append(f"{m['content']}\n")
        else:
            lines.append(f"{names.get(m['role'], m['role'].capitalize())}: {m['content']}")
    return "\n".join(lines) + "\nAssistant:"


def format_conversation(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: Response, context: str | None = None
) -> tuple[str, str]:
    """``(prompt_text, full_text)`` for scoring ``response`` after ``context`` + ``prompt`` with ``tokenizer``."""
    messages = _with_context(_messages(prompt), context)
    if not tokenizer.chat_template:
        prompt_text = _plain_prompt(messages)
        return prompt_text, f"{prompt_text} {_text(response)}"
    answer = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt_text, tokenizer.apply_chat_template(messages + answer, tokenize=False)


def split_tokens(
    tokenizer: PreTrainedTokenizerBase, prompt_text: str, full_text: str
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, response_ids)`` by the training pipeline's boundary and EOS rule
    (:func:`prefopt.data.tokenize.split_conversation`); raises :class:`TemplateMismatch`."""
    specials = not tokenizer.chat_template  # a template writes its own BOS
    prompt_ids, response = split_conversation(tokenizer, prompt_text, full_text, add_special_tokens=specials)
    if not response:
        raise TemplateMismatch(f"the response {full_text[len(prompt_text) :][:30]!r} encodes to no tokens")
    return prompt_ids, response


def _encode(scorer: Scorer, prompt: Prompt, response: Response, context: str | None) -> _Encoded:
    prompt_text, full_text = format_conversation(scorer.tokenizer, prompt, response, context)
    prompt_ids, response_ids = split_tokens(scorer.tokenizer, prompt_text, full_text)
    key = hashlib.sha256(f"{scorer.fingerprint}\0{prompt_text}\0{full_text}".encode()).hexdigest()
    return _Encoded(key, prompt_ids, response_ids)


@torch.no_grad()
def _score_batch(scorer: Scorer, batch: list[_Encoded]) -> list[ResponseScore]:
    device = next(scorer.model.parameters()).device
    pad = scorer.tokenizer.pad_token_id if scorer.tokenizer.pad_token_id is not None else 0
    input_ids, attention, completion = sequence_batch(
        [e.prompt_ids for e in batch], [e.response_ids for e in batch], pad
    )
    logps, mask = completion_logps(
        scorer.model, input_ids.to(device), attention.to(device), completion.to(device)
    )
    sums = (logps * mask).sum(1).tolist()
    return [ResponseScore(s, len(e.response_ids)) for s, e in zip(sums, batch)]


def score_responses(
    scorer: Scorer,
    prompts: Sequence[Prompt],
    responses: Sequence[Response],
    *,
    context: str | None = None,
    batch_size: int = 8,
    cache: ScoreCache | None = None,
    progress: bool = True,
    desc: str = "scoring",
) -> list[ResponseScore]:
    """Score ``responses[i]`` after ``prompts[i]`` (with ``context`` as a system turn); one score per response.

    Responses already in ``cache`` are not recomputed; new scores are appended to it after every
    batch. Batches group responses of similar length (longest first) to limit padding.
    """
    if len(prompts) != len(responses):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoded = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        try:
            encoded.append(_encode(scorer, prompt, response, context))
        except TemplateMismatch as err:
            raise TemplateMismatch(f"response {i}: {err}") from None
    known = cache.lookup([e.key for e in encoded]) if cache is not None else {}
    pending = sorted(
        {e.key: e for e in encoded if e.key not in known}.values(),
        key=lambda e: len(e.prompt_ids) + len(e.response_ids),
        reverse=True,
    )
    was_training = scorer.model.training
    scorer.model.eval()
    try:
        for first in tqdm(range(0, len(pending), batch_size), desc=desc, unit="batch", disable=not progress):
            batch = pending[first : first + batch_size]
            scores = dict(zip((e.key for e in batch), _score_batch(scorer, batch)))
            if cache is not None:
                cache.append({k: (s.logp, s.n_tokens) for k, s in scores.items()})
            known.update({k: (s.logp, s.n_tokens) for k, s in scores.items()})
    finally:
        scorer.model.train(was_training)
    return [ResponseScore(*known[e.key]) for e in encoded]
