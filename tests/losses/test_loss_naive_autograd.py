"""Each loss against a naive re-implementation, values and gradients, on random ragged batches.

The naive versions loop over pairs, slice each row to its real tokens with Python indexing and
use ``F.logsigmoid`` (the library uses softplus and masked reductions), so they share no code
with ``prefopt.losses``. Batches have different chosen/rejected widths, random left-justified
lengths and large garbage values in the padding, which a masking bug would pick up.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_batches import random_batch

from prefopt.losses import PairLogps, get_loss


def real(x: torch.Tensor, mask: torch.Tensor, row: int) -> torch.Tensor:
    """The real (unpadded) tokens of one row."""
    return x[row, : int(mask[row].sum())]


def naive_pairs(b: PairLogps):
    """Per pair: dict of the policy/reference token rows and token rewards, padding sliced off."""
    for i in range(b.chosen.shape[0]):
        yield {
            "w": real(b.chosen, b.chosen_mask, i),
            "l": real(b.rejected, b.rejected_mask, i),
            "ref_w": real(b.ref_chosen, b.chosen_mask, i),
            "ref_l": real(b.ref_rejected, b.rejected_mask, i),
            "rw": real(b.chosen_token_rewards, b.chosen_mask, i),
            "rl": real(b.rejected_token_rewards, b.rejected_mask, i),
            "sw": real(b.chosen_log_sum_sq, b.chosen_mask, i),
            "sl": real(b.rejected_log_sum_sq, b.rejected_mask, i),
        }


def smoothed(z: torch.Tensor, eps: float) -> torch.Tensor:
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def naive_dpo(p, beta=0.1, label_smoothing=0.0):
    h = (p["w"].sum() - p["ref_w"].sum()) - (p["l"].sum() - p["ref_l"].sum())
    return smoothed(beta * h, label_smoothing)


def naive_robust(p, beta=0.1, label_smoothing=0.1):
    h = (p["w"].sum() - p["ref_w"].sum()) - (p["l"].sum() - p["ref_l"].sum())
    eps = label_smoothing
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


def naive_ipo(p, beta=0.1, normalize=True):
    rho_w = p["w"].sum() - p["ref_w"].sum()
    rho_l = p["l"].sum() - p["ref_l"].sum()
    if normalize:
        rho_w, rho_l = rho_w / len(p["w"]), rho_l / len(p["l"])
    return (rho_w - rho_l - 1 / (2 * beta)) ** 2


def naive_ld_dpo(p, beta=0.1, ld_alpha=0.5, ld_on_reference=True):
    shared = min(len(p["w"]), len(p["l"]))

    def hat(x):
        return x[:shared].sum() + ld_alpha * x[shared:].sum()

    ref = hat if ld_on_reference else torch.sum
    h = (hat(p["w"]) - ref(p["ref_w"])) - (hat(p["l"]) - ref(p["ref_l"]))
    return -F.logsigmoid(beta * h)


def naive_r_dpo(p, beta=0.1, alpha=0.05):
    h = (p["w"].sum() - p["ref_w"].sum()) - (p["l"].sum() - p["ref_l"].sum())
    return -F.logsigmoid(beta * h + alpha * (len(p["w"]) - len(p["l"])))


def naive_nca(p, beta=0.3):
    r_w = beta * (p["w"].sum() - p["ref_w"].sum())
    r_l = beta * (p["l"].sum() - p["ref_l"].sum())
    return -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)


def naive_simpo(p, beta=2.0, gamma_beta_ratio=0.5, sft_weight=0.0, label_smoothing=0.0):
    z = beta * (p["w"].mean() - p["l"].mean() - gamma_beta_ratio)
    return smoothed(z, label_smoothing) + sft_weight * -p["w"].mean()


def naive_reg(p, beta, reg_reduction):
    reduce = torch.sum if reg_reduction == "sum" else torch.mean
    return -reduce(beta * p["rw"] * p["w"]) - reduce(beta * p["rl"] * p["l"])


def naive_treg(p, alpha=0.25, beta=0.1, label_smoothing=0.0, reg_reduction="sum"):
    h = (p["w"].sum() - p["ref_w"].sum()) - (p["l"].sum() - p["ref_l"].sum())
    weight = torch.sigmoid(-beta * h).detach()
    return naive_dpo(p, beta, label_smoothing) + alpha * weight * naive_reg(p, beta, reg_reduction)


def naive_treg_simpo(p, alpha=0.25, beta=2.0, gamma_beta_ratio=0.5, sft_weight=0.0, reg_reduction="sum"):
    weight = torch.sigmoid(-beta * (p["w"].mean() - p["l"].mean() - gamma_beta_ratio)).detach()
    return naive_simpo(p, beta, gamma_beta_ratio, sft_weight) + alpha * weight * naive_reg(
        p, beta, reg_reduction
    )


def rho(p, side):
    return p[side].sum() - p[f"ref_{side}"].sum()


def naive_f(r, divergence="reverse_kl", f_alpha=0.5):
    """f'(exp(r)) written from the f-DPO table directly (u = exp(r))."""
    u = torch.exp(r)
    if divergence == "forward_kl":
        return 1 - 1 / u
    if divergence == "js_divergence":
        return torch.log(2 * u / (1 + u))
    if divergence == "alpha_divergence":
        return (u ** (f_alpha - 1) - 1) / (f_alpha - 1)
    return r


def f_margin(p, f_divergence="reverse_kl", f_alpha=0.5):
    return naive_f(rho(p, "w"), f_divergence, f_alpha) - naive_f(rho(p, "l"), f_divergence, f_alpha)


def naive_dpo_f(p, beta=0.1, f_divergence="reverse_kl", f_alpha=0.5):
    return -F.logsigmoid(beta * f_margin(p, f_divergence, f_alpha))


def naive_sigmoid_norm(p, beta=0.1, f_divergence="reverse_kl", f_alpha=0.5):
    delta = naive_f(rho(p, "w"), f_divergence, f_alpha) / len(p["w"]) - naive_f(
        rho(p, "l"), f_divergence, f_alpha
    ) / len(p["l"])
    return -F.logsigmoid(beta * delta)


def naive_hinge(p, beta=0.1, f_divergence="reverse_kl", f_alpha=0.5):
    return torch.clamp(1 - beta * f_margin(p, f_divergence, f_alpha), min=0)


def naive_exo_pair(p, beta=0.1, label_smoothing=1e-3, f_divergence="reverse_kl", f_alpha=0.5):
    """KL(q || p_data) over the two responses, q = softmax(beta * [f_w, f_l])."""
    q = torch.softmax(beta * torch.stack([naive_f(rho(p, "w"), f_divergence, f_alpha), naive_f(rho(p, "l"), f_divergence, f_alpha)]), 0)
    target = torch.tensor([1 - label_smoothing, label_smoothing], dtype=q.dtype)
    return (q * (q.log() - target.log())).sum()


def naive_discopop(p, beta=0.1, discopop_tau=0.05, f_divergence="reverse_kl", f_alpha=0.5):
    z = beta * f_margin(p, f_divergence, f_alpha)
    m = torch.sigmoid(z / discopop_tau)
    return -(1 - m) * F.logsigmoid(z) + m * torch.exp(-z)


def naive_bco_pair(p, beta=0.1):
    return -F.logsigmoid(beta * rho(p, "w")) - F.logsigmoid(-beta * rho(p, "l"))


def naive_sppo_hard(p, beta=0.1):
    return (rho(p, "w") - 1 / (2 * beta)) ** 2 + (rho(p, "l") + 1 / (2 * beta)) ** 2


def naive_apo_zero(p, beta=0.1):
    return 1 - torch.sigmoid(beta * rho(p, "w")) + torch.sigmoid(beta * rho(p, "l"))


def naive_apo_down(p, beta=0.1):
    return torch.sigmoid(beta * rho(p, "w")) + 1 - torch.sigmoid(beta * (rho(p, "w") - rho(p, "l")))


def naive_aot(pairs, beta=0.1, label_smoothing=0.0):
    """Batch-level: the i-th smallest policy margin against the i-th smallest reference margin."""
    policy = sorted((p["w"].sum() - p["l"].sum() for p in pairs), key=lambda t: t.detach().item())
    reference = sorted((p["ref_w"].sum() - p["ref_l"].sum() for p in pairs), key=lambda t: t.detach().item())
    return torch.stack([smoothed(beta * (a - b), label_smoothing) for a, b in zip(policy, reference)])


def naive_aot_unpaired(pairs, beta=0.1, label_smoothing=0.0):
    chosen = sorted((rho(p, "w") for p in pairs), key=lambda t: t.detach().item())
    rejected = sorted((rho(p, "l") for p in pairs), key=lambda t: t.detach().item())
    return torch.stack([smoothed(beta * (a - b), label_smoothing) for a, b in zip(chosen, rejected)])


naive_aot.batched = naive_aot_unpaired.batched = True


def naive_sft(p):
    return -p["w"].mean()


def naive_cpo(p, beta=0.1, bc_weight=1.0, label_smoothing=0.0):
    return smoothed(beta * (p["w"].sum() - p["l"].sum()), label_smoothing) - bc_weight * p["w"].mean()


def naive_alphapo(p, beta=2.0, gamma_beta_ratio=0.5, alpha=0.25, label_smoothing=0.0):
    def reward(x):
        prob = torch.exp(x.mean())
        return x.mean() if alpha == 0 else (1 - prob ** (-alpha)) / alpha

    return smoothed(beta * (reward(p["w"]) - reward(p["l"]) - gamma_beta_ratio), label_smoothing)


def naive_orpo(p, beta=0.1):
    prob_w, prob_l = torch.exp(p["w"].mean()), torch.exp(p["l"].mean())
    log_odds = torch.log(prob_w / (1 - prob_w)) - torch.log(prob_l / (1 - prob_l))
    return -p["w"].mean() - beta * F.logsigmoid(log_odds)


def naive_mpo(p, terms):
    return 0.8 * naive_dpo(p) + 0.2 * naive_bco_pair(p) + 1.0 * naive_sft(p)


MPO = [{"name": "dpo", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}, {"name": "sft"}]


def naive_wpo(p, base):
    """Eq. 2: w = exp(mean_t(log p_t - log sum p^2)) per response, product over the pair, detached."""
    weight = torch.exp((p["w"] - p["sw"]).mean() + (p["l"] - p["sl"]).mean()).detach()
    inner = {"dpo": naive_dpo, "simpo": naive_simpo, "mix": lambda q: naive_mpo(q, MPO)}[base["name"]]
    return weight * inner(p)

CASES = [
    ("dpo", {}, naive_dpo),
    ("dpo", {"beta": 0.3, "label_smoothing": 0.2}, naive_dpo),
    ("robust", {}, naive_robust),
    ("ipo", {}, naive_ipo),
    ("ipo", {"beta": 0.5, "normalize": False}, naive_ipo),
    ("ld_dpo", {}, naive_ld_dpo),
    ("ld_dpo", {"ld_alpha": 0.2, "ld_on_reference": False}, naive_ld_dpo),
    ("r_dpo", {"alpha": 0.3}, naive_r_dpo),
    ("nca", {}, naive_nca),
    ("simpo", {}, naive_simpo),
    ("simpo", {"beta": 2.5, "gamma_beta_ratio": 0.3, "sft_weight": 0.7, "label_smoothing": 0.1}, naive_simpo),
    ("treg", {}, naive_treg),
    ("treg", {"alpha": 0.5, "beta": 0.2, "label_smoothing": 0.1, "reg_reduction": "mean"}, naive_treg),
    ("treg_simpo", {}, naive_treg_simpo),
    ("treg_simpo", {"sft_weight": 0.5, "reg_reduction": "mean"}, naive_treg_simpo),
    ("dpo", {"beta": 0.3, "f_divergence": "forward_kl"}, naive_dpo_f),
    ("dpo", {"f_divergence": "js_divergence"}, naive_dpo_f),
    ("dpo", {"f_divergence": "alpha_divergence", "f_alpha": 0.3}, naive_dpo_f),
    ("sigmoid_norm", {}, naive_sigmoid_norm),
    ("sigmoid_norm", {"beta": 2.0, "f_divergence": "js_divergence"}, naive_sigmoid_norm),
    ("hinge", {}, naive_hinge),
    ("hinge", {"beta": 0.5, "f_divergence": "forward_kl"}, naive_hinge),
    ("exo_pair", {}, naive_exo_pair),
    ("exo_pair", {"beta": 0.3, "label_smoothing": 0.1, "f_divergence": "alpha_divergence"}, naive_exo_pair),
    ("discopop", {}, naive_discopop),
    ("discopop", {"beta": 0.05, "discopop_tau": 0.5, "f_divergence": "js_divergence"}, naive_discopop),
    ("bco_pair", {"beta": 0.2}, naive_bco_pair),
    ("sppo_hard", {}, naive_sppo_hard),
    ("apo_zero", {"beta": 0.3}, naive_apo_zero),
    ("apo_down", {"beta": 0.3}, naive_apo_down),
    ("aot", {}, naive_aot),
    ("aot", {"beta": 0.4, "label_smoothing": 0.1}, naive_aot),
    ("aot_unpaired", {"beta": 0.4, "label_smoothing": 0.1}, naive_aot_unpaired),
    ("sft", {}, naive_sft),
    ("cpo", {}, naive_cpo),
    ("cpo", {"beta": 0.5, "bc_weight": 0.0, "label_smoothing": 0.1}, naive_cpo),
    ("alphapo", {}, naive_alphapo),
    ("alphapo", {"alpha": -0.5, "beta": 2.5, "label_smoothing": 0.1}, naive_alphapo),
    ("alphapo", {"alpha": 0.0}, naive_alphapo),
    ("orpo", {}, naive_orpo),
    ("orpo", {"beta": 0.5}, naive_orpo),
    ("mix", {"terms": MPO}, naive_mpo),
    ("wpo", {"base": {"name": "dpo"}}, naive_wpo),
    ("wpo", {"base": {"name": "simpo"}}, naive_wpo),
    ("wpo", {"base": {"name": "mix", "terms": MPO}}, naive_wpo),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("name", "hparams", "naive"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_loss_and_gradients_match_naive(seed, name, hparams, naive):
    """Per-pair loss and d(sum loss)/d(policy token log-probs) match the naive loop to 1e-10."""
    batch = random_batch(seed)
    ours = get_loss(name, **hparams)(batch).loss
    ours_grads = torch.autograd.grad(ours.sum(), (batch.chosen, batch.rejected), materialize_grads=True)

    if getattr(naive, "batched", False):
        expected = naive(list(naive_pairs(batch)), **hparams)
    else:
        expected = torch.stack([naive(p, **hparams) for p in naive_pairs(batch)])
    expected_grads = torch.autograd.grad(expected.sum(), (batch.chosen, batch.rejected), materialize_grads=True)

    assert ours.shape == (batch.chosen.shape[0],)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-10)
    for got, want in zip(ours_grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert not torch.any(ours_grads[0][~batch.chosen_mask]), "padding must get no gradient"


@pytest.mark.parametrize(
    ("name", "hparams"), [c[:2] for c in CASES], ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_float32_inputs_give_float32_loss(name, hparams):
    """The losses keep the input dtype (no silent upcast of the per-pair loss)."""
    b = random_batch(2)
    as32 = {
        k: (v.detach().float() if torch.is_floating_point(v) else v)
        for k, v in vars(b).items()
        if v is not None
    }
    out = get_loss(name, **hparams)(PairLogps(**as32))
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(
        out.loss.double(), get_loss(name, **hparams)(b).loss.detach(), rtol=1e-5, atol=1e-5
    )
