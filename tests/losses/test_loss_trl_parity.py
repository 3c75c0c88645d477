"""Parity with TRL 1.16 on identical inputs: TRL's own trainer code computes the loss on a real batch.

``DPOTrainer.compute_loss`` (every ``loss_type``, ``ld_alpha``, the f-divergences and loss lists
with ``loss_weights``), ``trl.experimental.cpo.CPOTrainer.compute_loss`` (``simpo``, ``sigmoid``
with ``cpo_alpha``, ``alphapo``) and ``trl.experimental.orpo.ORPOTrainer.compute_loss`` run on a
tiny Llama (and a second one as the reference). Our losses see the same per-token log-probs:

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
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

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
        all_logps = torch.log_softmax(logits[:, :-1], dim=-1)
        token_logps = all_logps.gather(-1, kwargs["input_ids"][:, 1:, None])
        outputs.log_probs = token_logps.squeeze(-1).masked_fill(labels[:, 1:] == -100, 0.0)
        outputs.log_sum_sq_probs = torch.logsumexp(2 * all_logps, dim=-1)  # WPO: log sum_v p(v)^2
        seen[key] = outputs.log_probs
        seen[f"{key}_log_sum_sq"] = outputs.log_sum_sq_probs
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


def run_dpo_trainer(tmp_path, tokenizer, models, pairs=PAIRS, **config):
    policy, reference = models
    args = DPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_length=None, **config)
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_dict(pairs),
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs["prompt"]))])
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
    sum_sq_chosen, sum_sq_rejected, _, _ = split_pairs(left_justify(seen["policy_log_sum_sq"], shifted_mask)[0], mask)
    pair = PairLogps(
        chosen, rejected, chosen_mask, rejected_mask, ref_chosen, ref_rejected,
        chosen_log_sum_sq=sum_sq_chosen, rejected_log_sum_sq=sum_sq_rejected,
    )
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
        ({"loss_type": ["robust"], "beta": 0.1, "label_smoothing": 0.1}, "robust", {"label_smoothing": 0.1}, True),
        ({"loss_type": ["robust"], "beta": 0.5, "label_smoothing": 0.3}, "robust", {"beta": 0.5, "label_smoothing": 0.3}, True),
        ({"loss_type": ["hinge"], "beta": 0.1}, "hinge", {"beta": 0.1}, True),
        ({"loss_type": ["exo_pair"], "beta": 0.1, "label_smoothing": 1e-3}, "exo_pair", {}, True),
        ({"loss_type": ["exo_pair"], "beta": 0.5, "label_smoothing": 0.2}, "exo_pair", {"beta": 0.5, "label_smoothing": 0.2}, True),
        ({"loss_type": ["bco_pair"], "beta": 0.1}, "bco_pair", {"beta": 0.1}, True),
        ({"loss_type": ["sppo_hard"], "beta": 0.1}, "sppo_hard", {"beta": 0.1}, True),
        ({"loss_type": ["aot"], "beta": 0.1}, "aot", {}, True),
        ({"loss_type": ["aot"], "beta": 0.5, "label_smoothing": 0.1}, "aot", {"beta": 0.5, "label_smoothing": 0.1}, True),
        ({"loss_type": ["aot_unpaired"], "beta": 0.5, "label_smoothing": 0.1}, "aot_unpaired", {"beta": 0.5, "label_smoothing": 0.1}, True),
        ({"loss_type": ["apo_zero"], "beta": 0.1}, "apo_zero", {"beta": 0.1}, True),
        ({"loss_type": ["apo_down"], "beta": 0.1}, "apo_down", {"beta": 0.1}, True),
        ({"loss_type": ["discopop"], "beta": 0.1}, "discopop", {"beta": 0.1}, True),
        ({"loss_type": ["discopop"], "beta": 0.5, "discopop_tau": 0.5}, "discopop", {"beta": 0.5, "discopop_tau": 0.5}, True),
        ({"loss_type": ["sigmoid_norm"], "beta": 0.5}, "sigmoid_norm", {"beta": 0.5}, False),
        ({"loss_type": ["sigmoid"], "f_divergence_type": "forward_kl"}, "dpo", {"f_divergence": "forward_kl"}, False),
        ({"loss_type": ["sigmoid"], "f_divergence_type": "js_divergence"}, "dpo", {"f_divergence": "js_divergence"}, False),
        ({"loss_type": ["hinge"], "f_divergence_type": "js_divergence"}, "hinge", {"f_divergence": "js_divergence"}, False),
        ({"loss_type": ["ipo"], "f_divergence_type": "forward_kl"}, "ipo", {"f_divergence": "forward_kl"}, False),
        (
            {"loss_type": ["exo_pair"], "label_smoothing": 0.1, "f_divergence_type": "js_divergence"},
            "exo_pair",
            {"label_smoothing": 0.1, "f_divergence": "js_divergence"},
            False,
        ),
        (
            {"loss_type": ["robust"], "label_smoothing": 0.1, "f_divergence_type": "forward_kl"},
            "robust",
            {"label_smoothing": 0.1, "f_divergence": "forward_kl"},
            False,
        ),
        ({"loss_type": ["discopop"], "f_divergence_type": "js_divergence"}, "discopop", {"f_divergence": "js_divergence"}, False),
        (
            {"loss_type": ["sigmoid_norm"], "beta": 0.5, "f_divergence_type": "forward_kl"},
            "sigmoid_norm",
            {"beta": 0.5, "f_divergence": "forward_kl"},
            False,
        ),
        (
            {"loss_type": ["sigmoid", "hinge"], "loss_weights": [0.7, 0.3]},
            "mix",
            {"terms": [{"name": "dpo", "weight": 0.7}, {"name": "hinge", "weight": 0.3}]},
            True,
        ),
        # WPO weighting (TRL use_weighting) of a loss and of a loss list
        ({"loss_type": ["sigmoid"], "use_weighting": True}, "wpo", {"base": {"name": "dpo"}}, True),
        ({"loss_type": ["ipo"], "beta": 0.5, "use_weighting": True}, "wpo", {"base": {"name": "ipo", "beta": 0.5}}, False),
        (
            {"loss_type": ["sigmoid", "bco_pair"], "loss_weights": [0.8, 0.2], "use_weighting": True},
            "wpo",
            {"base": {"name": "mix", "terms": [{"name": "dpo", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}]}},
            True,
        ),
    ],
)
def test_matches_trl_dpo_trainer(tmp_path, tiny_tokenizer, models, trl_config, name, hparams, same_metrics):
    """Loss (and, where both report the same quantity, TRL's reward/logp metrics) agree to 1e-6.

    IPO's and sigmoid_norm's rewards differ by design: TRL logs summed log-ratios, we log the
    per-token ones the loss compares; under an f-divergence we log ``beta * f'(exp(rho))``.
    """
    trl_loss, trl_metrics, pair = run_dpo_trainer(tmp_path, tiny_tokenizer, models, **trl_config)
    out = get_loss(name, **hparams)(pair)
    assert out.loss.mean().item() == pytest.approx(trl_loss, abs=1e-6)
    assert trl_loss != pytest.approx(0.0, abs=1e-3)
    if same_metrics:
        assert_same_metrics(out.metrics, trl_metrics)
    if name == "wpo":  # the weights matter: the unweighted base loss does not match
        base = dict(hparams["base"])
        assert abs(get_loss(base.pop("name"), **base)(pair).loss.mean().item() - trl_loss) > 1e-4


@pytest.mark.parametrize(
    ("trl_config", "terms"),
    [
        # TRL's sft term alone
        ({"loss_type": ["sft"]}, [{"name": "sft"}]),
        # RPO: DPO + NLL on the chosen response (TRL's rpo_alpha, here as a loss list)
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}, [{"name": "dpo"}, {"name": "sft", "weight": 0.5}]),
        # MPO (arXiv 2411.10442), TRL's documented weights
        (
            {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},
            [{"name": "dpo", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}, {"name": "sft", "weight": 1.0}],
        ),
    ],
)
def test_loss_lists_with_sft_match_trl(tmp_path, tiny_tokenizer, models, trl_config, terms):
    """TRL averages the sft NLL over the batch's chosen tokens, we per pair: equal chosen lengths make them agree."""
    trl_loss, trl_metrics, pair = run_dpo_trainer(tmp_path, tiny_tokenizer, models, pairs=EQUAL_CHOSEN, **trl_config)
    assert pair.chosen_mask.sum(-1).unique().numel() == 1
    loss_fn = get_loss(terms[0]["name"]) if len(terms) == 1 else get_loss("mix", terms=terms)
    out = loss_fn(pair)
    assert out.loss.mean().item() == pytest.approx(trl_loss, abs=1e-6)
    if len(terms) > 1:
        assert_same_metrics(out.metrics, trl_metrics)


def test_alpha_divergence_matches_trl_in_float32(tmp_path, tiny_tokenizer):
    """TRL's alpha-divergence clamp has no float64 entry, so this case runs the models in float32 (1e-5)."""
    for f_alpha in (0.5, 0.2):
        models32 = make_tiny_model(tiny_tokenizer, seed=0), make_tiny_model(tiny_tokenizer, seed=1)
        trl_loss, _, pair = run_dpo_trainer(
            tmp_path, tiny_tokenizer, models32, loss_type=["sigmoid"], beta=0.5,
            f_divergence_type="alpha_divergence", f_alpha_divergence_coef=f_alpha,
        )
        assert pair.chosen.dtype == torch.float32
        out = get_loss("dpo", beta=0.5, f_divergence="alpha_divergence", f_alpha=f_alpha)(pair)
        assert out.loss.mean().item() == pytest.approx(trl_loss, abs=1e-5)
        assert out.loss.mean().item() != pytest.approx(get_loss("dpo", beta=0.5)(pair).loss.mean().item(), abs=1e-4)


def test_ld_on_reference_false_differs_from_trl(tmp_path, tiny_tokenizer, models):
    """TRL >= 0.29 desensitizes the reference too; the policy-only variant must not match it."""
    trl_loss, _, pair = run_dpo_trainer(
        tmp_path, tiny_tokenizer, models, loss_type=["sigmoid"], beta=0.5, ld_alpha=0.5
    )
    policy_only = get_loss("ld_dpo", beta=0.5, ld_alpha=0.5, ld_on_reference=False)(pair)
    assert abs(policy_only.loss.mean().item() - trl_loss) > 1e-4


def cpo_family_pair(trainer, policy, batch):
    """Naive float64 log-probs of the CPO/ORPO trainer's own concatenated batch, as ``PairLogps``."""
    pad = getattr(trainer, "padding_value", None)  # ORPOTrainer's name
    concatenated = trainer.concatenated_inputs(batch, padding_value=trainer.pad_token_id if pad is None else pad)
    logps, mask = naive_logps(
        policy,
        concatenated["concatenated_input_ids"],
        concatenated["concatenated_attention_mask"],
        concatenated["concatenated_labels"] != -100,
    )
    return PairLogps(*split_pairs(logps, mask))


def run_cpo_trainer(tmp_path, tokenizer, policy, pairs, **config):
    args = CPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, remove_unused_columns=False, **config)
    trainer = CPOTrainer(model=policy, args=args, train_dataset=Dataset.from_dict(pairs), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs["prompt"]))])
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()
    trl_metrics = {k: v[-1] for k, v in trainer._stored_metrics["train"].items()}
    return trl_loss, trl_metrics, cpo_family_pair(trainer, policy, batch)


@pytest.mark.parametrize(
    ("pairs", "trl_config", "name", "hparams"),
    [
        # SimPO == CPOTrainer(loss_type="simpo", simpo_gamma=gamma, cpo_alpha=sft_weight); TRL takes gamma, we gamma/beta
        (PAIRS, {"loss_type": "simpo", "beta": 2.0, "simpo_gamma": 1.0, "cpo_alpha": 0.0}, "simpo", {"beta": 2.0, "gamma_beta_ratio": 0.5}),
        (
            PAIRS,
            {"loss_type": "simpo", "beta": 2.5, "simpo_gamma": 1.375, "cpo_alpha": 0.0, "label_smoothing": 0.1},
            "simpo",
            {"beta": 2.5, "gamma_beta_ratio": 0.55, "label_smoothing": 0.1},
        ),
        (EQUAL_CHOSEN, {"loss_type": "simpo", "beta": 2.0, "simpo_gamma": 1.0, "cpo_alpha": 1.0}, "simpo", {"beta": 2.0, "gamma_beta_ratio": 0.5, "sft_weight": 1.0}),
        # CPO (sigmoid on summed log-probs) with its behaviour-cloning weight cpo_alpha
        (PAIRS, {"loss_type": "sigmoid", "beta": 0.1, "cpo_alpha": 0.0}, "cpo", {"beta": 0.1, "bc_weight": 0.0}),
        (EQUAL_CHOSEN, {"loss_type": "sigmoid", "beta": 0.1, "cpo_alpha": 1.0}, "cpo", {"beta": 0.1, "bc_weight": 1.0}),
        (
            EQUAL_CHOSEN,
            {"loss_type": "sigmoid", "beta": 0.3, "cpo_alpha": 0.5, "label_smoothing": 0.1},
            "cpo",
            {"beta": 0.3, "bc_weight": 0.5, "label_smoothing": 0.1},
        ),
        # AlphaPO: TRL's loss_type="alphapo" is simpo with cpo_alpha=0 and the alpha reward shape
        (PAIRS, {"loss_type": "alphapo", "beta": 2.0, "simpo_gamma": 1.0, "alpha": 0.25}, "alphapo", {"beta": 2.0, "gamma_beta_ratio": 0.5, "alpha": 0.25}),
        (PAIRS, {"loss_type": "alphapo", "beta": 2.5, "simpo_gamma": 0.5, "alpha": -0.5, "label_smoothing": 0.1}, "alphapo", {"beta": 2.5, "gamma_beta_ratio": 0.2, "alpha": -0.5, "label_smoothing": 0.1}),
    ],
)
def test_matches_trl_cpo_trainer(tmp_path, tiny_tokenizer, models, pairs, trl_config, name, hparams):
    """Loss and TRL's reward/logp metrics to 1e-6. TRL averages the NLL over the batch's chosen tokens, we
    per pair (see prefopt.losses.simpo / cpo); the cases with an NLL term use equal chosen lengths."""
    trl_loss, trl_metrics, pair = run_cpo_trainer(tmp_path, tiny_tokenizer, models[0], pairs, **trl_config)
    if pairs is EQUAL_CHOSEN:
        assert pair.chosen_mask.sum(-1).unique().numel() == 1
    out = get_loss(name, **hparams)(pair)
    assert out.loss.mean().item() == pytest.approx(trl_loss, abs=1e-6)
    assert_same_metrics(out.metrics, trl_metrics)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_orpo_matches_trl_orpo_trainer(tmp_path, tiny_tokenizer, models, beta):
    """ORPO's odds-ratio term, rewards and log-odds metrics equal TRL's ``ORPOTrainer`` to 1e-6.

    TRL's NLL term runs over every attended token of the chosen sequence, prompt included
    (``labels = input_ids`` where attended), while the paper's ``L_SFT`` and ours cover the
    response only; so the comparison swaps TRL's logged ``nll_loss`` for our response NLL.
    """
    policy, _ = models
    args = ORPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, remove_unused_columns=False, beta=beta)
    trainer = ORPOTrainer(model=policy, args=args, train_dataset=Dataset.from_dict(PAIRS), processing_class=tiny_tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS["prompt"]))])
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()
    trl_metrics = {k: v[-1] for k, v in trainer._stored_metrics["train"].items()}
    pair = cpo_family_pair(trainer, policy, batch)
    out = get_loss("orpo", beta=beta)(pair)
    response_nll = -(pair.chosen * pair.chosen_mask).sum(-1) / pair.chosen_mask.sum(-1)
    assert out.loss.mean().item() == pytest.approx(trl_loss - float(trl_metrics["nll_loss"]) + response_nll.mean().item(), abs=1e-6)
    assert_same_metrics(out.metrics, trl_metrics)
    assert out.metrics["orpo/log_odds_ratio"] == pytest.approx(float(trl_metrics["log_odds_ratio"]), abs=1e-6)
    assert out.metrics["orpo/log_odds_chosen"] == pytest.approx(float(trl_metrics["log_odds_chosen"]), abs=1e-6)
