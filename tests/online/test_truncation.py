"""Truncated rollouts: never credited by default, ranked below every finished rollout by every
length reward, and never trained with an EOS the model did not generate."""

from __future__ import annotations

import pytest
from scripted_rounds import MAX_NEW_TOKENS, Planned, run_rounds

from prefopt.data import tokenize_pairs
from prefopt.online.answers import format_score
from prefopt.online.pairs import build_pairs
from prefopt.online.rewards import get_reward, score_rollouts
from prefopt.online.rewards.base import _REGISTRY
from prefopt.online.types import RewardState, Rollout
from prefopt.online.verifier import get_verifier
from prefopt.verification import verify_rollouts

BUILTIN = sorted(name for name, entry in _REGISTRY.items() if (entry.fn.__module__ or "").startswith("prefopt."))
# hyperparameters under which each reward's length term binds on lengths 10..64
HPARAMS = {"laser": {"target_length": 30}, "dler": {"max_length": 50}, "da_dler": {"max_length": 50},
           "tlts": {"initial": 30}, "format_length": {"max_length": 64}, "grpo_lambda": {"fraction": 1.0},
           "laser_d": {"threshold_lower": 8, "threshold_upper": 64, "threshold_interval": 8},
           "laser_de": {"threshold_lower": 8, "threshold_upper": 64, "threshold_interval": 8}}


def rollout(k: int, text: str, length: int, finish: str = "stop") -> Rollout:
    return Rollout("p", k, "What is 2 + 3?", text, list(range(length)), length, finish, 1)


GROUP = [rollout(0, "so #### 5", 12), rollout(1, "hmm, #### 5", 40), rollout(2, "#### 6", 10),
         rollout(3, "long and wrong #### 7", 60), rollout(4, "thinking ... so #### 5", 64, "length")]


def test_truncated_rollouts_are_never_credited_by_default():
    with get_verifier("exact") as verifier:
        texts, golds, finish = [r.completion for r in GROUP], ["5"] * 5, [r.finish_reason for r in GROUP]
        default = verify_rollouts(verifier, texts, golds, finish)
        checked = verify_rollouts(verifier, texts, golds, finish, truncated="verify")
    assert [v.correct for v in default] == [True, True, False, False, False]
    assert (default[4].status, default[4].extracted) == ("truncated", None)
    assert checked[4].correct and checked[4].status == "ok"  # verifier.truncated: verify checks it
    assert format_score(GROUP[4].completion, "length") == 0.0 == format_score("no answer", "stop")
    assert format_score("x \\boxed{5}", "stop", "hash") == 0.0 and format_score("#### 5", "stop", "hash") == 1.0


@pytest.mark.parametrize("name", BUILTIN)
def test_a_truncated_rollout_ranks_below_every_finished_one(name):
    """Under the default policy, with the loop's format scores, every reward scores the truncated rollout
    (whose cut-off text holds the right answer) no higher than any finished one, and both pair
    strategies that pick a rejected answer pick it."""
    with get_verifier("exact") as verifier:
        verdicts = verify_rollouts(verifier, [r.completion for r in GROUP], ["5"] * 5,
                                   [r.finish_reason for r in GROUP])
    formats = [format_score(r.completion, r.finish_reason) for r in GROUP]
    state = RewardState(history={"p": 20.0}, history_count={"p": 1}, monitor_samples=5,
                        coverage={b: {16: 0.5, 32: 0.8, 64: 1.0} for b in ("high", "medium", "low")})
    scored = score_rollouts(GROUP, verdicts, get_reward(name, **HPARAMS.get(name, {})), state, formats)
    rewards = [s.reward for s in scored]
    assert rewards[4] <= min(rewards[:4]), rewards
    for strategy, options in (("best_vs_worst", {}), ("correct_short_vs_incorrect", {})):
        pairs, _ = build_pairs(scored, strategy, **options)
        assert [p.meta["rejected_index"] for p in pairs] == [4], (strategy, rewards)
        assert pairs[0].meta["rejected_finish_reason"] == "length"


def test_kimi_ranks_truncated_wrong_below_finished_wrong():
    """Issue 7's case: lengths [100 correct, 600 wrong finished, 1024 wrong truncated] → the truncated one is last."""
    rollouts = [rollout(0, "#### 5", 100), rollout(1, "#### 6", 600), rollout(2, "#### 5", 1024, "length")]
    with get_verifier("exact") as verifier:
        verdicts = verify_rollouts(verifier, [r.completion for r in rollouts], ["5"] * 3, ["stop", "stop", "length"])
    formats = [format_score(r.completion, r.finish_reason) for r in rollouts]
    scored = score_rollouts(rollouts, verdicts, get_reward("kimi"), RewardState(), formats)
    assert [s.reward for s in scored] == pytest.approx([1.2, 0.4 * min(0.0, 0.5 - 500 / 924), -0.2])
    for strategy in ("best_vs_worst", "correct_short_vs_incorrect"):
        assert [p.meta["rejected_index"] for p in build_pairs(scored, strategy)[0]] == [2]


@pytest.mark.parametrize("conversational", [False, True])
def test_no_eos_is_appended_to_an_unfinished_completion(tiny_tokenizer, conversational):
    import datasets

    eos = tiny_tokenizer.eos_token_id
    prompt = [{"role": "user", "content": "2 + 3?"}] if conversational else "2 + 3?"
    side = (lambda t: [{"role": "assistant", "content": t}]) if conversational else (lambda t: t)
    rows = [{"prompt": prompt, "chosen": side("#### 5"), "rejected": side("so the answer is #### 5 and"),
             "meta": {"chosen_finish_reason": "stop", "rejected_finish_reason": reason}}
            for reason in ("length", "stop")]
    tokenized, _ = tokenize_pairs(datasets.Dataset.from_list(rows), tiny_tokenizer)
    cut, finished = tokenized[0], tokenized[1]
    assert cut["chosen_ids"][-1] == eos and finished["rejected_ids"][-1] == eos
    assert cut["rejected_ids"][-1] != eos and eos not in cut["rejected_ids"]
    assert cut["rejected_ids"] == finished["rejected_ids"][:-1]  # the same text, without the EOS
    offline, _ = tokenize_pairs(datasets.Dataset.from_list([{k: v for k, v in rows[0].items() if k != "meta"}]),
                                tiny_tokenizer)
    assert offline[0]["rejected_ids"][-1] == eos  # offline pairs keep today's rule


def test_the_loop_never_trains_a_truncated_rollout_with_eos(tmp_path, tiny_model_dir, monkeypatch):
    """Through the rounds loop (kimi, correct_short_vs_incorrect): the truncated rollout is rejected, and the
    tokens trained for it are its own, with no EOS; the finished chosen answer keeps its EOS."""
    from prefopt.online import rounds

    seen = []

    def recording(*args, **kwargs):
        out = tokenize_pairs(*args, **kwargs)
        seen.append(out[0])
        return out

    monkeypatch.setattr(rounds, "tokenize_pairs", recording)
    group = [Planned(11, True), Planned(31, True), Planned(21, False), Planned(MAX_NEW_TOKENS, True, finished=False)]
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, lambda r, pid, k: group[k], rounds=1,
                     overrides={"reward": {"name": "kimi"}, "pairs": {"strategy": "correct_short_vs_incorrect"}})
    truncated = [s for s in run.scored(1) if s.finish_reason == "length"]
    assert truncated and all(not s.correct and s.verify_status == "truncated" for s in truncated)
    assert {p["meta"]["rejected_index"] for p in run.pairs(1)} == {3}
    eos = run_tokenizer_eos(tiny_model_dir)
    (dataset,) = seen
    for row in dataset:
        assert row["meta"]["rejected_finish_reason"] == "length"
        assert row["chosen_ids"][-1] == eos and eos not in row["rejected_ids"]
        scored = next(s for s in run.scored(1) if (s.prompt_id, s.sample_index) == (row["meta"]["prompt_id"], 3))
        assert row["rejected_ids"] == scored.completion_ids  # exactly what was generated


def test_verify_policy_credits_truncated_answers_in_the_loop(tmp_path, tiny_model_dir, monkeypatch):
    group = [Planned(11, True), Planned(21, False), Planned(31, False), Planned(MAX_NEW_TOKENS, True, finished=False)]
    run = run_rounds(tmp_path, tiny_model_dir, monkeypatch, lambda r, pid, k: group[k], rounds=1,
                     overrides={"verifier": {"truncated": "verify"}})
    assert all(s.correct and s.verify_status == "ok" for s in run.scored(1) if s.finish_reason == "length")


def run_tokenizer_eos(model_dir: str) -> int:
    from prefopt.models import load_tokenizer

    return load_tokenizer(model_dir).eos_token_id

