"""The online path: rollouts → verified, scored rollouts → preference pairs (plus the rounds loop).

Records live in :mod:`prefopt.online.types`; the verifier in :mod:`prefopt.online.verifier`, the
length-reward registry in :mod:`prefopt.online.rewards`, the pair builder in
:mod:`prefopt.online.pairs`.
"""

from prefopt.online.types import Prompt, RewardState, Rollout, ScoredRollout, VerifyResult

__all__ = ["Prompt", "RewardState", "Rollout", "ScoredRollout", "VerifyResult"]
