"""The loss contract for every registered loss: weights, reference flags, errors, metrics, user losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_batches import random_batch

from prefopt.losses import LossOutput, PairLogps, available_losses, base, get_loss, register_loss
from prefopt.losses.aggregate import aggregate

BUILT_IN = [
    "alphapo", "aot", "aot_unpaired", "apo_down", "apo_zero", "bco_pair", "cpo", "discopop", "dpo",
    "exo_pair", "hinge", "ipo", "ld_dpo", "mix", "nca", "orpo", "r_dpo", "robust", "sft",
    "sigmoid_norm", "simpo", "sppo_hard", "treg", "treg_simpo", "wpo",
]  # fmt: skip
REFERENCE_FREE = {"alphapo", "cpo", "orpo", "sft", "simpo", "treg_simpo"}
# Losses that sort over the batch: their per-position losses belong to no pair, so no weights.
BATCH_COUPLED = {"aot", "aot_unpaired"}
MPO_TERMS = [{"name": "dpo", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}, {"name": "sft", "weight": 1.0}]
# The hyperparameters a loss needs to be called at all (everything else has a default).
REQUIRED = {"mix": {"terms": MPO_TERMS}, "wpo": {"base": {"name": "dpo"}}}
F_DIVERGENCE_LOSSES = {"dpo", "robust", "ipo", "sigmoid_norm", "hinge", "exo_pair", "discopop"}


def bound(name: str, **hparams):
    return get_loss(name, **{**REQUIRED.get(name, {}), **hparams})
METRICS = {
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "length/chosen",
    "length/rejected",
}


def without(batch: PairLogps, *names: str) -> PairLogps:
    fields = {k: v for k, v in vars(batch).items() if k not in names}
    return PairLogps(**fields)


def test_every_built_in_loss_is_registered_with_its_reference_flag():
    assert set(BUILT_IN) == set(available_losses())
    for name in BUILT_IN:
        assert bound(name).requires_reference is (name not in REFERENCE_FREE), name


@pytest.mark.parametrize("name", sorted(set(BUILT_IN) - BATCH_COUPLED))
def test_weights_scale_each_pair_loss(name):
    """loss(weights) == weights * loss(no weights), per pair, including the T-REG penalty."""
    batch = random_batch(3)
    weights = torch.tensor([0.0, 0.5, 1.0, 2.0, 1.5, 3.0], dtype=torch.float64)
    plain = bound(name)(batch)
    weighted = bound(name)(PairLogps(**{**vars(batch), "weights": weights}))
    torch.testing.assert_close(weighted.loss, plain.loss * weights)
    torch.testing.assert_close(weighted.chosen_rewards, plain.chosen_rewards)


@pytest.mark.parametrize("name", BUILT_IN)
def test_outputs_shapes_detached_rewards_and_metrics(name):
    batch = random_batch(4)
    out = bound(name)(batch)
    assert isinstance(out, LossOutput)
    assert out.loss.shape == out.chosen_rewards.shape == out.rejected_rewards.shape == (6,)
    assert (
        out.loss.requires_grad
        and not out.chosen_rewards.requires_grad
        and not out.rejected_rewards.requires_grad
    )
    assert METRICS <= set(out.metrics)
    assert all(isinstance(v, float) for v in out.metrics.values())
    assert out.metrics["length/chosen"] == pytest.approx(batch.chosen_mask.sum(-1).double().mean().item())
    accuracy = (out.chosen_rewards > out.rejected_rewards).double().mean().item()
    assert out.metrics["rewards/accuracies"] == pytest.approx(accuracy)


@pytest.mark.parametrize("name", sorted(set(BUILT_IN) - REFERENCE_FREE))
def test_reference_losses_reject_missing_reference(name):
    batch = without(random_batch(0), "ref_chosen", "ref_rejected")
    with pytest.raises(ValueError, match="ref_chosen/ref_rejected"):
        bound(name)(batch)


@pytest.mark.parametrize("name", sorted(REFERENCE_FREE))
def test_reference_free_losses_ignore_the_reference(name):
    batch = random_batch(0)
    with_ref = bound(name)(batch).loss
    torch.testing.assert_close(bound(name)(without(batch, "ref_chosen", "ref_rejected")).loss, with_ref)


@pytest.mark.parametrize("name", ["treg", "treg_simpo"])
@pytest.mark.parametrize("missing", ["chosen_token_rewards", "rejected_token_rewards"])
def test_treg_names_the_missing_token_rewards(name, missing):
    with pytest.raises(ValueError, match=rf"PairLogps\.{missing}.*prefopt annotate treg"):
        get_loss(name)(without(random_batch(0), missing))


@pytest.mark.parametrize("name", sorted(set(BUILT_IN) - {"mix", "wpo"}))
def test_unknown_hyperparameter_is_rejected_eagerly(name):
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) \['betta'\]"):
        get_loss(name, betta=0.1)


@pytest.mark.parametrize("name", sorted(set(BUILT_IN) - F_DIVERGENCE_LOSSES - {"mix", "wpo"}))
def test_f_divergence_is_rejected_where_trl_does_not_allow_it(name):
    """TRL: the f-DPO reparameterization's beta log Z(x) cancels only in a chosen-minus-rejected margin."""
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) \['f_divergence'\]") as err:
        get_loss(name, f_divergence="js_divergence")
    assert "apply only to losses on the chosen-minus-rejected margin: " + ", ".join(sorted(F_DIVERGENCE_LOSSES)) in str(err.value)


@pytest.mark.parametrize("name", sorted(F_DIVERGENCE_LOSSES))
@pytest.mark.parametrize("divergence", ["forward_kl", "js_divergence", "alpha_divergence"])
def test_f_divergence_changes_the_loss(name, divergence):
    batch = random_batch(6)
    plain = get_loss(name)(batch).loss
    assert not torch.allclose(get_loss(name, f_divergence=divergence)(batch).loss, plain)
    # alpha -> 1 is reverse KL exactly
    torch.testing.assert_close(get_loss(name, f_divergence="alpha_divergence", f_alpha=1.0)(batch).loss, plain)


@pytest.mark.parametrize("name", sorted(BATCH_COUPLED))
def test_batch_coupled_losses_reject_weights(name):
    batch = PairLogps(**{**vars(random_batch(0)), "weights": torch.ones(6, dtype=torch.float64)})
    with pytest.raises(ValueError, match="sorts over the batch.*weights"):
        get_loss(name)(batch)


def test_mix_is_the_weighted_sum_and_reports_the_first_terms_rewards():
    batch = random_batch(7)
    out = get_loss("mix", terms=MPO_TERMS)(batch)
    parts = {t["name"]: get_loss(t["name"])(batch) for t in MPO_TERMS}
    expected = 0.8 * parts["dpo"].loss + 0.2 * parts["bco_pair"].loss + 1.0 * parts["sft"].loss
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.chosen_rewards, parts["dpo"].chosen_rewards)
    assert out.metrics["rewards/margins"] == parts["dpo"].metrics["rewards/margins"]
    assert out.metrics["logps/chosen"] == parts["dpo"].metrics["logps/chosen"]
    for name, part in parts.items():
        assert out.metrics[f"loss/{name}"] == pytest.approx(part.loss.mean().item())
    ref_free = get_loss("mix", terms=[{"name": "simpo"}, {"name": "sft", "weight": 0.5}])
    assert not ref_free.requires_reference
    ref_free(without(batch, "ref_chosen", "ref_rejected"))
    treg = get_loss("mix", terms=[{"name": "treg", "alpha": 0.5}, {"name": "sft"}])(batch)
    assert "treg/weight" in treg.metrics, "a term's extra metrics are kept"


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ([], "non-empty list"),
        ("dpo", "non-empty list"),
        ([{"weight": 1.0}], r"terms\[0\] must be a mapping \{name: <loss>"),
        ([{"name": "dpo"}, {"name": "nope"}], r"terms\[1\]: unknown loss 'nope'"),
        ([{"name": "dpo", "betta": 0.1}], r"terms\[0\]: loss 'dpo' got unknown hyperparameter"),
        ([{"name": "dpo", "weight": 0}], r"terms\[0\].weight must be a finite number > 0"),
        ([{"name": "dpo", "weight": "high"}], r"terms\[0\].weight"),
        ([{"name": "dpo"}, {"name": "dpo"}], r"terms\[1\] repeats 'dpo'"),
        ([{"name": "mix", "terms": []}], r"terms\[0\] is itself a mix"),
        ([{"name": "dpo", "beta": -1.0}], "beta must be > 0"),
        ([{"name": "wpo", "base": {"name": "dpo"}}], r"terms\[0\] is wpo; weight the whole mix"),
    ],
)
def test_mix_rejects_bad_terms(terms, message):
    with pytest.raises(ValueError, match=message):
        get_loss("mix", terms=terms)(random_batch(0))


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("dpo", {"beta": 0.0}, "beta must be > 0"),
        ("dpo", {"label_smoothing": 0.5}, r"label_smoothing .* \[0, 0.5\)"),
        ("robust", {"label_smoothing": -0.1}, r"label_smoothing .* \[0, 0.5\)"),
        ("ipo", {"beta": -1.0}, "beta must be > 0"),
        ("ld_dpo", {"ld_alpha": 1.5}, r"ld_alpha must be in \[0, 1\]"),
        ("r_dpo", {"alpha": -0.1}, "alpha must be >= 0"),
        ("nca", {"beta": 0.0}, "beta must be > 0"),
        ("simpo", {"sft_weight": -1.0}, "sft_weight must be >= 0"),
        ("treg", {"reg_reduction": "max"}, "reg_reduction must be 'sum' or 'mean'"),
        ("treg_simpo", {"alpha": -0.5}, "alpha must be >= 0"),
        ("hinge", {"beta": 0.0}, "beta must be > 0"),
        ("exo_pair", {"label_smoothing": 0.0}, r"label_smoothing .* \(0, 0.5\)"),
        ("discopop", {"discopop_tau": 0.0}, "discopop_tau must be > 0"),
        ("dpo", {"f_divergence": "kl"}, "f_divergence must be one of reverse_kl"),
        ("ipo", {"f_divergence": "alpha_divergence", "f_alpha": 0.0}, "f_alpha must be > 0"),
        ("bco_pair", {"beta": -0.1}, "beta must be > 0"),
        ("sppo_hard", {"beta": 0.0}, "beta must be > 0"),
        ("apo_zero", {"beta": 0.0}, "beta must be > 0"),
        ("apo_down", {"beta": 0.0}, "beta must be > 0"),
        ("aot", {"label_smoothing": 0.5}, r"label_smoothing .* \[0, 0.5\)"),
        ("aot_unpaired", {"beta": 0.0}, "beta must be > 0"),
        ("sigmoid_norm", {"beta": 0.0}, "beta must be > 0"),
        ("cpo", {"bc_weight": -1.0}, "bc_weight must be >= 0"),
        ("alphapo", {"label_smoothing": 0.7}, r"label_smoothing .* \[0, 0.5\)"),
        ("orpo", {"beta": 0.0}, "beta must be > 0"),
    ],
)
def test_invalid_hyperparameter_values_fail_loudly(name, hparams, message):
    with pytest.raises(ValueError, match=message):
        get_loss(name, **hparams)(random_batch(0))


def equal_logratio_pair(chosen_len: int, rejected_len: int) -> PairLogps:
    """Chosen log-ratio +0.5 and rejected -0.5 (h = 1) whatever the lengths; only |y| differs."""

    def side(length: int, total: float) -> tuple[torch.Tensor, torch.Tensor]:
        policy = torch.full((1, length), -1.0, dtype=torch.float64)
        reference = policy.clone()
        reference[0, 0] -= total
        return policy.requires_grad_(True), reference

    chosen, ref_chosen = side(chosen_len, 0.5)
    rejected, ref_rejected = side(rejected_len, -0.5)
    ones = lambda x: torch.ones_like(x, dtype=torch.bool)
    return PairLogps(chosen, rejected, ones(chosen), ones(rejected), ref_chosen, ref_rejected)


def chosen_push(batch: PairLogps, **hparams: float) -> float:
    """Gradient weight on the chosen response: -dL/d(log pi(y_w)) = beta * sig(-(beta h + alpha dlen))."""
    loss = get_loss("r_dpo", **hparams)(batch).loss.sum()
    (grad,) = torch.autograd.grad(loss, batch.chosen)
    return -grad[0, 0].item()


def test_r_dpo_pushes_shorter_chosen_harder_and_longer_chosen_less():
    """R-DPO with alpha > 0: at equal log-ratios the pair whose chosen response is the shorter one
    gets a larger gradient toward the chosen response (and a larger loss) than plain DPO, the pair
    whose chosen is the longer one a smaller push; alpha = 0 is DPO for both. So training moves
    probability toward short chosen responses and stops rewarding length.
    """
    short_chosen, long_chosen = equal_logratio_pair(3, 12), equal_logratio_pair(12, 3)
    dpo_push = chosen_push(short_chosen, beta=0.1, alpha=0.0)
    assert chosen_push(long_chosen, beta=0.1, alpha=0.0) == pytest.approx(dpo_push)
    assert (
        chosen_push(short_chosen, beta=0.1, alpha=0.05)
        > dpo_push
        > chosen_push(long_chosen, beta=0.1, alpha=0.05)
    )
    # closed form: 0.1 * sig(-(0.1 * 1 + 0.05 * (3 - 12)))
    assert chosen_push(short_chosen, beta=0.1, alpha=0.05) == pytest.approx(
        0.1 * torch.sigmoid(torch.tensor(0.35)).item()
    )
    short_loss = get_loss("r_dpo", alpha=0.05)(short_chosen).loss.item()
    long_loss = get_loss("r_dpo", alpha=0.05)(long_chosen).loss.item()
    assert short_loss > get_loss("dpo")(short_chosen).loss.item() > long_loss


def test_dpo_label_smoothing_is_applied_not_ignored():
    """Unlike TRL >= 0.29's sigmoid loss, label_smoothing changes the DPO loss."""
    batch = random_batch(5)
    assert not torch.allclose(get_loss("dpo", label_smoothing=0.1)(batch).loss, get_loss("dpo")(batch).loss)


@pytest.fixture()
def scratch_registry(monkeypatch):
    """Register test losses into a copy of the registry so they do not leak into other tests."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def test_user_registered_loss(scratch_registry):
    """A user loss: a hinge on the DPO margin written with the public helpers, then used by name."""

    @register_loss("margin_hinge", requires_reference=True)
    def margin_hinge(batch: PairLogps, *, beta: float = 0.1, margin: float = 1.0) -> LossOutput:
        chosen = aggregate(batch.chosen, batch.chosen_mask) - aggregate(batch.ref_chosen, batch.chosen_mask)
        rejected = aggregate(batch.rejected, batch.rejected_mask) - aggregate(
            batch.ref_rejected, batch.rejected_mask
        )
        loss = F.relu(margin - beta * (chosen - rejected))
        return LossOutput(loss, (beta * chosen).detach(), (beta * rejected).detach())

    assert "margin_hinge" in available_losses()
    loss_fn = get_loss("margin_hinge", margin=2.0)
    assert loss_fn.requires_reference
    assert repr(loss_fn) == "get_loss('margin_hinge', margin=2.0)"
    batch = random_batch(1)
    h = (
        batch.chosen.masked_fill(~batch.chosen_mask, 0) - batch.ref_chosen.masked_fill(~batch.chosen_mask, 0)
    ).sum(-1) - (
        batch.rejected.masked_fill(~batch.rejected_mask, 0)
        - batch.ref_rejected.masked_fill(~batch.rejected_mask, 0)
    ).sum(-1)
    torch.testing.assert_close(loss_fn(batch).loss, F.relu(2.0 - 0.1 * h))
    with pytest.raises(TypeError, match="unknown hyperparameter"):
        get_loss("margin_hinge", gamma=1.0)
    with pytest.raises(ValueError, match="needs reference log-probs"):
        loss_fn(without(batch, "ref_chosen", "ref_rejected"))
    with pytest.raises(ValueError, match="already registered"):
        register_loss("dpo", requires_reference=True)(margin_hinge)


def test_wpo_weights_the_base_loss_and_composes_with_data_weights():
    """wpo(base) = w(y_w) w(y_l) * base, with the weight detached; a data weight multiplies on top."""
    batch = random_batch(8)
    per_token = lambda x, s, m: ((x.detach() - s) * m).sum(-1) / m.sum(-1)
    w = torch.exp(per_token(batch.chosen, batch.chosen_log_sum_sq, batch.chosen_mask)
                  + per_token(batch.rejected, batch.rejected_log_sum_sq, batch.rejected_mask))
    for spec in ({"name": "dpo", "beta": 0.2}, {"name": "simpo"}, {"name": "mix", "terms": MPO_TERMS}):
        out = get_loss("wpo", base=spec)(batch)
        plain = get_loss(**spec)(batch)
        torch.testing.assert_close(out.loss, w * plain.loss)
        assert out.metrics["wpo/weight"] == pytest.approx(w.mean().item())
        assert out.metrics["rewards/margins"] == plain.metrics["rewards/margins"]
    data_weights = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    weighted = PairLogps(**{**vars(batch), "weights": data_weights})
    torch.testing.assert_close(
        get_loss("wpo", base={"name": "dpo"})(weighted).loss, data_weights * w * get_loss("dpo")(batch).loss
    )
    assert not get_loss("wpo", base={"name": "simpo"}).requires_reference
    assert get_loss("wpo", base={"name": "dpo"}).needs_log_sum_sq and not get_loss("dpo").needs_log_sum_sq


@pytest.mark.parametrize(
    ("base", "batch_fields", "message"),
    [
        ({"name": "aot"}, {}, "sorts over the batch.*weights"),  # TRL rejects WPO on AOT too
        ({"name": "dpo"}, {"chosen_log_sum_sq": None}, r"needs PairLogps.chosen_log_sum_sq: .*log_sum_sq=True"),
        ({"name": "nope"}, {}, "base: unknown loss 'nope'"),
        ({"name": "wpo", "base": {"name": "dpo"}}, {}, "base is itself wpo"),
        ("dpo", {}, "base must be a mapping"),
        ({"name": "dpo", "beta": 0.0}, {}, "beta must be > 0"),
    ],
)
def test_wpo_rejects_what_it_cannot_weight(base, batch_fields, message):
    batch = PairLogps(**{**vars(random_batch(0)), **batch_fields})
    with pytest.raises(ValueError, match=message):
        get_loss("wpo", base=base)(batch)
