"""Preference annotation: CDR density-ratio labels and T-REG token-level rewards.

* :mod:`prefopt.annotate.cdr`: ``r = log p_strong(y | c, x) - log p_weak(y | c, x)`` to build
  best-vs-worst pairs from candidates or to relabel existing pairs (``prefopt annotate cdr``).
* :mod:`prefopt.annotate.treg`: contrastive-prompt token rewards stored with the pairs for the
  ``treg`` loss (``prefopt annotate treg``).

See docs/annotate.md.
"""

from prefopt.annotate.cache import ScoreCache
from prefopt.annotate.cdr import (
    CDRAnnotator,
    RelabelReport,
    best_worst,
    density_ratio,
    pairs_from_candidates,
    relabel_pairs,
)
from prefopt.annotate.criteria import PRESETS, Criteria, Exemplar, load_criteria
from prefopt.annotate.io import read_candidates
from prefopt.annotate.scoring import (
    ResponseScore,
    Scorer,
    format_conversation,
    score_responses,
)
from prefopt.annotate.treg import (
    TregTemplates,
    annotate_token_rewards,
    contrastive_token_rewards,
    token_rewards,
)

__all__ = [
    "PRESETS",
    "CDRAnnotator",
    "Criteria",
    "Exemplar",
    "RelabelReport",
    "ResponseScore",
    "ScoreCache",
    "Scorer",
    "TregTemplates",
    "annotate_token_rewards",
    "best_worst",
    "contrastive_token_rewards",
    "density_ratio",
    "format_conversation",
    "load_criteria",
    "pairs_from_candidates",
    "read_candidates",
    "relabel_pairs",
    "score_responses",
    "token_rewards",
]
