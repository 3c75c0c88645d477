"""Pair builder: strategies, tie handling and stats, DRPO weights, provenance, and loading with prefopt.data."""

from __future__ import annotations

import json

import pytest

from prefopt.data import load_pairs
from prefopt.online.pairs import Pair, build_pairs
from prefopt.online.types import ScoredRollout

CHAT = [{"role": "user", "content": "What is 2 + 2?"}]


def rollout(pid, k, reward, length, correct, prompt="What is 2 + 2?", rnd=1) -> ScoredRollout:
    return ScoredRollout(
        prompt_id=pid,
        sample_index=k,
        prompt=prompt,
        completion=f"answer {k} of {pid}",
        completion_ids=list(range(length)),
        length=length,
        finish_reason="stop",
        round=rnd,
        correct=correct,
        verify_status="ok",
        reward=reward,
    )


def ids(pairs):
    return [(p.meta["chosen_index"], p.meta["rejected_index"]) for p in pairs]


def test_best_vs_worst_with_length_tie_breaks_and_provenance():
    group = [
        rollout("a", 0, 1.0, 50, True),
        rollout("a", 1, 1.0, 30, True),
        rollout("a", 2, 0.0, 10, False),
        rollout("a", 3, 0.0, 90, False),
    ]
    pairs, stats = build_pairs(group, "best_vs_worst")
    assert ids(pairs) == [(1, 3)]  # the shorter of the best, the longer of the worst
    assert pairs[0].meta == {
        "round": 1,
        "prompt_id": "a",
        "strategy": "best_vs_worst",
        "chosen_index": 1,
        "rejected_index": 3,
        "chosen_reward": 1.0,
        "rejected_reward": 0.0,
        "chosen_length": 30,
        "rejected_length": 90,
        "chosen_correct": True,
        "rejected_correct": False,
        "chosen_finish_reason": "stop",
        "rejected_finish_reason": "stop",
    }
    assert pairs[0].id == "r1-a-1-3" and pairs[0].weight is None and "weight" not in pairs[0].to_dict()
    assert (stats.groups, stats.pairs, stats.skipped_groups) == (1, 1, {})


def test_each_strategy_decides_what_ties_mean():
    """Tied rewards: no preference for the reward-ranking strategies; correct_short_vs_incorrect ranks
    by correctness and length, so an all-correct group with tied rewards still gives (short, long)."""
    scored = [rollout("tie", k, 1.0, 10 + k, True) for k in range(4)] + [rollout("one", 0, 1.0, 5, True)]
    scored += [rollout("ok", 0, 1.0, 5, True), rollout("ok", 1, 0.0, 5, False)]
    for strategy in ("best_vs_worst", "margin_all"):
        pairs, stats = build_pairs(scored, strategy)
        assert stats.skipped_groups == {"all_tied": 1, "single_rollout": 1}, strategy
        assert (stats.groups, stats.pairs, len(pairs)) == (3, 1, 1)
    pairs, stats = build_pairs(scored, "correct_short_vs_incorrect")
    assert stats.skipped_groups == {"no_incorrect": 1, "single_rollout": 1} and ids(pairs) == [(0, 1)]
    for rejected in ("long_correct", "incorrect_or_long_correct"):
        pairs, stats = build_pairs(scored, "correct_short_vs_incorrect", rejected=rejected)
        tied = [p for p in pairs if p.meta["prompt_id"] == "tie"]
        assert [(p.meta["chosen_length"], p.meta["rejected_length"]) for p in tied] == [(10, 13)], rejected
        assert stats.skipped_groups.get("all_tied") is None


def test_correct_short_vs_incorrect_and_vs_long_correct():
    group = [
        rollout("a", 0, 1.2, 80, True),
        rollout("a", 1, 1.4, 20, True),
        rollout("a", 2, 1.1, 120, True),
        rollout("a", 3, 0.0, 40, False),
    ]
    assert ids(build_pairs(group, "correct_short_vs_incorrect")[0]) == [(1, 3)]
    assert ids(build_pairs(group, "correct_short_vs_incorrect", rejected="long_correct")[0]) == [(1, 2)]
    all_correct = [rollout("b", 0, 1.5, 20, True), rollout("b", 1, 1.0, 70, True)]
    none_correct = [rollout("c", 0, -0.5, 20, False), rollout("c", 1, -1.0, 70, False)]
    pairs, stats = build_pairs(all_correct + none_correct, "correct_short_vs_incorrect")
    assert pairs == [] and stats.skipped_groups == {"no_incorrect": 1, "no_correct": 1}
    pairs, _ = build_pairs(all_correct, "correct_short_vs_incorrect", rejected="incorrect_or_long_correct")
    assert ids(pairs) == [(0, 1)]


def test_margin_all_dno_vector_adapted():
    """SPEC §14 with student samples only (teacher answer dropped): scores s1..s5 = 6, 4, 5, 2, 3, positives
    must score >= 5 and beat the rejected by >= 1 → (s1 ≻ s2, s3, s4, s5), (s3 ≻ s2, s4, s5)."""
    group = [rollout("q", k, float(s), 10, True) for k, s in enumerate([6, 4, 5, 2, 3])]
    pairs, stats = build_pairs(group, "margin_all", margin=1.0, min_chosen_reward=5.0)
    assert sorted(ids(pairs)) == sorted([(0, 1), (0, 2), (0, 3), (0, 4), (2, 1), (2, 3), (2, 4)])
    capped, _ = build_pairs(group, "margin_all", margin=1.0, min_chosen_reward=5.0, max_pairs_per_prompt=3)
    assert ids(capped) == [(0, 3), (0, 4), (2, 3)]  # largest margins first, then chosen index
    strict, stats = build_pairs(group, "margin_all", margin=2.0, min_chosen_reward=6.0)
    assert ids(strict) == [(0, 3), (0, 4), (0, 1)]
    _, stats = build_pairs(group, "margin_all", margin=5.0)
    assert stats.skipped_groups == {"below_margin": 1}


def test_drpo_weights_on_pairs():
    """Weight = n_correct · softmax over correct of (1 − L/C)/λ, SPEC §10 lengths: 2 · [0.919931, 0.080069]."""
    group = [
        rollout("d", 0, 1.0, 1000, True),
        rollout("d", 1, 1.0, 3000, True),
        rollout("d", 2, 0.0, 5000, False),
        rollout("d", 3, 0.0, 8192, False),
    ]
    pairs, _ = build_pairs(
        group, "margin_all", margin=1.0, weighting="drpo", max_length=8192, drpo_lambda=0.1
    )
    weights = {p.meta["chosen_index"]: p.weight for p in pairs}
    assert weights[0] == pytest.approx(2 * 0.919931, abs=1e-6) and weights[1] == pytest.approx(
        2 * 0.080069, abs=1e-6
    )
    wrong_best = [rollout("e", 0, 2.0, 10, False), rollout("e", 1, 0.0, 10, True)]
    pairs, stats = build_pairs(wrong_best, weighting="drpo", max_length=100)
    assert pairs == [] and stats.dropped_pairs == {"chosen_not_correct": 1}
    with pytest.raises(ValueError, match="max_length"):
        build_pairs(group, weighting="drpo")


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="unknown strategy 'random'; registered: best_vs_worst"):
        build_pairs([], "random")
    with pytest.raises(ValueError, match="margin > 0"):
        build_pairs([], "margin_all", margin=0.0)
    with pytest.raises(ValueError, match=r"'best_vs_worst' takes no option\(s\) \['rejected'\]"):
        build_pairs([], "best_vs_worst", rejected="incorrect")  # an option the strategy ignores
    with pytest.raises(ValueError, match=r"\['drpo_lambda'\] only apply with weighting='drpo'"):
        build_pairs([], drpo_lambda=0.5)
    with pytest.raises(ValueError, match="rejected must be"):
        build_pairs([], "correct_short_vs_incorrect", rejected="short")
    with pytest.raises(ValueError, match="max_pairs_per_prompt must be >= 1"):
        build_pairs([], max_pairs_per_prompt=0)


def test_a_registered_strategy_is_used_by_name():
    from prefopt.online.pairs import available_pair_strategies, register_pair_strategy, strategy_options

    @register_pair_strategy("first_vs_last_test")
    def first_vs_last(group, *, flip: bool = False):
        if not group:
            return "empty"
        return [(len(group) - 1, 0)] if flip else [(0, len(group) - 1)]

    assert "first_vs_last_test" in available_pair_strategies()
    assert strategy_options("first_vs_last_test") == ["flip"]
    group = [rollout("a", k, 0.0, 5, True) for k in range(3)]  # all tied: this strategy does not care
    assert ids(build_pairs(group, "first_vs_last_test")[0]) == [(0, 2)]
    assert ids(build_pairs(group, "first_vs_last_test", flip=True)[0]) == [(2, 0)]
    with pytest.raises(ValueError, match="already registered"):
        register_pair_strategy("best_vs_worst")(first_vs_last)


def test_groups_are_keyed_by_round_and_prompt():
    scored = [rollout("a", 0, 1.0, 5, True, rnd=0), rollout("a", 0, 0.0, 5, False, rnd=1)]
    _, stats = build_pairs(scored)
    assert stats.skipped_groups == {"single_rollout": 2}


@pytest.mark.parametrize("prompt", ["What is 2 + 2?", CHAT])
def test_pairs_load_with_the_data_pipeline(tmp_path, prompt):
    scored = [
        rollout(p, k, r, n, c, prompt=prompt)
        for p in ("a", "b")
        for k, (r, n, c) in enumerate([(1.0, 12, True), (0.0, 40, False), (0.5, 20, True)])
    ]
    pairs, _ = build_pairs(scored, "margin_all", margin=0.5, weighting="drpo", max_length=64)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in pairs))
    dataset = load_pairs(path)
    assert len(dataset) == len(pairs) == 6
    row = dataset[0]
    assert (
        row["prompt"] == prompt
        and row["id"] == pairs[0].id
        and row["weight"] == pytest.approx(pairs[0].weight)
    )
    assert row["meta"]["prompt_id"] == "a" and row["meta"]["chosen_length"] == pairs[0].meta["chosen_length"]
    if isinstance(prompt, list):
        assert row["chosen"] == [{"role": "assistant", "content": pairs[0].chosen[0]["content"]}]
    assert Pair.from_dict(json.loads(json.dumps(pairs[0].to_dict()))) == pairs[0]
