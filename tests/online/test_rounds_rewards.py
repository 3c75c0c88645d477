"""Every registered reward, end to end through the rounds loop (tiny model, scripted rollouts).

Each test runs a few rounds whose rollouts (length, correctness, format, finish reason) are
scripted, then checks that on the same rollouts the reward's pairs differ from plain
``correctness`` where its paper says they should, and that its state moves across rounds as the
paper says. Lengths count tokens with the EOS; the byte-level test tokenizer gives one token per
character. Group size n = 4 throughout.
"""

from __future__ import annotations

import math

import pytest
from scripted_rounds import Planned, run_rounds

from prefopt.online.rewards.base import _REGISTRY

T, F = True, False


def same_for_every_problem(*rounds: list[Planned]):
    """A plan giving every problem of round r the rollouts ``rounds[r - 1]`` (the last one for later
    rounds, the first one for evaluation)."""
    return lambda r, pid, k: rounds[min(max(r, 1), len(rounds)) - 1][k]


def by_index(keys: set[tuple[str, int, int]]) -> set[tuple[int, int]]:
    """(chosen, rejected) sample indices of pair keys, whatever the problem (every problem has the same plan)."""
    return {(k, j) for _, k, j in keys}


def cut() -> Planned:
    """A truncated rollout whose cut-off text ends with the right answer."""
    return Planned(64, True, finished=False)


def test_correctness(tmp_path, tiny_model_dir, monkeypatch):
    """The baseline: every pair is correct ≻ incorrect; lengths never matter; truncated is wrong."""
    plan = same_for_every_problem([Planned(11, T), Planned(31, T), Planned(21, F), cut()])
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, plan)
    for r in (1, 2):
        assert run.pair_keys(r) == run.correctness_pair_keys(r)
        assert all(p["meta"]["chosen_correct"] and not p["meta"]["rejected_correct"] for p in run.pairs(r))
        assert {(s.sample_index, s.verify_status) for s in run.scored(r) if not s.correct} == {(2, "ok"), (3, "truncated")}


def test_laser(tmp_path, tiny_model_dir, monkeypatch):
    """LASER: +α for correct answers within L_T = 24, so the short correct answer beats the long one."""
    plan = same_for_every_problem([Planned(11, T), Planned(31, T), Planned(21, F), Planned(41, F)])
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, plan, rounds=1,
                     overrides={"reward": {"name": "laser", "target_length": 24}})
    assert [s.reward for s in run.scored(1)][:4] == [1.5, 1.0, 0.0, 0.0]
    assert (0, 1) in by_index(run.pair_keys(1)) and (0, 1) not in by_index(run.correctness_pair_keys(1))


LASER_D = {"threshold_lower": 8, "threshold_upper": 64, "threshold_interval": 8}


def test_laser_d(tmp_path, tiny_model_dir, monkeypatch):
    """LASER-D: the target of round r comes from round r−1's coverage (the monitor interval is a round).

    All-correct groups (bucket high, C = ⌊2·4/3⌋ = 2, target = least ℓ with ⌊P_ℓ·2⌋ ≥ 1, i.e. P_ℓ ≥ 1/2):
    round 1 has no monitor → the batch max 51 (no constraint, every answer tied like correctness);
    round 1's lengths [21, 31, 41, 51] → ℓ = 32 for round 2; round 2's [11, 21, 31, 41] → ℓ = 24 for round 3.
    """
    plan = same_for_every_problem([Planned(n, T) for n in (21, 31, 41, 51)], [Planned(n, T) for n in (11, 21, 31, 41)])
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, plan, rounds=3,
                     overrides={"reward": {"name": "laser_d", **LASER_D}})
    assert [set(run.components(r, "target_length")) for r in (1, 2, 3)] == [{51.0}, {32.0}, {24.0}]
    assert run.state(1).monitor_samples == 4 and run.state(1).coverage["high"][32] == 0.5
    assert run.pairs(1) == [] and run.correctness_pair_keys(2) == set() == run.correctness_pair_keys(3)
    assert by_index(run.pair_keys(2)) == {(0, 3), (1, 3), (2, 3)}  # 41 > 32 loses the bonus
    assert by_index(run.pair_keys(3)) == {(0, 2), (0, 3), (1, 2), (1, 3)}  # 31 > 24 too
    assert run.metrics[2]["reward"]["target_length"] == 32.0


def test_laser_de(tmp_path, tiny_model_dir, monkeypatch):
    """LASER-DE: from round 2 (target 24 from round 1's coverage), the wrong but well-formed,
    non-repetitive 51-token answer longer than the target earns the exploration bonus α."""
    group = [Planned(11, T), Planned(21, T), Planned(31, T), Planned(51, F)]
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, same_for_every_problem(group),
                     overrides={"reward": {"name": "laser_de", **LASER_D}})
    assert set(run.components(1, "exploration")) == {0.0}  # no monitor yet: target = batch max
    assert run.components(2, "exploration")[:4] == [0.0, 0.0, 0.0, 0.5]
    assert set(run.components(2, "target_length")) == {24.0}
    assert [s.reward for s in run.scored(2)][:4] == [1.5, 1.5, 1.0, 0.5]
    assert by_index(run.pair_keys(2)) == {(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)} != by_index(run.correctness_pair_keys(2))


def test_hapo(tmp_path, tiny_model_dir, monkeypatch):
    """HAPO: every problem comes back (partition epochs); the history is set on first encounter
    (length term 0, pairs as correctness) and used the next time: h = 21 → the 11-token answer beats the 31."""
    plan = same_for_every_problem([Planned(21, T), Planned(31, T), Planned(11, F), Planned(41, F)],
                                  [Planned(11, T), Planned(31, T), Planned(21, F), Planned(51, F)])
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, plan, prompts=4, overrides={"reward": {"name": "hapo"}})
    assert {s.prompt_id for s in run.scored(1)} == {s.prompt_id for s in run.scored(2)} == {"q1", "q2", "q3", "q4"}
    assert set(run.components(1, "length")) == {0.0} and run.pair_keys(1) == run.correctness_pair_keys(1)
    assert run.state(1).history == {q: 21.0 for q in ("q1", "q2", "q3", "q4")}
    lengths = run.components(2, "length")[:4]
    assert lengths == pytest.approx([math.cos(n / 21 * math.pi / 2) for n in (11, 31)] + [0.0, -1.0])
    assert (0, 1) in by_index(run.pair_keys(2)) - by_index(run.correctness_pair_keys(2))
    assert run.state(2).history["q1"] == 11.0


def test_kimi(tmp_path, tiny_model_dir, monkeypatch):
    """Kimi k1.5: λ over the group's range [11, 64]; the shorter correct answer wins, the truncated one ranks last."""
    plan = same_for_every_problem([Planned(11, T), Planned(41, T), Planned(21, F), cut()])
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, plan, rounds=1, overrides={"reward": {"name": "kimi"}})
    rewards = [s.reward for s in run.scored(1)][:4]
    assert rewards == pytest.approx([1.2, 1 + 0.4 * (0.5 - 30 / 53), 0.0, -0.2])  # wrong: min(0, λ)
    assert (0, 1) in by_index(run.pair_keys(1)) - by_index(run.correctness_pair_keys(1))
    assert (2, 3) in by_index(run.pair_keys(1))  # a finished wrong answer beats a truncated one


def test_dler(tmp_path, tiny_model_dir, monkeypatch):
    """DLER: a correct answer over max_length = 30 scores 0, so the 11-token answer beats the 41."""
    plan = same_for_every_problem([Planned(11, T), Planned(41, T), Planned(21, F), Planned(51, F)])
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, plan, rounds=1,
                     overrides={"reward": {"name": "dler", "max_length": 30}})
    assert [s.reward for s in run.scored(1)][:4] == [1.0, 0.0, 0.0, 0.0]
    assert (0, 1) in by_index(run.pair_keys(1))
    assert (1, 2) in by_index(run.correctness_pair_keys(1)) - by_index(run.pair_keys(1))


def test_da_dler(tmp_path, tiny_model_dir, monkeypatch):
    """DA-DLER: a group at accuracy 3/4 ≥ 0.5 is easy and gets the tighter easy_max_length = 30."""
    plan = same_for_every_problem([Planned(11, T), Planned(21, T), Planned(41, T), Planned(51, F)])
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, plan, rounds=1,
                     overrides={"reward": {"name": "da_dler", "max_length": 60, "easy_max_length": 30}})
    assert set(run.components(1, "max_length")) == {30.0}
    assert [s.reward for s in run.scored(1)][:4] == [1.0, 1.0, 0.0, 0.0]
    assert (0, 2) in by_index(run.pair_keys(1)) - by_index(run.correctness_pair_keys(1))


def test_grpo_lambda(tmp_path, tiny_model_dir, monkeypatch):
    """GRPO-λ with λ = 0.25 of 4 groups: only the most accurate group (q1: 3/4, the others 2/4) is an
    efficiency group, where shorter correct answers score higher; the others keep the 0/1 reward."""
    easy = [Planned(11, T), Planned(31, T), Planned(51, T), Planned(21, F)]
    other = [Planned(11, T), Planned(31, T), Planned(21, F), Planned(41, F)]
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, lambda r, pid, k: (easy if pid == "q1" else other)[k],
                     rounds=1, prompts=4, overrides={"reward": {"name": "grpo_lambda", "fraction": 0.25}})
    rows = {pid: [s for s in run.scored(1) if s.prompt_id == pid] for pid in ("q1", "q2", "q3", "q4")}
    assert {pid: {s.components["efficiency_group"] for s in g} for pid, g in rows.items()} == {
        "q1": {1.0}, "q2": {0.0}, "q3": {0.0}, "q4": {0.0}}
    r1 = [s.reward for s in rows["q1"]]
    assert r1[0] > r1[1] > r1[2] > r1[3] == 0.0 and [s.reward for s in rows["q2"]] == [1.0, 1.0, 0.0, 0.0]
    assert ("q1", 0, 1) in run.pair_keys(1) - run.correctness_pair_keys(1)


@pytest.mark.parametrize(("clock", "max_steps", "period"), [("step", 2, 2), ("round", 1, 1)])
def test_tlts(tmp_path, tiny_model_dir, monkeypatch, clock, max_steps, period):
    """TLTS: B(t) = ⌊40 · 0.5^⌊t/T⌋⌋ with t = optimizer steps (2 per round, T = 2) or rounds (T = 1)
    completed before the round → 40, 20, 10; the triangle peaks at the budget, so the 11-token
    correct answer beats the 31 once B = 10 (and loses to it at B = 40)."""
    budgets = [40.0, 20.0, 10.0]
    plan = same_for_every_problem([Planned(11, T), Planned(31, T), Planned(21, F), Planned(41, F)])
    reward = {"name": "tlts", "clock": clock, "initial": 40, "gamma": 0.5, "period": period}
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, plan, rounds=3,
                     overrides={"reward": reward, "train": {"max_steps": max_steps}})
    assert [set(run.components(r, "budget")) for r in (1, 2, 3)] == [{b} for b in budgets]
    assert [run.metrics[r]["reward"]["budget"] for r in (1, 2, 3)] == budgets
    steps = [run.record(r, "score")["reward_clock"]["step"] for r in (1, 2, 3)]
    assert steps == [0, max_steps, 2 * max_steps] and set(run.components(1, "format")) == {1.0}
    assert (0, 1) not in by_index(run.pair_keys(1))  # B = 40: the triangle still favours 31 over 11 ...
    assert (0, 1) in by_index(run.pair_keys(3)) - by_index(run.correctness_pair_keys(3))  # ... not at B ≤ 10


def test_format_length(tmp_path, tiny_model_dir, monkeypatch):
    """Format-length: label-free; a well-formed wrong answer scores 1 + R_len, an unformatted one min(0, R_len),
    a truncated one (L = L_max, R_len = −1) −1."""
    plan = same_for_every_problem([Planned(21, T), Planned(31, F), Planned(41, F, formatted=False), cut()])
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, plan, rounds=1,
                     overrides={"reward": {"name": "format_length", "max_length": 64}})
    rewards = [s.reward for s in run.scored(1)][:4]
    r_len = [1 - (1 - n / 32) ** 2 for n in (21, 31)]
    assert rewards == pytest.approx([1 + r_len[0], 1 + r_len[1], 0.0, -1.0])
    assert (1, 2) in by_index(run.pair_keys(1)) - by_index(run.correctness_pair_keys(1))  # formatted wrong wins


def test_every_builtin_reward_has_an_end_to_end_test():
    builtin = {name for name, entry in _REGISTRY.items() if (entry.fn.__module__ or "").startswith("prefopt.")}
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_") and name != "test_every_builtin_reward_has_an_end_to_end_test"}
    assert builtin <= tested, f"rewards without an end-to-end test: {sorted(builtin - tested)}"
