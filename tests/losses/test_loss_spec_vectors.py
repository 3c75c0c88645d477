"""Every test vector of ../shared/SPEC.md for the losses (§1 DPO/cDPO/IPO, §2 LD-DPO, §3 SimPO, §5 T-REG, §13 NCA).

The SPEC states sequence-level numbers; each test builds per-token log-probs whose masked sums or
means reproduce them and explains the hand computation in its docstring. softplus(z) = log(1+e^z),
so -log sig(z) = softplus(-z). Tensors are float64 so the 6-decimal SPEC values are exact checks.
"""

from __future__ import annotations

import math

import pytest
import torch

from prefopt.losses import PairLogps, get_loss


def tokens(*values: float) -> torch.Tensor:
    """One completion-aligned row ``[1, T]`` of per-token log-probs."""
    return torch.tensor([values], dtype=torch.float64)


def full_mask(row: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(row, dtype=torch.bool)


def pair(chosen, rejected, ref_chosen=None, ref_rejected=None, **extra) -> PairLogps:
    chosen = chosen.clone().requires_grad_(True)
    rejected = rejected.clone().requires_grad_(True)
    return PairLogps(
        chosen, rejected, full_mask(chosen), full_mask(rejected), ref_chosen, ref_rejected, **extra
    )


def dpo_vector_pair() -> PairLogps:
    """SPEC §1: log pi(y_w) = -10 over |y_w| = 10, log pi(y_l) = -14 over 8, ref -11 and -13."""
    return pair(
        tokens(*[-1.0] * 10),
        tokens(*[-1.75] * 8),
        ref_chosen=tokens(*[-1.1] * 10),
        ref_rejected=tokens(*[-1.625] * 8),
    )


def test_dpo_value_gradient_and_rewards():
    """h = (-10 + 11) - (-14 + 13) = 2; L = softplus(-0.1 * 2) = 0.598139.

    dL/dh = -beta * sig(-beta h) = -0.1 * sig(-0.2) = -0.045017. Each chosen token enters h with
    +1 and each rejected token with -1, so that is the gradient per chosen token (its negative per
    rejected token). Rewards: 0.1 * 1 = 0.1 and 0.1 * (-1) = -0.1.
    """
    batch = dpo_vector_pair()
    out = get_loss("dpo", beta=0.1)(batch)
    assert out.loss.item() == pytest.approx(0.598139, abs=1e-6)
    out.loss.sum().backward()
    assert torch.allclose(batch.chosen.grad, torch.full_like(batch.chosen, -0.045017), atol=1e-6)
    assert torch.allclose(batch.rejected.grad, torch.full_like(batch.rejected, 0.045017), atol=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.1)
    assert out.rejected_rewards.item() == pytest.approx(-0.1)
    assert not out.chosen_rewards.requires_grad
    assert out.metrics["rewards/margins"] == pytest.approx(0.2)
    assert out.metrics["rewards/accuracies"] == 1.0
    assert out.metrics["logps/chosen"] == pytest.approx(-10.0)
    assert out.metrics["length/chosen"] == 10.0 and out.metrics["length/rejected"] == 8.0


@pytest.mark.parametrize(
    ("name", "hparams", "expected"),
    [
        # cDPO: 0.9 * softplus(-0.2) + 0.1 * softplus(0.2) = 0.598139 + 0.1 * 0.2 = 0.618139
        ("dpo", {"beta": 0.1, "label_smoothing": 0.1}, 0.618139),
        # robust: (0.9 * softplus(-0.2) - 0.1 * softplus(0.2)) / 0.8 = 0.573139
        ("robust", {"beta": 0.1, "label_smoothing": 0.1}, 0.573139),
        # IPO on sums: (h - 1/(2 beta))^2 = (2 - 5)^2 = 9
        ("ipo", {"beta": 0.1, "normalize": False}, 9.0),
        # IPO, TRL's per-token form: delta = 1/10 - (-1)/8 = 0.225; (0.225 - 5)^2 = 22.800625
        ("ipo", {"beta": 0.1, "normalize": True}, 22.800625),
        # R-DPO (not in SPEC): beta h + alpha (|y_w| - |y_l|) = 0.2 + 0.05 * 2 = 0.3; softplus(-0.3)
        ("r_dpo", {"beta": 0.1, "alpha": 0.05}, 0.554355),
    ],
)
def test_dpo_family_vectors(name, hparams, expected):
    """SPEC §1 variants on the same pair (h = 2, |y_w| = 10, |y_l| = 8)."""
    assert get_loss(name, **hparams)(dpo_vector_pair()).loss.item() == pytest.approx(expected, abs=1e-6)


def ld_vector_pair() -> PairLogps:
    """SPEC §2: l_p = 3. Policy: chosen -3.0, rejected -1.5 + 0.5 * (-4) = -3.5.

    Reference with LD: chosen -3.6, rejected -1.8 + 0.5 * (-2) = -2.8; plain sums -3.6 and -3.8.
    """
    return pair(
        tokens(-1.0, -1.0, -1.0),
        tokens(-0.5, -0.5, -0.5, -2.0, -2.0),
        ref_chosen=tokens(-1.2, -1.2, -1.2),
        ref_rejected=tokens(-0.6, -0.6, -0.6, -1.0, -1.0),
    )


@pytest.mark.parametrize(
    ("hparams", "expected"),
    [
        # both: h = (-3.0 + 3.6) - (-3.5 + 2.8) = 1.3; softplus(-0.13) = 0.630258
        ({"ld_alpha": 0.5, "ld_on_reference": True}, 0.630258),
        # policy only: h = (-3.0 + 3.6) - (-3.5 + 3.8) = 0.3; softplus(-0.03) = 0.678260
        ({"ld_alpha": 0.5, "ld_on_reference": False}, 0.678260),
        # alpha = 1 is plain DPO: h = 0.6 - (-5.5 + 3.8) = 2.3; softplus(-0.23) = 0.584745
        ({"ld_alpha": 1.0, "ld_on_reference": True}, 0.584745),
    ],
)
def test_ld_dpo_vectors(hparams, expected):
    """SPEC §2 table, beta = 0.1."""
    assert get_loss("ld_dpo", beta=0.1, **hparams)(ld_vector_pair()).loss.item() == pytest.approx(
        expected, abs=1e-6
    )


def test_ld_dpo_alpha_one_equals_dpo():
    """The SPEC's 'plain DPO' row computed by ``dpo`` itself."""
    assert get_loss("dpo", beta=0.1)(ld_vector_pair()).loss.item() == pytest.approx(0.584745, abs=1e-6)


def simpo_vector_pair() -> PairLogps:
    """SPEC §3: sum -12 over 10 tokens (avg -1.2), sum -20 over 8 tokens (avg -2.5)."""
    return pair(tokens(*[-1.2] * 10), tokens(*[-2.5] * 8))


@pytest.mark.parametrize(
    ("hparams", "expected"),
    [
        # logits = 1.3 - 0.55 = 0.75; softplus(-2.5 * 0.75) = softplus(-1.875) = 0.142675
        ({}, 0.142675),
        # + sft_weight * token-mean NLL of chosen = 0.142675 + 1.2
        ({"sft_weight": 1.0}, 1.342675),
        # 0.9 * softplus(-1.875) + 0.1 * softplus(1.875) = 0.330175
        ({"label_smoothing": 0.1}, 0.330175),
    ],
)
def test_simpo_vectors(hparams, expected):
    """SPEC §3 with beta = 2.5, gamma/beta = 0.55 (gamma = 1.375); no reference needed."""
    out = get_loss("simpo", beta=2.5, gamma_beta_ratio=0.55, **hparams)(simpo_vector_pair())
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(2.5 * -1.2)


def treg_token_rewards() -> torch.Tensor:
    """SPEC §5: r̂ = sig(log pi(.|x_better) - log pi(.|x_worse)) - 0.5 = [0.168188, -0.250260, 0]."""
    better = tokens(-0.2, -1.5, -0.7)
    worse = tokens(-0.9, -0.4, -0.7)
    rewards = torch.sigmoid(better - worse) - 0.5
    assert torch.allclose(rewards, tokens(0.168188, -0.250260, 0.0), atol=1e-6)
    return rewards


def treg_vector_pair() -> PairLogps:
    """SPEC §5 chosen response, policy [-0.3, -1.0, -0.8], inside a DPO pair with h = 2.

    Chosen log-ratio -2.1 - (-3.1) = 1, rejected -2 - (-1) = -1, so h = 2. The rejected token
    rewards are 0, so only the chosen response contributes L_REG.
    """
    return pair(
        tokens(-0.3, -1.0, -0.8),
        tokens(-1.0, -1.0),
        ref_chosen=tokens(-1.1, -1.0, -1.0),
        ref_rejected=tokens(-0.5, -0.5),
        chosen_token_rewards=treg_token_rewards(),
        rejected_token_rewards=tokens(0.0, 0.0),
    )


def test_treg_vector_and_detached_weight():
    """L = L_DPO + alpha * w * L_REG(y_w).

    L_REG = -0.1 * (0.168188 * (-0.3) + (-0.250260) * (-1.0) + 0) = -0.019980, w = sig(-0.2) =
    0.450166, L_DPO = 0.598139, so with alpha = 0.25: 0.598139 - 0.25 * 0.450166 * 0.019980 =
    0.595890. w is a constant, so the gradient per chosen token t is
    dL_DPO/dh + alpha * w * (-beta * r̂_t) = -0.045017 - 0.25 * 0.450166 * 0.1 * r̂_t.
    """
    batch = treg_vector_pair()
    out = get_loss("treg", alpha=0.25, beta=0.1)(batch)
    assert out.metrics["treg/weight"] == pytest.approx(0.450166, abs=1e-6)
    assert out.metrics["treg/reg_chosen"] == pytest.approx(-0.019980, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.595890, abs=1e-6)
    out.loss.sum().backward()
    expected = -0.045017 - 0.25 * 0.450166 * 0.1 * treg_token_rewards()
    assert torch.allclose(batch.chosen.grad, expected, atol=1e-6)


def test_treg_mean_reduction():
    """reg_reduction="mean" divides L_REG by |y_w| = 3: -0.019980 / 3 = -0.006660."""
    out = get_loss("treg", alpha=0.25, beta=0.1, reg_reduction="mean")(treg_vector_pair())
    assert out.metrics["treg/reg_chosen"] == pytest.approx(-0.006660, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.598139 - 0.25 * 0.450166 * 0.006660, abs=1e-6)


def test_nca_vector():
    """SPEC §13, beta = 0.3: log-ratios +1 and -2, so r_w = 0.3 and r_l = -0.6.

    L = softplus(-0.3) + 0.5 softplus(0.3) + 0.5 softplus(-0.6) = 1.200277; DPO on the same pair:
    softplus(-0.3 * 3) = 0.341154.
    """
    batch = pair(tokens(-1.0), tokens(-3.0), ref_chosen=tokens(-2.0), ref_rejected=tokens(-1.0))
    assert get_loss("nca", beta=0.3)(batch).loss.item() == pytest.approx(1.200277, abs=1e-6)
    assert get_loss("dpo", beta=0.3)(batch).loss.item() == pytest.approx(0.341154, abs=1e-6)
    assert math.isclose(get_loss("nca")(batch).loss.item(), 1.200277, abs_tol=1e-6), "beta defaults to 0.3"


# --- The rest of TRL's losses (not in the SPEC): hand vectors on the same pairs -------------------


@pytest.mark.parametrize(
    ("name", "hparams", "expected"),
    [
        # SLiC hinge: max(0, 1 - beta h) = 1 - 0.2 = 0.8
        ("hinge", {"beta": 0.1}, 0.8),
        # per-token log-ratios: 1/10 - (-1)/8 = 0.225; softplus(-0.1 * 0.225) = 0.681960
        ("sigmoid_norm", {"beta": 0.1}, 0.681960),
        # EXO, z = 0.2: sig(z) = 0.549834, log sig(z) = -0.598139, log sig(-z) = -0.798139;
        # 0.549834 * (-0.598139 - log 0.999) + 0.450166 * (-0.798139 - log 0.001) = 2.422015
        ("exo_pair", {"beta": 0.1, "label_smoothing": 1e-3}, 2.422015),
        # DiscoPOP, z = 0.2, m = sig(0.2 / 0.05) = sig(4) = 0.982014:
        # (1 - m) * softplus(-0.2) + m * exp(-0.2) = 0.017986 * 0.598139 + 0.982014 * 0.818731 = 0.814763
        ("discopop", {"beta": 0.1, "discopop_tau": 0.05}, 0.814763),
        # BCO: r_w = 0.1, r_l = -0.1; softplus(-0.1) + softplus(-0.1) = 2 * 0.644397 = 1.288793
        ("bco_pair", {"beta": 0.1}, 1.288793),
        # SPPO hard: (1 - 5)^2 + (-1 + 5)^2 = 32
        ("sppo_hard", {"beta": 0.1}, 32.0),
        # APO-zero: (1 - sig(0.1)) + sig(-0.1) = 2 * 0.475021 = 0.950042
        ("apo_zero", {"beta": 0.1}, 0.950042),
        # APO-down: sig(0.1) + 1 - sig(0.1 - (-0.1)) = 0.524979 + 1 - 0.549834 = 0.975145
        ("apo_down", {"beta": 0.1}, 0.975145),
        # forward KL: f' = 1 - e^-rho: 0.632121 - (-1.718282) = 2.350402; softplus(-0.2350402) = 0.582517
        ("dpo", {"beta": 0.1, "f_divergence": "forward_kl"}, 0.582517),
        # JS: log 2 + log sig(rho); log sig(1) - log sig(-1) = 1 exactly, so softplus(-0.1) = 0.644397
        ("dpo", {"beta": 0.1, "f_divergence": "js_divergence"}, 0.644397),
        # alpha = 0.5: (e^{-0.5 rho} - 1) / (-0.5) = 2 (1 - e^{-0.5 rho}): 0.786939 - (-1.297443) = 2.084381;
        # softplus(-0.2084381) = 0.594349
        ("dpo", {"beta": 0.1, "f_divergence": "alpha_divergence", "f_alpha": 0.5}, 0.594349),
        # the divergence applies to the summed rho, before IPO's length normalization (as TRL):
        # f'(1)/10 - f'(-1)/8 with JS f' = log 2 + log sig: (log 2 - 0.313262)/10 - (log 2 - 1.313262)/8
        # = 0.037989 - (-0.077514) = 0.115503; (0.115503 - 5)^2 = 23.858312
        ("ipo", {"beta": 0.1, "f_divergence": "js_divergence"}, 23.858312),
    ],
)
def test_trl_margin_and_absolute_losses_vectors(name, hparams, expected):
    """SPEC §1's pair: rho_w = +1, rho_l = -1, h = 2, |y_w| = 10, |y_l| = 8."""
    assert get_loss(name, **hparams)(dpo_vector_pair()).loss.item() == pytest.approx(expected, abs=1e-6)


def test_hinge_gradient_is_constant_then_zero():
    """Inside the margin dL/dh = -beta: each chosen token gets -0.1; once beta h > 1, zero."""
    batch = dpo_vector_pair()
    get_loss("hinge", beta=0.1)(batch).loss.sum().backward()
    assert torch.allclose(batch.chosen.grad, torch.full_like(batch.chosen, -0.1))
    separated = dpo_vector_pair()
    get_loss("hinge", beta=1.0)(separated).loss.sum().backward()  # 1 - 2 < 0
    assert not separated.chosen.grad.any()


def aot_batch() -> PairLogps:
    """Two one-token pairs. Pair 1: policy margin -1 - (-3) = 2, reference margin -2 - (-2) = 0.
    Pair 2: policy margin -2 - (-1) = -1, reference margin -1 - (-4) = 3."""
    chosen, rejected = torch.tensor([[-1.0], [-2.0]], dtype=torch.float64), torch.tensor([[-3.0], [-1.0]], dtype=torch.float64)
    ref_chosen, ref_rejected = torch.tensor([[-2.0], [-1.0]], dtype=torch.float64), torch.tensor([[-2.0], [-4.0]], dtype=torch.float64)
    return pair(chosen, rejected, ref_chosen, ref_rejected)


def test_aot_vectors_match_sorted_quantiles_not_pairs():
    """AOT, beta = 1. Paired: sorted policy margins [-1, 2] minus sorted reference margins [0, 3]
    gives [-1, -1], so both positions lose softplus(1) = 1.313262 (DPO pairs them as 2 - 0 and
    -1 - 3: softplus(-2) = 0.126928 and softplus(4) = 4.018150).
    Unpaired: rho_w = [1, -1], rho_l = [-1, 3]; sorted [-1, 1] - [-1, 3] = [0, -2]:
    log 2 = 0.693147 and softplus(2) = 2.126928.
    """
    batch = aot_batch()
    assert get_loss("aot", beta=1.0)(batch).loss.tolist() == pytest.approx([1.313262, 1.313262], abs=1e-6)
    assert get_loss("dpo", beta=1.0)(batch).loss.tolist() == pytest.approx([0.126928, 4.018150], abs=1e-6)
    assert get_loss("aot_unpaired", beta=1.0)(batch).loss.tolist() == pytest.approx([0.693147, 2.126928], abs=1e-6)


@pytest.mark.parametrize(
    ("name", "hparams", "expected"),
    [
        # SFT: -a(y_w) = 1.2
        ("sft", {}, 1.2),
        # CPO: z = 0.1 * (-12 - (-20)) = 0.8; softplus(-0.8) + 1.0 * 1.2 = 0.371101 + 1.2 = 1.571101
        ("cpo", {"beta": 0.1, "bc_weight": 1.0}, 1.571101),
        ("cpo", {"beta": 0.1, "bc_weight": 0.0}, 0.371101),
        # AlphaPO, alpha 0.25: r = 4 (1 - e^{-0.25 a}): r_w = 4 (1 - e^{0.3}) = -1.399435,
        # r_l = 4 (1 - e^{0.625}) = -3.472984; z = 2.5 (2.073549 - 0.55) = 3.808871; softplus(-z) = 0.021931
        ("alphapo", {"beta": 2.5, "gamma_beta_ratio": 0.55, "alpha": 0.25}, 0.021931),
        # alpha = 0 is SimPO's SPEC §3 vector
        ("alphapo", {"beta": 2.5, "gamma_beta_ratio": 0.55, "alpha": 0.0}, 0.142675),
        # ORPO: P_w = e^-1.2 = 0.301194, P_l = e^-2.5 = 0.082085; log odds -0.841618 and -2.414350,
        # log OR = 1.572732, log sig(1.572732) = -0.188534; L = 1.2 - 0.1 * (-0.188534) = 1.218853
        ("orpo", {"beta": 0.1}, 1.218853),
    ],
)
def test_reference_free_vectors(name, hparams, expected):
    """SPEC §3's pair: sums -12 over 10 tokens (a = -1.2) and -20 over 8 tokens (a = -2.5); no reference."""
    assert get_loss(name, **hparams)(simpo_vector_pair()).loss.item() == pytest.approx(expected, abs=1e-6)


def test_mix_vector_is_mpo():
    """MPO on SPEC §1's pair: 0.8 * DPO 0.598139 + 0.2 * BCO 1.288793 + 1.0 * SFT 1.0 (a(y_w) = -1) = 1.736270."""
    terms = [{"name": "dpo", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}, {"name": "sft"}]
    assert get_loss("mix", terms=terms)(dpo_vector_pair()).loss.item() == pytest.approx(1.736270, abs=1e-6)


def test_wpo_vector():
    """WPO on SPEC §1's pair. log sum p^2 per token: chosen -1.2, rejected -1.25, so the per-token
    excess is -1 - (-1.2) = 0.2 and -1.75 - (-1.25) = -0.5; weight e^{0.2} e^{-0.5} = e^{-0.3} = 0.740818.
    L = 0.740818 * 0.598139 = 0.443112; the weight is a constant, so each chosen token's gradient is
    0.740818 * (-0.045017) = -0.033349.
    """
    batch = pair(
        tokens(*[-1.0] * 10),
        tokens(*[-1.75] * 8),
        ref_chosen=tokens(*[-1.1] * 10),
        ref_rejected=tokens(*[-1.625] * 8),
        chosen_log_sum_sq=tokens(*[-1.2] * 10),
        rejected_log_sum_sq=tokens(*[-1.25] * 8),
    )
    out = get_loss("wpo", base={"name": "dpo", "beta": 0.1})(batch)
    assert out.metrics["wpo/weight"] == pytest.approx(0.740818, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.443112, abs=1e-6)
    out.loss.sum().backward()
    assert torch.allclose(batch.chosen.grad, torch.full_like(batch.chosen, -0.033349), atol=1e-6)
