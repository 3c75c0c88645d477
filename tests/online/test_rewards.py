"""Length rewards against the SPEC test vectors (/work/shared/SPEC.md §7–§12, §15)."""

from __future__ import annotations

import json
import math

import pytest

from prefopt.online.rewards import (
    RolloutGroup,
    available_rewards,
    batch_normalize,
    budget_at,
    choose_target_length,
    difficulty_bucket,
    drpo_weights,
    efficiency_groups,
    get_reward,
    is_repetitive,
    length_thresholds,
    score_rollouts,
    tag_format_score,
    triangular_length_reward,
    update_monitor,
)
from prefopt.online.types import RewardState, Rollout, ScoredRollout
from prefopt.verification import VerifyResult


def group(lengths, correct, finish=None, fmt=None, ids=None, pid="q") -> RolloutGroup:
    return RolloutGroup(pid, list(lengths), list(correct), finish or ["stop"] * len(lengths), fmt, ids)


def score(name: str, groups, state=None, **hp):
    return get_reward(name, **hp).score_batch(groups, state or RewardState())


def test_registry_lists_builtins_and_rejects_unknown_hparams():
    assert {
        "correctness",
        "laser",
        "laser_d",
        "laser_de",
        "hapo",
        "kimi",
        "dler",
        "da_dler",
        "grpo_lambda",
        "tlts",
    } <= set(available_rewards())
    with pytest.raises(TypeError, match="unknown hyperparameter"):
        get_reward("laser", alpah=0.5)
    with pytest.raises(KeyError, match="unknown reward"):
        get_reward("nope")


def test_correctness_is_zero_one():
    assert score("correctness", [group([5, 9], [True, False])])[0]["reward"] == [1.0, 0.0]


def test_laser_spec_vector_with_laser_base():
    """SPEC §7: L_T=4096, α=0.5: correct 3000 → 1.5; correct 5000 → 1.0; wrong formatted → −0.5; no box → −1."""
    g = group([3000, 5000, 3000, 3000], [True, True, False, False], fmt=[1.0, 1.0, 1.0, 0.0])
    out = score("laser", [g], target_length=4096, alpha=0.5, base="laser")[0]
    assert out["reward"] == [1.5, 1.0, -0.5, -1.0]
    assert out["length"] == [0.5, 0.0, 0.0, 0.0]
    binary = score("laser", [g], target_length=4096, base="binary")[0]
    assert binary["reward"] == [1.5, 1.0, 0.0, 0.0]


def test_laser_base_treats_truncated_as_malformed_without_format_scores():
    out = score("laser", [group([10, 10], [False, False], finish=["stop", "length"])], base="laser")[0]
    assert out["reward"] == [-0.5, -1.0]


def test_laser_d_target_selection_spec_vectors():
    """SPEC §7: n=8, thresholds 4096..7168, batch max 15000 → 5120 (high), 6144 (medium), 15000 (low)."""
    thresholds = [4096, 5120, 6144, 7168]
    assert choose_target_length(dict(zip(thresholds, [0.15, 0.2, 0.6, 0.9])), 5, 15000) == 5120
    assert choose_target_length(dict(zip(thresholds, [0.3, 0.45, 0.5, 0.7])), 2, 15000) == 6144
    assert choose_target_length(dict(zip(thresholds, [0.2, 0.5, 0.8, 0.95])), 1, 15000) == 15000
    assert length_thresholds(4096, 7168, 1024) == thresholds


@pytest.mark.parametrize("correct, bucket", [(6, "high"), (5, "medium"), (3, "medium"), (2, "low")])
def test_difficulty_buckets_spec_vector(correct, bucket):
    assert difficulty_bucket(correct / 8) == bucket


def test_laser_d_uses_monitor_targets_and_batch_max_fallback():
    state = RewardState(monitor_samples=8, coverage={"high": {4096: 0.15, 5120: 0.2, 6144: 0.6, 7168: 0.9}})
    easy = group([5000, 5200, 100, 100, 100, 100, 100, 100], [True] * 6 + [False] * 2, pid="easy")
    hard = group([15000, 9000, 100, 100, 100, 100, 100, 100], [True, True] + [False] * 6, pid="hard")
    out_easy, out_hard = score("laser_d", [easy, hard], state)
    assert out_easy["target_length"][0] == 5120.0
    assert out_easy["length"][:2] == [0.5, 0.0]  # 5000 ≤ 5120 < 5200
    assert out_hard["target_length"][0] == 15000.0  # no low-bucket monitor data → batch max
    assert out_hard["length"][:2] == [0.5, 0.5]


def test_update_monitor_records_coverage_per_bucket():
    state = RewardState()
    groups = [group([1, 2, 3], [True, True, True], pid="a"), group([4, 8, 9], [False, False, False], pid="b")]
    update_monitor(state, groups, [2, 8])
    assert state.monitor_samples == 3
    assert state.coverage == {"high": {2: 2 / 3, 8: 1.0}, "low": {2: 0.0, 8: 2 / 3}}


def test_laser_de_exploration_bonus_only_for_long_wellformed_nonrepetitive_wrong():
    loop = [1, 2, 3, 4, 5] * 40
    varied = list(range(200))
    g = group(
        [200, 200, 200, 50],
        [False, False, False, True],
        fmt=[1.0, 1.0, 0.0, 1.0],
        ids=[varied, loop, varied, varied[:50]],
    )
    state = RewardState(monitor_samples=4, coverage={"low": {100: 1.0}})
    out = score("laser_de", [g], state, repetition_ngram=5, repetition_min_repeats=3)[0]
    assert out["target_length"][0] == 100.0
    assert out["exploration"] == [0.5, 0.0, 0.0, 0.0]
    assert out["length"] == [0.0, 0.0, 0.0, 0.5]
    assert is_repetitive(loop, ngram=5) and not is_repetitive(varied, ngram=5)


@pytest.mark.parametrize(
    "length, correct, r_len, r_total",
    [
        (500, True, 0.707107, 1.707107),
        (800, True, 0.309017, 1.309017),
        (1000, True, 0.0, 1.0),
        (1500, True, -0.7, 0.3),
        (500, False, 0.0, 0.0),
        (1500, False, -0.707107, -0.707107),
        (2500, False, -1.0, -1.0),
    ],
)
def test_hapo_spec_table(length, correct, r_len, r_total):
    """SPEC §8 (h = 1000, w = 1)."""
    out = score("hapo", [group([length], [correct])], RewardState(history={"q": 1000.0}), update=False)[0]
    assert out["length"][0] == pytest.approx(r_len, abs=1e-6)
    assert out["reward"][0] == pytest.approx(r_total, abs=1e-6)


def test_hapo_scores_with_pre_update_history_then_persists():
    """Null history → r_len = 0; after the batch h = min correct length = 500; the state survives JSON."""
    state = RewardState()
    batch = [group([500, 800, 1000, 1500, 300], [True, True, True, True, False], pid="q7")]
    out = score("hapo", batch, state)[0]
    assert out["length"] == [0.0] * 5
    assert state.history == {"q7": 500.0}
    resumed = RewardState.from_dict(json.loads(json.dumps(state.to_dict())))
    again = score("hapo", [group([500], [True], pid="q7")], resumed)[0]
    assert again["length"][0] == pytest.approx(0.0, abs=1e-12)  # cos(π/2 · 500/500)


def test_hapo_mean_mode_and_order_independence():
    groups = [group([100, 300], [True, True], pid="a"), group([50], [True], pid="a")]
    state = RewardState(history={"a": 200.0}, history_count={"a": 1})
    first = score("hapo", groups, state, mode="mean")
    assert (
        first[0]["length"]
        == score("hapo", groups[::-1], RewardState(history={"a": 200.0}), mode="mean")[1]["length"]
    )
    assert state.history["a"] == pytest.approx((200 + 100 + 300 + 50) / 4)


def test_kimi_spec_vectors():
    """SPEC §15: lengths [100..400], correct [T,T,F,F] → [0.5, 1/6, −1/6, −0.5]; [300, 100], [F, T] → [−0.5, 0.5]."""
    out = score("kimi", [group([100, 200, 300, 400], [True, True, False, False])], weight=1.0)[0]
    assert out["length"] == pytest.approx([0.5, 0.166667, -0.166667, -0.5], abs=1e-6)
    assert out["reward"] == pytest.approx([1.5, 1.166667, -0.166667, -0.5], abs=1e-6)
    assert score("kimi", [group([300, 100], [False, True])])[0]["length"] == [-0.5, 0.5]
    assert score("kimi", [group([7, 7], [True, False])])[0]["length"] == [0.0, 0.0]


def test_dler_truncation_and_stop_penalty():
    g = group([3000, 4500, 3900, 100], [True, True, True, False], finish=["stop", "stop", "length", "stop"])
    assert score("dler", [g])[0]["reward"] == [1.0, 0.0, 0.0, 0.0]
    assert score("dler", [g], stop_penalty=0.1)[0]["reward"] == pytest.approx([1.0, 0.0, 0.1, 0.0])


@pytest.mark.parametrize("n_correct, limit", [(1, 4000), (2, 2000), (3, 2000)])
def test_da_dler_spec_vector(n_correct, limit):
    """SPEC §9: ratio 0.25 → 4000; 0.5 or 0.75 → 2000."""
    out = score("da_dler", [group([3000] * 4, [True] * n_correct + [False] * (4 - n_correct))])[0]
    assert out["max_length"][0] == limit
    assert out["reward"][0] == (1.0 if limit == 4000 else 0.0)


def test_batch_normalize_spec_vector():
    """SPEC §9: A = [1, 1, 0, 0], B = [1, 0, 0, 0], equal lengths, unbiased std → [1, 1, −1, −1, 1.5, −.5, −.5, −.5]."""
    rewards = [[1, 1, 0, 0], [1, 0, 0, 0]]
    expected = [[1.0, 1.0, -1.0, -1.0], [1.5, -0.5, -0.5, -0.5]]
    for got, want in zip(batch_normalize(rewards, weighting="sequence"), expected):
        assert got == pytest.approx(want, abs=1e-6)
    ones = [[1] * 4, [1] * 4]
    assert batch_normalize(rewards, ones, "token") == batch_normalize(rewards, weighting="sequence")


def test_batch_normalize_token_weighting_matches_expanded_tokens():
    """Token weighting equals whitening the per-token broadcast tensor (verl masked_whiten)."""
    import torch

    rewards, lengths = [[1.0, 0.0], [0.0, 1.0, 1.0]], [[3, 1], [2, 5, 4]]
    got = batch_normalize(rewards, lengths, "token")
    centered = [[r - sum(g) / len(g) for r in g] for g in rewards]
    tokens = torch.tensor(
        [a for ga, gl in zip(centered, lengths) for a, n in zip(ga, gl) for _ in range(n)],
        dtype=torch.float64,
    )
    mean, std = tokens.mean(), (tokens.var(unbiased=True) + 1e-8).sqrt()
    want = [[float((a - mean) / std) for a in ga] for ga in centered]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-9)


def test_grpo_lambda_spec_vectors():
    """SPEC §11: λ=0.4 over c = {1, .75, .5, .25, 0} → {q1, q2}; correct lengths [100, 200, 300], α=0.6."""
    assert efficiency_groups([1.0, 0.75, 0.5, 0.25, 0.0], 0.4) == {0, 1}
    eff = group([100, 200, 300], [True, True, True], pid="q1")
    acc = group([100, 200], [True, False], pid="q3")
    mixed = group([100, 999, 200, 300], [True, False, True, True], pid="q2")
    out = score("grpo_lambda", [eff, mixed, acc], fraction=0.4, alpha=0.6)
    assert out[0]["reward"] == pytest.approx([0.863738, 0.7, 0.536262], abs=1e-6)
    assert out[1]["reward"] == pytest.approx([0.863738, 0.0, 0.7, 0.536262], abs=1e-6)
    assert out[2]["reward"] == [1.0, 0.0]


def test_grpo_lambda_never_selects_groups_without_correct_answers():
    assert efficiency_groups([0.0, 0.0, 0.5], 1.0) == {2}


@pytest.mark.parametrize("length, r", [(40, 0.459770), (87, 1.0), (130, 0.505747), (174, 0.0), (200, 0.0)])
def test_tlts_triangular_spec_vector(length, r):
    assert triangular_length_reward(length, 87) == pytest.approx(r, abs=1e-6)


def test_tlts_band_total_and_schedules():
    """SPEC §12: band at 40 → 1; total (0.6, 0.3, 0.1), correct, ℓ=60, both tags → 0.906897; schedules."""
    assert triangular_length_reward(40, 87, "band") == 1.0
    text = "<think>a</think><answer>4</answer>"
    g = group([60], [True], fmt=[tag_format_score(text)])
    out = score("tlts", [g], schedule="constant", initial=87)[0]
    assert out["reward"][0] == pytest.approx(0.906897, abs=1e-6)
    assert [budget_at(t, "exponential") for t in (0, 150, 300, 450, 599)] == [256, 179, 125, 87, 87]
    stepwise = [budget_at(t, "stepwise") for t in (0, 150, 300, 450)]
    assert stepwise == pytest.approx([256, 178.65, 124.67, 87.0], abs=0.01)
    assert (256 / 87) ** (-1 / 3) == pytest.approx(0.697846, abs=1e-6)
    assert [budget_at(t, "linear") for t in (0, 150, 300, 450)] == pytest.approx(
        [256, 199.667, 143.333, 87], abs=1e-3
    )
    late = score("tlts", [g], RewardState(round=3), clock="round", schedule="exponential", period=1)[0]
    assert late["budget"][0] == 87.0


def test_tlts_requires_format_scores_or_zero_weight():
    with pytest.raises(ValueError, match="format_scores"):
        score("tlts", [group([60], [True])])
    assert score("tlts", [group([60], [True])], lambda_format=0.0)[0]["format"] == [0.0]


def test_tag_format_score():
    assert tag_format_score("<think>x</think> 4") == 0.5
    assert tag_format_score("<think>x</think><think>y</think><answer>1</answer>") == 0.5


def test_drpo_weights_spec_vector():
    """SPEC §10: lengths [1000, 3000, 5000, 8192], correct [1, 1, 0, 0], C=8192, λ=0.1."""
    w = drpo_weights([1000, 3000, 5000, 8192], [True, True, False, False], max_length=8192, lam=0.1)
    assert w == pytest.approx([0.919931, 0.080069, 0.0, 0.0], abs=1e-6)
    tiny = drpo_weights([10, 20], [True, True], max_length=100, lam=1e-4)  # exp(1e4) would overflow
    assert tiny == pytest.approx([1.0, 0.0]) and all(math.isfinite(x) for x in tiny)
    assert drpo_weights([1, 2], [False, False], 10) == [0.0, 0.0]


def test_score_rollouts_groups_by_prompt_and_keeps_order():
    def rollout(pid, k, n):
        return Rollout(pid, k, "Q", "x", list(range(n)), n, "stop")

    rollouts = [rollout("a", 0, 10), rollout("b", 0, 5), rollout("a", 1, 30)]
    verdicts = [VerifyResult(True, "ok", "1"), VerifyResult(False, "timeout"), VerifyResult(True, "ok", "1")]
    scored = score_rollouts(rollouts, verdicts, get_reward("kimi", weight=1.0), RewardState())
    assert [s.prompt_id for s in scored] == ["a", "b", "a"]
    assert [s.reward for s in scored] == [1.5, 0.0, 0.5]
    assert scored[1].verify_status == "timeout" and scored[0].components == {
        "correctness": 1.0,
        "length": 0.5,
    }
    assert ScoredRollout.from_dict(json.loads(json.dumps(scored[0].to_dict()))) == scored[0]
    with pytest.raises(ValueError, match="verifications"):
        score_rollouts(rollouts, verdicts[:2], get_reward("correctness"), RewardState())


def test_group_validation_names_the_prompt():
    with pytest.raises(ValueError, match="'q9'"):
        RolloutGroup("q9", [1, 2], [True], ["stop", "stop"])


def test_records_validate_and_name_the_problem():
    with pytest.raises(ValueError, match="length=3 but it has 2 completion_ids"):
        Rollout("p", 0, "Q", "x", [1, 2], 3, "stop")
    with pytest.raises(ValueError, match="finish_reason"):
        Rollout("p", 0, "Q", "x", [1], 1, "eos")
    with pytest.raises(ValueError, match=r"rollouts.jsonl row 4: .*missing field\(s\) \['finish_reason'\]"):
        Rollout.from_dict(
            {
                "prompt_id": "p",
                "sample_index": 0,
                "prompt": "Q",
                "completion": "x",
                "completion_ids": [1],
                "length": 1,
            },
            where="rollouts.jsonl row 4",
        )
    state = RewardState(round=2, step=40, monitor_samples=8, coverage={"high": {4096: 0.25}})
    assert RewardState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_laser_d_ceil_rounding_matches_laser():
    """LASER's ``round_method="ceil"``: C_d rounded up (⌈2n/3⌉, ⌈n/3⌉) and P·C_d compared unrounded, so an
    exact count is not bumped and 0% coverage never qualifies; ``floor``: ⌊P·⌊2n/3⌋⌋."""
    from prefopt.online.rewards.laser import bucket_capacity

    assert [bucket_capacity(b, 8, "ceil") for b in ("high", "medium", "low")] == [6, 3, 1]
    assert [bucket_capacity(b, 8, "floor") for b in ("high", "medium", "low")] == [5, 2, 1]
    assert bucket_capacity("high", 6, "ceil") == 4  # 2·6/3 is already an integer
    assert choose_target_length({10: 0.0, 20: 0.25}, 4, 99, 1, "ceil") == 20  # 0.25 · 4 = 1 exactly
    assert choose_target_length({10: 0.0, 20: 0.25}, 4, 99, 2, "ceil") == 99  # 1 < 2: not bumped to 2
    assert choose_target_length({10: 0.0}, 6, 99, 1, "ceil") == 99  # 0% coverage never qualifies
    assert choose_target_length({10: 0.17}, 6, 99, 1, "ceil") == 10  # 1.02 ≥ 1 ...
    assert choose_target_length({10: 0.17}, 5, 99, 1, "floor") == 99  # ... ⌊0.85⌋ = 0 < 1


def test_laser_d_updates_its_monitor_after_scoring():
    state = RewardState()
    g = group([10, 20, 30], [True, True, True])
    first = score("laser_d", [g], state, threshold_lower=10, threshold_upper=30, threshold_interval=10)[0]
    assert first["target_length"] == [30.0] * 3  # scored before the update: no monitor yet
    assert state.monitor_samples == 3 and state.coverage == {"high": {10: 1 / 3, 20: 2 / 3, 30: 1.0}}
    frozen = RewardState()
    score("laser_d", [g], frozen, update=False)
    assert frozen.coverage == {}


def test_batch_normalize_one_rollout_group_keeps_its_reward():
    """verl-dler: a group of one has no baseline (mean 0), so its centred value is R, not 0."""
    centred = [1.0, 0.5, -0.5]  # [[1]] and [[1, 0]] centred
    mean = sum(centred) / 3
    std = math.sqrt(sum((a - mean) ** 2 for a in centred) / 2 + 1e-8)
    got = batch_normalize([[1.0], [1.0, 0.0]], weighting="sequence")
    assert [x for g in got for x in g] == pytest.approx([(a - mean) / std for a in centred])


def test_well_formed_respects_the_verifiers_no_answer():
    """LASER: a finished response without an answer scores −1, a wrong answer −0.5."""
    g = RolloutGroup("q", [10, 10], [False, False], ["stop", "stop"], statuses=["no_answer", "ok"])
    assert score("laser", [g], base="laser")[0]["reward"] == [-1.0, -0.5]


def test_format_length_hand_vector():
    """L_max = 100, p = 0.5, w_f = 1 (the official length_reward_func_v3 and Format-Length score):
    L = 25 → x = .25 → R = 1 − (1 − .5)² = .75 → 1.75; 50 → R = 1 → 2; 75 → R = 1 − 2(.25/.5)² = .5 → 1.5;
    100 → R = −1 → 0. Unformatted: min(0, R): L = 50 → 0, L = 100 → −1. The verdict is not used."""
    g = group([25, 50, 75, 100, 50, 100], [True, False, True, True, True, True], fmt=[1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    out = score("format_length", [g], max_length=100)[0]
    assert out["reward"] == pytest.approx([1.75, 2.0, 1.5, 0.0, 0.0, -1.0])
    assert score("format_length", [g], max_length=100, format_weight=0.5)[0]["reward"][0] == pytest.approx(1.25)
    with pytest.raises(ValueError, match="0 < peak < 1"):
        score("format_length", [g], peak=1.0)
