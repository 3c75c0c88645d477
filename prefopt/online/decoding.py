"""Choosing the next token of each row from its logits, with a random stream per rollout.

Batch-invariant sampling: the random number that picks token ``t`` of sample ``j`` of prompt ``id``
is ``u = stream_seed(seed, id, j, t) / 2**63`` (:func:`prefopt.sampling.stream_seed`), computed per
row; the token is found by inverse-CDF sampling on that row's own distribution. So a rollout
depends only on ``(seed, id, j)`` and its own logits — not on the batch size, the order of the
prompts, its batch-mates or the number of processes — up to the floating-point differences of
batched matmuls (a token can flip only where ``u`` falls within rounding of a CDF boundary).

Per row: ``p = softmax(logits / temperature)``; with ``top_p < 1`` the tokens are sorted by
probability (stable, ties by token id) and only the smallest prefix of mass ``>= top_p`` is kept
(the nucleus of Holtzman et al., 2020, arXiv:1904.09751); then the token is the first whose
cumulative probability exceeds ``u`` times the kept mass. Greedy decoding is ``argmax`` (the first
maximum on ties), as in Hugging Face ``generate``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from prefopt.sampling import SamplingParams, stream_seed

_TWO_POW_63 = float(2**63)


def row_uniforms(seed: int, rows: Sequence[tuple[str, int]], step: int) -> torch.Tensor:
    """One uniform in ``[0, 1)`` per ``(prompt_id, sample_index)`` row for decoding step ``step`` (float64)."""
    return torch.tensor([stream_seed(seed, pid, j, step) / _TWO_POW_63 for pid, j in rows], dtype=torch.float64)


def select_tokens(logits: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Next token per row of ``logits`` (``[rows, vocab]``): argmax if greedy, else temperature + top-p
    inverse-CDF sampling with ``uniforms`` (``[rows]``, from :func:`row_uniforms`)."""
    if params.greedy:
        return logits.argmax(dim=-1)
    if uniforms is None or uniforms.shape != logits.shape[:1]:
        raise ValueError("select_tokens: sampling needs one uniform per row")
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    order = None
    if params.top_p < 1.0:
        probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    cumulative = probs.double().cumsum(dim=-1)
    if order is None:
        kept = torch.full(uniforms.shape, probs.shape[-1], dtype=torch.long)
    else:
        kept = ((cumulative - probs) < params.top_p).sum(dim=-1)  # >= 1: the top token's prefix mass is 0
    mass = cumulative.gather(-1, (kept - 1)[:, None])
    target = uniforms.to(cumulative.device)[:, None] * mass
    index = torch.searchsorted(cumulative, target, right=True).clamp_(max=(kept - 1)[:, None])
    return index.squeeze(-1) if order is None else order.gather(-1, index).squeeze(-1)
