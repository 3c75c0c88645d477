"""Load-time checks that a rounds recipe's reward can do, inside the loop, what its paper does.

A reward whose state would never move, or whose length term could never bind, silently trains
with plain correctness. These checks reject such a recipe when it loads, naming the key and what
to do instead. One check per reward name (:data:`_CHECKS`), plus one for every reward with
per-problem history (it needs problems that recur across rounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from prefopt.online.rewards import get_reward


def max_train_steps(recipe: Any) -> int | None:
    """An upper bound on one round's optimizer steps, or ``None`` when the pair count cannot be bounded."""
    cfg = recipe.train
    if cfg.max_steps:
        return cfg.max_steps
    per_group = recipe.pairs.options.get("max_pairs_per_prompt")
    if per_group is None:
        n = recipe.sampler.n
        per_group = {"best_vs_worst": 1, "correct_short_vs_incorrect": 1, "margin_all": n * (n - 1) // 2}.get(
            recipe.pairs.strategy
        )
    if per_group is None:
        return None
    batches = math.ceil(recipe.rounds.prompts_per_round * per_group / (cfg.batch_size * cfg.grad_accum))
    return math.ceil(cfg.epochs * batches)


def _check_tlts(recipe: Any, hp: dict[str, Any]) -> None:
    if hp["schedule"] == "constant":
        return
    first_change = hp["period"] if hp["schedule"] == "exponential" else hp["total"] / (hp["decays"] + 1)
    key = "reward.period" if hp["schedule"] == "exponential" else "reward.total"
    rounds_before_last = recipe.rounds.count - 1
    if hp["clock"] == "round":
        reach, unit = rounds_before_last, "rounds"
    else:
        per_round = max_train_steps(recipe)
        if per_round is None:
            return
        reach, unit = rounds_before_last * per_round, "optimizer steps"
    if reach < first_change:
        raise ValueError(
            f"{key}={hp['period'] if key == 'reward.period' else hp['total']} ({unit}, reward.clock={hp['clock']}): "
            f"the TLTS budget first changes after {first_change:g} {unit}, but this run completes at most {reach} "
            f"before its last round, so the budget stays at reward.initial={hp['initial']}; lower {key}, "
            "switch reward.clock, or set reward.schedule=constant"
        )


def _check_laser_d(recipe: Any, hp: dict[str, Any]) -> None:
    limit = recipe.sampler.max_new_tokens
    if hp["threshold_lower"] >= limit:
        raise ValueError(
            f"reward.threshold_lower={hp['threshold_lower']} >= sampler.max_new_tokens={limit}: every rollout is "
            "shorter than every monitor threshold, so every correct answer earns the length bonus (plain "
            f"correctness); set reward.threshold_lower, threshold_upper and threshold_interval below {limit}"
        )


def _check_laser(recipe: Any, hp: dict[str, Any]) -> None:
    limit = recipe.sampler.max_new_tokens
    if hp["target_length"] >= limit:
        raise ValueError(
            f"reward.target_length={hp['target_length']} >= sampler.max_new_tokens={limit}: every correct answer "
            f"earns the length bonus (plain correctness); set reward.target_length below {limit}"
        )


def _check_format_length(recipe: Any, hp: dict[str, Any]) -> None:
    limit = recipe.sampler.max_new_tokens
    if hp["max_length"] != limit:
        raise ValueError(
            f"reward.max_length={hp['max_length']} must be the generation limit sampler.max_new_tokens={limit} "
            "(L_max of the format-length reward); set reward.max_length to it"
        )


_CHECKS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "tlts": _check_tlts,
    "laser": _check_laser,
    "laser_d": _check_laser_d,
    "laser_de": _check_laser_d,
    "format_length": _check_format_length,
}


def check_reward_fits(recipe: Any) -> None:
    """Raise ``ValueError`` when the recipe's reward would degenerate inside the rounds loop."""
    name = recipe.reward.name
    reward = get_reward(name, **recipe.reward.hparams)
    if reward.per_problem_history and recipe.rounds.partition == "disjoint":
        raise ValueError(
            f"reward {name!r} keeps a per-problem history, but rounds.partition=disjoint never shows a problem twice, "
            "so its length term stays 0 (plain correctness); set rounds.partition=epochs (or resample)"
        )
    if name in _CHECKS:
        _CHECKS[name](recipe, reward.resolved_hparams)
