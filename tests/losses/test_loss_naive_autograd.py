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
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("name", "hparams", "naive"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_loss_and_gradients_match_naive(seed, name, hparams, naive):
    """Per-pair loss and d(sum loss)/d(policy token log-probs) match the naive loop to 1e-10."""
    batch = random_batch(seed)
    ours = get_loss(name, **hparams)(batch).loss
    ours_grads = torch.autograd.grad(ours.sum(), (batch.chosen, batch.rejected))

    expected = torch.stack([naive(p, **hparams) for p in naive_pairs(batch)])
    expected_grads = torch.autograd.grad(expected.sum(), (batch.chosen, batch.rejected))

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
