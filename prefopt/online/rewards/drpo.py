"""DRPO's closed-form weights on correct rollouts (Li et al., arXiv 2510.04474; SPEC §10)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def drpo_weights(
    lengths: Sequence[int], correct: Sequence[bool], max_length: int, lam: float = 0.1
) -> list[float]:
    """``ω̃_i = softmax_{j ∈ correct}(r_l(o_j)/λ)_i`` with ``r_l(o) = 1 − |o|/C``; 0 for wrong rollouts.

    ``C`` (``max_length``) must be the fixed generation limit, not the batch maximum. Computed in
    log space (``exp(r/λ)`` overflows for small λ). All zeros when no rollout is correct.
    """
    if lam <= 0 or max_length <= 0:
        raise ValueError(
            f"drpo_weights: lam and max_length must be > 0, got lam={lam}, max_length={max_length}"
        )
    logits = [(1.0 - n / max_length) / lam for n in lengths]
    kept = [z for z, ok in zip(logits, correct) if ok]
    if not kept:
        return [0.0] * len(lengths)
    top = max(kept)
    norm = sum(math.exp(z - top) for z in kept)
    return [math.exp(z - top) / norm if ok else 0.0 for z, ok in zip(logits, correct)]
