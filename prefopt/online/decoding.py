"""Choosing the next token of each row from its logits, with a random stream per rollout.

Batch-invariant sampling: the random number that picks token ``t`` of sample ``j`` of prompt ``id``
is ``u = stream_seed(seed, id, j, t) / 2**63`` (:func:`prefopt.sampling.stream_seed`), computed per
row; the token is found by inverse-CDF sampling on that row's own distribution. So a rollout
depends only on ``(seed, id, j)`` and its own logits — not on the batch size, the order of the
prompts, its batch-mates or the number of processes — up to the floating-point differences of
batched matmuls (a token can flip only where ``u`` falls within rounding of a CDF boundary).

Per row: ``p = softmax(logits / temperature)``; the tokens are ordered by decreasing probability
and, with ``top_p < 1``, only the smallest prefix of mass ``>= top_p`` is kept (the nucleus of
Holtzman et al., 2020, arXiv:1904.09751); the token is the first whose cumulative probability
exceeds ``u`` times the kept mass. Greedy decoding is ``argmax`` (the first
maximum on ties), as in Hugging Face ``generate``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from prefopt.sampling import SamplingParams, stream_seed

_TWO_POW_63 = float(2**63)
CANDIDATES = (64, 2048)  # candidate sizes per row tried before the full vocabulary


def row_uniforms(seed: int, rows: Sequence[tuple[str, int]], step: int) -> torch.Tensor:
    """One uniform in ``[0, 1)`` per ``(prompt_id, sample_index)`` row for decoding step ``step`` (float64)."""
    return torch.tensor([stream_seed(seed, pid, j, step) / _TWO_POW_63 for pid, j in rows], dtype=torch.float64)


def _inverse_cdf(
    probs: torch.Tensor, uniforms: torch.Tensor, top_p: float, complete: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draw over ``probs`` (``[rows, k]``, sorted by decreasing probability, float64).

    Returns ``(position, resolved)``: ``resolved`` is false for rows whose answer may lie beyond the
    ``k`` candidates (``complete=False`` and the nucleus, or the drawn mass, is not inside them).
    """
    cumulative = probs.cumsum(dim=-1)
    rows = torch.arange(probs.shape[0])
    if top_p < 1.0:
        kept = ((cumulative - probs) < top_p).sum(dim=-1)  # >= 1: the top token's prefix mass is 0
        target = uniforms * cumulative[rows, kept - 1]
        resolved = cumulative[:, -1] >= top_p
    else:
        kept = torch.full_like(uniforms, probs.shape[-1], dtype=torch.long)
        target = uniforms * (cumulative[:, -1] if complete else 1.0)
        resolved = target < cumulative[:, -1]
    position = torch.searchsorted(cumulative, target[:, None], right=True).squeeze(-1)
    position = torch.minimum(position, kept - 1)
    return position, resolved | complete


def _tail_in_vocab_order(log_probs: torch.Tensor, candidates: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """``top_p == 1`` rows whose draw ``u`` lies beyond the candidates' mass: the rest of the vocabulary
    follows the candidates in token-id order (any fixed order samples the same distribution)."""
    probs = log_probs.double().exp()
    head = probs.gather(-1, candidates).sum(dim=-1, keepdim=True)
    probs.scatter_(-1, candidates, 0.0)
    cumulative = head + probs.cumsum(dim=-1)
    index = torch.searchsorted(cumulative, uniforms[:, None], right=True)
    last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).double().argmax(dim=-1, keepdim=True)  # last nonzero token
    return torch.minimum(index, last).squeeze(-1)


def select_tokens(logits: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Next token per row of ``logits`` (``[rows, vocab]``): argmax if greedy, else temperature + top-p
    inverse-CDF sampling with ``uniforms`` (``[rows]``, from :func:`row_uniforms`).

    Fast path: a row's most likely tokens (``topk`` of ``CANDIDATES[0]``, then of the next size)
    usually hold the whole nucleus, or the drawn mass; only rows where none do are sorted over the
    full vocabulary (``top_p < 1``) or continue in token-id order (``top_p == 1``). Which path a row
    takes depends on its own logits and uniform only, so batching never changes it.
    """
    if params.greedy:
        return logits.argmax(dim=-1)
    if uniforms is None or uniforms.shape != logits.shape[:1]:
        raise ValueError("select_tokens: sampling needs one uniform per row")
    uniforms = uniforms.to(device=logits.device, dtype=torch.float64)
    scaled = logits.float() / params.temperature
    norm = torch.logsumexp(scaled, dim=-1, keepdim=True)
    vocab = scaled.shape[-1]
    tokens = torch.empty(scaled.shape[0], dtype=torch.long, device=logits.device)
    rest = torch.arange(scaled.shape[0], device=logits.device)
    index = torch.empty(scaled.shape[0], 0, dtype=torch.long, device=logits.device)
    for k in (*(c for c in CANDIDATES if c < vocab), vocab):
        rows, row_norm = (scaled, norm) if len(rest) == len(scaled) else (scaled[rest], norm[rest])
        if k == vocab and params.top_p == 1.0:
            tokens[rest] = _tail_in_vocab_order(rows - row_norm, index, uniforms[rest])
            break
        if k < vocab:
            top, index = rows.topk(k, dim=-1)
        else:
            top, index = torch.sort(rows, dim=-1, descending=True, stable=True)
        position, resolved = _inverse_cdf((top - row_norm).double().exp(), uniforms[rest], params.top_p, k == vocab)
        tokens[rest[resolved]] = index[resolved].gather(-1, position[resolved, None]).squeeze(-1)
        rest, index = rest[~resolved], index[~resolved]
        if not rest.numel():
            break
    return tokens
