"""Length rewards for groups of rollouts, registered by name: ``get_reward("laser", alpha=0.5)``.

Importing this package registers the built-ins: ``correctness``, ``laser``, ``laser_d``,
``laser_de``, ``hapo``, ``kimi``, ``dler``, ``da_dler``, ``grpo_lambda``, ``tlts``, ``format_length``. See
``docs/rewards.md`` for the equations and defaults.
"""

from prefopt.online.rewards.base import (
    GroupScores,
    Reward,
    RolloutGroup,
    available_rewards,
    get_reward,
    group_rollouts,
    register_reward,
    score_rollouts,
)
from prefopt.online.rewards.dler import batch_normalize
from prefopt.online.rewards.drpo import drpo_weights
from prefopt.online.rewards.format_length import format_length_term
from prefopt.online.rewards.grpo_lambda import efficiency_groups
from prefopt.online.rewards.hapo import hapo_length_term, update_history
from prefopt.online.rewards.laser import (
    choose_target_length,
    difficulty_bucket,
    is_repetitive,
    length_thresholds,
    monitor_coverage,
    update_monitor,
)
from prefopt.online.rewards.simple import kimi_length_term
from prefopt.online.rewards.tlts import budget_at, tag_format_score, triangular_length_reward

__all__ = [
    "GroupScores",
    "Reward",
    "RolloutGroup",
    "available_rewards",
    "batch_normalize",
    "budget_at",
    "choose_target_length",
    "difficulty_bucket",
    "drpo_weights",
    "efficiency_groups",
    "format_length_term",
    "get_reward",
    "group_rollouts",
    "hapo_length_term",
    "is_repetitive",
    "kimi_length_term",
    "length_thresholds",
    "monitor_coverage",
    "register_reward",
    "score_rollouts",
    "tag_format_score",
    "triangular_length_reward",
    "update_history",
    "update_monitor",
]
