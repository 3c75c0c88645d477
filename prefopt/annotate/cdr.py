"""CDR: the (customizable) density ratio of a strong over a weak LM as a preference reward.

Xu et al., "Dr. SoW: Density Ratio of Strong-over-weak LLMs", arXiv 2411.02481 (SPEC §4)::

    r(x, y) = log p_strong(y | c, x) - log p_weak(y | c, x)          normalize="sum"
    r(x, y) = that difference / max(1, |y|_strong)                   normalize="mean" (reward_hub default)

``c`` is an optional customization context (:class:`~prefopt.annotate.criteria.Criteria`: a
criteria system prompt and preference exemplars) given identically to both models; each model
scores ``y`` with its own tokenizer and chat template (:mod:`prefopt.annotate.scoring`), and
``|y|_strong`` counts response tokens under the strong tokenizer.

Two uses: :func:`pairs_from_candidates` turns N candidate responses per prompt into a best-vs-worst
pair; :func:`relabel_pairs` scores existing pairs, reports agreement with their labels and keeps,
flips or drops the pairs CDR disagrees with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from prefopt.annotate.cache import ScoreCache
from prefopt.annotate.criteria import Criteria
from prefopt.annotate.scoring import Prompt, Response, ResponseScore, Scorer, score_responses
from prefopt.stats import wilson_interval

Normalize = Literal["sum", "mean"]
OnDisagree = Literal["keep", "flip", "drop"]


def density_ratio(strong: ResponseScore, weak: ResponseScore, normalize: Normalize = "mean") -> float:
    """``strong.logp - weak.logp``, divided by ``max(1, strong.n_tokens)`` when ``normalize="mean"``."""
    if normalize not in ("sum", "mean"):
        raise ValueError(f"normalize must be 'sum' or 'mean', got {normalize!r}")
    ratio = strong.logp - weak.logp
    return ratio / max(1, strong.n_tokens) if normalize == "mean" else ratio


@dataclass(frozen=True)
class CDRAnnotator:
    """The strong/weak scorers and the settings shared by every CDR computation."""

    strong: Scorer
    weak: Scorer
    criteria: Criteria | None = None
    normalize: Normalize = "mean"
    batch_size: int = 8
    cache: ScoreCache | None = None
    progress: bool = True

    def rewards(self, prompts: Sequence[Prompt], responses: Sequence[Response]) -> list[float]:
        """CDR reward of each ``responses[i]`` to ``prompts[i]``."""
        context = self.criteria.render() if self.criteria else None
        common = {
            "context": context,
            "batch_size": self.batch_size,
            "cache": self.cache,
            "progress": self.progress,
        }
        strong = score_responses(self.strong, prompts, responses, desc="scoring (strong)", **common)
        weak = score_responses(self.weak, prompts, responses, desc="scoring (weak)", **common)
        return [density_ratio(s, w, self.normalize) for s, w in zip(strong, weak)]


def best_worst(rewards: Sequence[float], min_margin: float = 0.0) -> tuple[int, int] | None:
    """``(argmax, argmin)`` of ``rewards`` (first index on ties), or ``None`` if the gap is not > 0 and >= ``min_margin``."""
    if len(rewards) < 2:
        return None
    best = max(range(len(rewards)), key=rewards.__getitem__)
    worst = min(range(len(rewards)), key=rewards.__getitem__)
    gap = rewards[best] - rewards[worst]
    return (best, worst) if gap > 0 and gap >= min_margin else None


def _as_completion(prompt: Prompt, response: str) -> Response:
    """A candidate in the pair format matching its prompt (a string, or one assistant message)."""
    return response if isinstance(prompt, str) else [{"role": "assistant", "content": response}]


def pairs_from_candidates(
    rows: Sequence[dict[str, Any]], annotator: CDRAnnotator, *, min_margin: float = 0.0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Best-vs-worst pairs from rows ``{"prompt", "candidates": [...], "id"?}``; returns ``(pairs, report)``.

    Each pair carries ``meta`` with the chosen/rejected CDR rewards, their margin and the
    candidate indices. Prompts whose best-worst gap is below ``min_margin`` (or zero) give no pair.
    """
    prompts = [row["prompt"] for row in rows for _ in row["candidates"]]
    responses = [_as_completion(row["prompt"], c) for row in rows for c in row["candidates"]]
    flat = annotator.rewards(prompts, responses)
    pairs, start = [], 0
    for i, row in enumerate(rows):
        rewards = flat[start : start + len(row["candidates"])]
        start += len(row["candidates"])
        picked = best_worst(rewards, min_margin)
        if picked is None:
            continue
        best, worst = picked
        pairs.append(
            {
                "id": str(row.get("id", i)),
                "prompt": row["prompt"],
                "chosen": _as_completion(row["prompt"], row["candidates"][best]),
                "rejected": _as_completion(row["prompt"], row["candidates"][worst]),
                "meta": {
                    "cdr_chosen": rewards[best],
                    "cdr_rejected": rewards[worst],
                    "cdr_margin": rewards[best] - rewards[worst],
                    "chosen_index": best,
                    "rejected_index": worst,
                    "n_candidates": len(rewards),
                },
            }
        )
    report = {
        "n_prompts": len(rows),
        "n_pairs": len(pairs),
        "n_skipped": len(rows) - len(pairs),
        "min_margin": min_margin,
        "normalize": annotator.normalize,
    }
    return pairs, report


@dataclass
class RelabelReport:
    """Agreement of CDR with the existing labels: a pair agrees when r(chosen) > r(rejected).

    ``agreement_reversed`` is the agreement had the strong and weak roles been swapped (the
    ratio's sign flips; ties count for neither direction).
    """

    n_pairs: int
    n_agree: int
    n_ties: int
    agreement: float
    ci95: tuple[float, float]
    agreement_reversed: float
    on_disagree: str
    n_flipped: int
    n_dropped: int
    normalize: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the report."""
        return asdict(self)


def _with_meta(pair: dict[str, Any], **fields: float) -> dict[str, Any]:
    meta = pair.get("meta")
    return {**pair, "meta": {**(meta if isinstance(meta, dict) else {}), **fields}}


def relabel_pairs(
    pairs: Sequence[dict[str, Any]], annotator: CDRAnnotator, *, on_disagree: OnDisagree = "keep"
) -> tuple[list[dict[str, Any]], RelabelReport]:
    """Score both sides of each normalized pair; keep, flip or drop the pairs CDR disagrees with.

    Every output pair gets ``meta.cdr_chosen`` / ``meta.cdr_rejected`` (after any flip). A tie is a
    disagreement. Returns ``(pairs, report)``.
    """
    if on_disagree not in ("keep", "flip", "drop"):
        raise ValueError(f"on_disagree must be 'keep', 'flip' or 'drop', got {on_disagree!r}")
    n = len(pairs)
    rewards = annotator.rewards(
        [p["prompt"] for p in pairs] * 2, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    )
    out, n_agree, n_ties, flipped, dropped = [], 0, 0, 0, 0
    for pair, r_chosen, r_rejected in zip(pairs, rewards[:n], rewards[n:]):
        agree = r_chosen > r_rejected
        n_agree += agree
        n_ties += r_chosen == r_rejected
        if agree or on_disagree == "keep":
            out.append(_with_meta(pair, cdr_chosen=r_chosen, cdr_rejected=r_rejected))
        elif on_disagree == "flip":
            flipped += 1
            swapped = {**pair, "chosen": pair["rejected"], "rejected": pair["chosen"]}
            out.append(_with_meta(swapped, cdr_chosen=r_rejected, cdr_rejected=r_chosen))
        else:
            dropped += 1
    report = RelabelReport(
        n_pairs=n,
        n_agree=n_agree,
        n_ties=n_ties,
        agreement=n_agree / n if n else math.nan,
        ci95=wilson_interval(n_agree, n),
        agreement_reversed=(n - n_agree - n_ties) / n if n else math.nan,
        on_disagree=on_disagree,
        n_flipped=flipped,
        n_dropped=dropped,
        normalize=annotator.normalize,
    )
    return out, report
