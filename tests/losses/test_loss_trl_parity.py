"""Parity with TRL 1.16 on identical inputs: TRL's own trainer code computes the loss on a real batch.

``DPOTrainer.compute_loss`` (``loss_type`` sigmoid / ipo / nca_pair, with and without ``ld_alpha``)
and ``trl.experimental.cpo.CPOTrainer.compute_loss`` (``loss_type="simpo"``) run on a tiny Llama
(and a second one as the reference). Our losses see the same per-token log-probs:

* DPO: float64 log-probs computed naively from the model's logits and handed to TRL's
  ``_compute_loss`` in place of its fused LM head's output (that kernel works in float32 by
  design, which would limit agreement to ~1e-5 on ~30-nat sums); ours gets the same tensors,
  completion-aligned with TRL's own ``completion_mask``;
* CPO: computed naively from the same float64 model's logits on TRL's concatenated batch.

So the test covers alignment, masking, reductions and the formula. TRL returns the batch mean,
so we compare with ``LossOutput.loss.mean()``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import make_tiny_model
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from prefopt.losses import PairLogps, get_loss

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from trl.experimental.cpo import CPOConfig, CPOTrainer

PAIRS = {
    "prompt": ["2+2=", "Say hi to me", "Capital of France?", "Name a colour"],
    "chosen": ["4", "hello there friend", "Paris", "a deep shade of blue"],
    "rejected": ["five, I think", "no", "It is Lyon, obviously", "7"],
}
# Equal chosen lengths: TRL CPO averages the SFT term over all chosen tokens of the batch, we per
# pair (see prefopt.losses.simpo); the two coincide only then.
EQUAL_CHOSEN = {
    "prompt": ["2+2=", "Say hi", "Capital of France?"],
    "chosen": ["four!", "hello", "Paris"],
    "rejected": ["five, I think", "no", "It is Lyon, obviously"],
}


def naive_logps(model, input_ids, attention_mask, completion_mask):
    """log_softmax(logits)[t] gathered at token t+1, masked to completion tokens, left-justified."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return left_justify(token_logps, completion_mask[:, 1:].bool())


def injecting_forward(fused_forward, seen, key):
    """Wrap TRL's fused forward so its ``log_probs`` are the naive float64 ones (recorded in ``seen``)."""

    def forward(*args, labels, **kwargs):
        outputs = fused_forward(*args, labels=labels, **kwargs)
        logits = fused_forward(input_ids=kwargs["input_ids"], attention_mask=kwargs["attention_mask"]).logits
        token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, kwargs["input_ids"][:, 1:, None])
        outputs.log_probs = token_logps.squeeze(-1).masked_fill(labels[:, 1:] == -100, 0.0)
        seen[key] = outputs.log_probs
        return outputs

    return forward


def left_justify(token_logps, mask):
    """Shifted per-position log-probs ``[N, T-1]`` -> completion-aligned ``(logps, mask)``."""
    rows = [token_logps[i][mask[i]] for i in range(len(mask))]
    width = max(len(r) for r in rows)
    aligned = torch.zeros(len(rows), width, dtype=token_logps.dtype)
    aligned_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        aligned[i, : len(row)] = row
        aligned_mask[i, : len(row)] = True
    return aligned, aligned_mask


def split_pairs(logps, mask):
    """Rows [chosen; rejected] -> (chosen, rejected, chosen_mask, rejected_mask), each trimmed to its width."""
    half = len(logps) // 2

    def trim(x, m):
        width = int(m.sum(-1).max())
        return x[:, :width], m[:, :width]

    chosen, chosen_mask = trim(logps[:half], mask[:half])
    rejected, rejected_mask = trim(logps[half:], mask[half:])
    return chosen, rejected, chosen_mask, rejected_mask


def assert_same_metrics(ours, trl_metrics):
    """TRL's reward and log-prob metrics equal ours where both report the same quantity."""
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert ours[key] == pytest.approx(trl_metrics[key], abs=1e-6), key


@pytest.fixture()
def models(tiny_tokenizer):
    """Fresh per test: the trainers patch ``forward`` on the model instances they are given."""
    return make_tiny_model(tiny_tokenizer, seed=0).double(), make_tiny_model(tiny_tokenizer, seed=1).double()


def run_dpo_trainer(tmp_path, tokenizer, models, **config):
    policy, reference = models
    args = DPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_length=None, **config)
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_dict(PAIRS),
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS["prompt"]))])
    seen = {}
    for key, model in (("policy", trainer.model), ("reference", trainer.ref_model)):
        model.forward = injecting_forward(model.forward, seen, key)
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    shifted_mask = batch["completion_mask"][:, 1:].bool()
    policy_logps, mask = left_justify(seen["policy"], shifted_mask)
    ref_logps, _ = left_justify(seen["reference"], shifted_mask)
    chosen, rejected, chosen_mask, rejected_mask = split_pairs(policy_logps, mask)
    ref_chosen, ref_rejected, _, _ = split_pairs(ref_logps, mask)
    pair = PairLogps(chosen, rejected, chosen_mask, rejected_mask, ref_chosen, ref_rejected)
    return trl_loss.item(), trl_metrics, pair


@pytest.mark.parametrize(
    ("trl_config", "name", "hparams", "same_metrics"),
    [
        ({"loss_type": ["sigmoid"], "beta": 0.1}, "dpo", {"beta": 0.1}, True),
        ({"loss_type": ["sigmoid"], "beta": 0.7}, "dpo", {"beta": 0.7}, True),
        ({"loss_type": ["ipo"], "beta": 0.1}, "ipo", {"beta": 0.1, "normalize": True}, False),
        ({"loss_type": ["nca_pair"], "beta": 0.3}, "nca", {"beta": 0.3}, True),
        (
            {"loss_type": ["sigmoid"], "beta": 0.5, "ld_alpha": 0.5},
            "ld_dpo",
            {"beta": 0.5, "ld_alpha": 0.5},
            True,
        ),
        (
            {"loss_type": ["sigmoid"], "beta": 0.5, "ld_alpha": 0.2},
            "ld_dpo",
            {"beta": 0.5, "ld_alpha": 0.2},
            True,
        ),
    ],
)
def test_matches_trl_dpo_trainer(tmp_path, tiny_tokenizer, models, trl_config, name, hparams, same_metrics):
    """Loss (and, where both report the same quantity, TRL's reward/logp metrics) agree to 1e-6.

    IPO's rewards differ by design: TRL logs summed log-ratios, we log the per-token ones IPO uses.
    """
    trl_loss, trl_metrics, pair = run_dpo_trainer(tmp_path, tiny_tokenizer, models, **trl_config)
    out = get_loss(name, **hparams)(pair)
    assert out.loss.mean().item() == pytest.approx(trl_loss, abs=1e-6)
    assert trl_loss != pytest.approx(0.0, abs=1e-3)
    if same_metrics:
        assert_same_metrics(out.metrics, trl_metrics)


def test_ld_on_reference_false_differs_from_trl(tmp_path, tiny_tokenizer, models):
    """TRL >= 0.29 desensitizes the reference too; the policy-only variant must not match it."""
    trl_loss, _, pair = run_dpo_trainer(
        tmp_path, tiny_tokenizer, models, loss_type=["sigmoid"], beta=0.5, ld_alpha=0.5
    )
    policy_only = get_loss("ld_dpo", beta=0.5, ld_alpha=0.5, ld_on_reference=False)(pair)
    assert abs(policy_only.loss.mean().item() - trl_loss) > 1e-4


@pytest.mark.parametrize(
    ("pairs", "beta", "gamma", "sft_weight", "label_smoothing"),
    [(PAIRS, 2.0, 1.0, 0.0, 0.0), (PAIRS, 2.5, 1.375, 0.0, 0.1), (EQUAL_CHOSEN, 2.0, 1.0, 1.0, 0.0)],
)
def test_simpo_matches_trl_cpo_trainer(
    tmp_path, tiny_tokenizer, models, pairs, beta, gamma, sft_weight, label_smoothing
):
    """SimPO == CPOTrainer(loss_type="simpo", simpo_gamma=gamma, cpo_alpha=sft_weight); TRL takes gamma, we gamma/beta."""
    policy, _ = models
    args = CPOConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        loss_type="simpo",
        beta=beta,
        simpo_gamma=gamma,
        cpo_alpha=sft_weight,
        label_smoothing=label_smoothing,
    )
    trainer = CPOTrainer(
        model=policy, args=args, train_dataset=Dataset.from_dict(pairs), processing_class=tiny_tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs["prompt"]))])
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()
    trl_metrics = {k: v[-1] for k, v in trainer._stored_metrics["train"].items()}

    concatenated = trainer.concatenated_inputs(batch, padding_value=trainer.pad_token_id)
    labels = concatenated["concatenated_labels"]
    logps, mask = naive_logps(
        policy,
        concatenated["concatenated_input_ids"],
        concatenated["concatenated_attention_mask"],
        labels != -100,
    )
    pair = PairLogps(*split_pairs(logps, mask))
    if sft_weight:
        assert pair.chosen_mask.sum(-1).unique().numel() == 1
    out = get_loss(
        "simpo",
        beta=beta,
        gamma_beta_ratio=gamma / beta,
        sft_weight=sft_weight,
        label_smoothing=label_smoothing,
    )(pair)
    assert out.loss.mean().item() == pytest.approx(trl_loss, abs=1e-6)
    assert_same_metrics(out.metrics, trl_metrics)
