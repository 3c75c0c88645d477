"""The online path: rollouts → verified, scored rollouts → preference pairs (plus the rounds loop).

Records live in :mod:`prefopt.online.types` (a verification, shared with the evaluator, is
:class:`prefopt.verification.VerifyResult`); the verifiers in :mod:`prefopt.online.verifier`, the
length-reward registry in :mod:`prefopt.online.rewards`, the pair builder in
:mod:`prefopt.online.pairs`. A round's scoring, end to end::

    with get_verifier("math", timeout=5.0) as verifier:
        verdicts = verifier.verify_batch([r.completion for r in rollouts], golds)
    scored = score_rollouts(rollouts, verdicts, get_reward("laser", target_length=512), state)
    pairs, stats = build_pairs(scored, "correct_short_vs_incorrect")
"""

from prefopt.online.pairs import Pair, PairStats, build_pairs
from prefopt.online.rewards import (
    RolloutGroup,
    available_rewards,
    get_reward,
    register_reward,
    score_rollouts,
)
from prefopt.online.types import Prompt, RewardState, Rollout, ScoredRollout
from prefopt.online.verifier import available_verifiers, get_verifier, register_verifier

__all__ = [
    "Pair",
    "PairStats",
    "Prompt",
    "RewardState",
    "Rollout",
    "RolloutGroup",
    "ScoredRollout",
    "available_rewards",
    "available_verifiers",
    "build_pairs",
    "get_reward",
    "get_verifier",
    "register_reward",
    "register_verifier",
    "score_rollouts",
]
