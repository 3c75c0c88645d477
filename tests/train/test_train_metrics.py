"""Every registered loss, trained a few steps on the tiny model, logs metrics equal to values computed
independently from the same batch.

Before each step a callback recomputes, from the current policy and the initial (reference) model,
each pair's per-token log-probs by a plain forward per pair (no padding, no prefopt.logps) and
derives what docs/trainer.md says each metric is: ``logps/*`` the policy sequence score the loss
compares (sum, per-token mean or LD-aggregated), ``rewards/*`` the loss's implicit reward. The
logged values must match them (and the logged loss the registered loss on those log-probs), so a
metric computed twice, or from a different quantity than the loss uses, fails here.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_tiny_model
from train_helpers import LogRecorder, pairs_dataset, quiet_config
from transformers import TrainerCallback

from prefopt.data import load_pairs, tokenize_pairs
from prefopt.losses import PairLogps, available_losses, get_loss
from prefopt.train import PreferenceTrainer

N_PAIRS = 4
MPO = [{"name": "dpo", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}, {"name": "sft", "weight": 1.0}]


def total(p, side):
    return p[side].sum()


def mean(p, side):
    return p[side].mean()


def rho(p, side):
    return p[side].sum() - p[f"ref_{side}"].sum()


def ld(p, side, ref=False, alpha=0.5):
    tokens = p[f"ref_{side}" if ref else side]
    shared = min(len(p["w"]), len(p["l"]))
    return tokens[:shared].sum() + alpha * tokens[shared:].sum()


def summed(beta):
    """DPO-style: logps are sums, rewards beta * (summed log-ratio)."""
    return total, lambda p, s: beta * rho(p, s)


def alpha_reward(p, side, alpha=0.25):
    return (1 - torch.exp(p[side].mean()) ** (-alpha)) / alpha


# loss -> (hyperparameters, logps/* per pair and side, rewards/* per pair and side)
EXPECTED = {
    "dpo": ({"beta": 0.1}, *summed(0.1)),
    "robust": ({"beta": 0.2, "label_smoothing": 0.1}, *summed(0.2)),
    "hinge": ({"beta": 0.1}, *summed(0.1)),
    "exo_pair": ({"beta": 0.1}, *summed(0.1)),
    "discopop": ({"beta": 0.1}, *summed(0.1)),
    "bco_pair": ({"beta": 0.1}, *summed(0.1)),
    "sppo_hard": ({"beta": 0.1}, *summed(0.1)),
    "apo_zero": ({"beta": 0.1}, *summed(0.1)),
    "apo_down": ({"beta": 0.1}, *summed(0.1)),
    "aot": ({"beta": 0.1}, *summed(0.1)),
    "aot_unpaired": ({"beta": 0.1}, *summed(0.1)),
    "nca": ({"beta": 0.3}, *summed(0.3)),
    "r_dpo": ({"beta": 0.1, "alpha": 0.05}, *summed(0.1)),
    "treg": ({"beta": 0.1, "alpha": 0.25}, *summed(0.1)),
    "mix": ({"terms": MPO}, *summed(0.1)),  # the first term's (dpo) metrics
    "wpo": ({"base": {"name": "ipo", "beta": 0.1}}, mean, lambda p, s: 0.1 * rho(p, s) / len(p[s])),  # the base's
    "ipo": ({"beta": 0.1}, mean, lambda p, s: 0.1 * rho(p, s) / len(p[s])),
    "sigmoid_norm": ({"beta": 0.5}, mean, lambda p, s: 0.5 * rho(p, s) / len(p[s])),
    "ld_dpo": ({"beta": 0.1, "ld_alpha": 0.5}, ld, lambda p, s: 0.1 * (ld(p, s) - ld(p, s, ref=True))),
    "simpo": ({"beta": 2.0}, mean, lambda p, s: 2.0 * mean(p, s)),
    "treg_simpo": ({"beta": 2.0}, mean, lambda p, s: 2.0 * mean(p, s)),
    "sft": ({}, mean, mean),
    "cpo": ({"beta": 0.1, "bc_weight": 1.0}, total, lambda p, s: 0.1 * total(p, s)),
    "alphapo": ({"beta": 2.0, "alpha": 0.25}, mean, lambda p, s: 2.0 * alpha_reward(p, s)),
    "orpo": ({"beta": 0.1}, mean, lambda p, s: 0.1 * mean(p, s)),
}


def test_every_registered_loss_has_an_expectation():
    assert sorted(EXPECTED) == available_losses()


def completion_logps(model, prompt_ids, completion_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(y_t | x, y_<t) and log sum_v pi(v | x, y_<t)^2 per completion token, one unpadded forward."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()
    all_logps = torch.log_softmax(logits, -1)
    token_logps = all_logps.gather(-1, ids[0, 1:, None]).squeeze(-1)
    n = len(completion_ids)
    return token_logps[-n:], torch.logsumexp(2 * all_logps, -1)[-n:]


class ExpectedMetrics(TrainerCallback):
    """Before each step: the metrics the step should log, from the current policy and the reference."""

    def __init__(self, rows, reference, name, hparams, logps_of, reward_of):
        self.rows, self.reference = rows, reference
        self.loss = get_loss(name, **hparams)
        self.logps_of, self.reward_of = logps_of, reward_of
        self.expected: list[dict[str, float]] = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        pairs = []
        for row in self.rows:
            pair = {}
            pair["w"], pair["sw"] = completion_logps(model, row["prompt_ids"], row["chosen_ids"])
            pair["l"], pair["sl"] = completion_logps(model, row["prompt_ids"], row["rejected_ids"])
            pair["ref_w"], _ = completion_logps(self.reference, row["prompt_ids"], row["chosen_ids"])
            pair["ref_l"], _ = completion_logps(self.reference, row["prompt_ids"], row["rejected_ids"])
            pair["rw"], pair["rl"] = torch.tensor(row["chosen_token_rewards"]), torch.tensor(row["rejected_token_rewards"])
            pairs.append(pair)
        chosen = torch.stack([self.reward_of(p, "w") for p in pairs])
        rejected = torch.stack([self.reward_of(p, "l") for p in pairs])
        self.expected.append({
            "rewards/chosen": chosen.mean().item(),
            "rewards/rejected": rejected.mean().item(),
            "rewards/margins": (chosen - rejected).mean().item(),
            "rewards/accuracies": (chosen > rejected).double().mean().item(),
            "logps/chosen": torch.stack([self.logps_of(p, "w") for p in pairs]).mean().item(),
            "logps/rejected": torch.stack([self.logps_of(p, "l") for p in pairs]).mean().item(),
            "length/chosen": sum(len(p["w"]) for p in pairs) / len(pairs),
            "length/rejected": sum(len(p["l"]) for p in pairs) / len(pairs),
            "loss": self.loss(as_pair_logps(pairs)).loss.mean().item(),
        })


def as_pair_logps(pairs) -> PairLogps:
    """The per-pair rows, right-padded into a ``PairLogps`` (for the expected loss value only)."""
    def pad(key):
        rows = [p[key] for p in pairs]
        width = max(len(r) for r in rows)
        values = torch.zeros(len(rows), width, dtype=torch.float64)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):
            values[i, : len(r)], mask[i, : len(r)] = r, True
        return values, mask

    (w, wm), (l, lm) = pad("w"), pad("l")
    return PairLogps(
        w, l, wm, lm, pad("ref_w")[0], pad("ref_l")[0], pad("rw")[0], pad("rl")[0],
        chosen_log_sum_sq=pad("sw")[0], rejected_log_sum_sq=pad("sl")[0],
    )


def tokenized_pairs(tokenizer):
    """Tokenized tiny pairs with T-REG token rewards (a fixed pattern per token)."""
    data, _ = tokenize_pairs(load_pairs(pairs_dataset(N_PAIRS)), tokenizer, max_length=256, max_prompt_length=128)
    pattern = lambda ids: [0.2 * ((j % 3) - 1) for j in range(len(ids))]
    data = data.add_column("chosen_token_rewards", [pattern(ids) for ids in data["chosen_ids"]])
    return data.add_column("rejected_token_rewards", [pattern(ids) for ids in data["rejected_ids"]])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_logged_metrics_equal_independent_values(name, tmp_path, tiny_tokenizer):
    hparams, logps_of, reward_of = EXPECTED[name]
    policy = make_tiny_model(tiny_tokenizer)
    data = tokenized_pairs(tiny_tokenizer)
    expected = ExpectedMetrics(list(data), copy.deepcopy(policy), name, hparams, logps_of, reward_of)
    recorder = LogRecorder()
    trainer = PreferenceTrainer(
        policy,
        quiet_config(tmp_path, max_steps=2, per_device_train_batch_size=N_PAIRS, learning_rate=5e-2, warmup_steps=0),
        loss=get_loss(name, **hparams),
        train_dataset=data,
        processing_class=tiny_tokenizer,
        callbacks=[expected, recorder],
    )
    trainer.train()
    logs = [log for log in recorder.logs if "rewards/chosen" in log]
    assert len(logs) == len(expected.expected) == 2
    assert logs[1]["logps/chosen"] != pytest.approx(logs[0]["logps/chosen"], abs=1e-4), "the policy moved"
    for step, (log, want) in enumerate(zip(logs, expected.expected), start=1):
        for key, value in want.items():
            assert log[key] == pytest.approx(value, rel=1e-4, abs=1e-5), f"{name} step {step}: {key}"
