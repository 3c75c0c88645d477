"""Hyperparameter values are checked from the loss's annotations when it is bound (prefopt/losses/hparams.py)."""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at
import pytest
from loss_batches import random_batch

from prefopt.losses import (
    HyperparameterError,
    LossOutput,
    PairLogps,
    Positive,
    UnitInterval,
    available_losses,
    base,
    get_loss,
    register_loss,
)
from prefopt.losses.hparams import constraints


@pytest.mark.parametrize(
    ("name", "hparams", "key", "problem"),
    [
        ("dpo", {"beta": 0}, "beta", "must be > 0, got 0"),
        ("dpo", {"beta": float("nan")}, "beta", "must be > 0, got nan"),
        ("dpo", {"beta": "0.1"}, "beta", "must be a number, got '0.1'"),
        ("dpo", {"beta": True}, "beta", "must be a number, got True"),
        ("ipo", {"normalize": 1}, "normalize", "must be true or false, got 1"),
        ("ld_dpo", {"ld_alpha": 1.01}, "ld_alpha", "must be in [0, 1], got 1.01"),
        ("exo_pair", {"label_smoothing": 0.5}, "label_smoothing",
         "must be in (0, 0.5) (the target's smoothing eps; the paper uses 1e-3), got 0.5"),
        ("simpo", {"label_smoothing": -0.1}, "label_smoothing",
         "must be in [0, 0.5) (the assumed probability that a preference label is flipped), got -0.1"),
        ("treg", {"reg_reduction": "max"}, "reg_reduction", "must be 'sum' or 'mean', got 'max'"),
        ("hinge", {"f_divergence": "kl"}, "f_divergence",
         "must be one of reverse_kl, forward_kl, js_divergence, alpha_divergence, got 'kl'"),
    ],
)  # fmt: skip
def test_a_bad_value_fails_at_binding_naming_loss_and_key(name, hparams, key, problem):
    """No batch needed: the value is rejected by get_loss itself, with the loss, key and rule in one line."""
    with pytest.raises(HyperparameterError) as info:
        get_loss(name, **hparams)
    assert (info.value.loss, info.value.key, info.value.problem) == (name, key, problem)
    assert str(info.value) == f"loss {name!r}: {key} {problem}"


def test_ints_are_numbers_and_bounds_are_inclusive_where_declared():
    assert get_loss("dpo", beta=1).hparams == {"beta": 1}  # the value is bound as given
    for alpha in (0, 1, 0.0, 1.0):
        get_loss("ld_dpo", ld_alpha=alpha)
    get_loss("dpo", label_smoothing=0)
    get_loss("r_dpo", alpha=0)
    get_loss("alphapo", alpha=-0.5, gamma_beta_ratio=-1.0)  # unconstrained floats take any number


def test_every_built_in_default_satisfies_its_own_constraint():
    """The declared ranges agree with the defaults (a wrong annotation would reject the default)."""
    import inspect

    for name in available_losses():
        fn = base._REGISTRY[name].fn
        for key, rule in constraints(fn).items():
            default = inspect.signature(fn).parameters[key].default
            if default is not inspect.Parameter.empty:
                assert rule.problem(default) is None, (name, key, default)


@pytest.mark.parametrize(
    ("name", "hparams", "error", "message"),
    [
        ("mix", {"terms": [{"name": "dpo"}, {"name": "simpo", "beta": -2.0}]}, HyperparameterError,
         r"^loss 'mix': terms\[1\]\.beta must be > 0, got -2\.0$"),
        ("wpo", {"base": {"name": "mix", "terms": [{"name": "ipo", "beta": 0.0}]}}, HyperparameterError,
         r"^loss 'wpo': base\.terms\[0\]\.beta must be > 0, got 0\.0$"),
        ("mix", {"terms": [{"name": "dpo"}, {"name": "dpo"}]}, ValueError, r"terms\[1\] repeats 'dpo'"),
        ("wpo", {"base": "dpo"}, ValueError, "base must be a mapping"),
        ("mix", {}, TypeError, r"loss 'mix' needs hyperparameter\(s\) \['terms'\]"),
    ],
)  # fmt: skip
def test_nested_specs_are_validated_at_binding_with_their_path(name, hparams, error, message):
    with pytest.raises(error, match=message):
        get_loss(name, **hparams)


def test_nested_error_keeps_the_full_key_path():
    with pytest.raises(HyperparameterError) as info:
        get_loss("wpo", base={"name": "mix", "terms": [{"name": "dpo"}, {"name": "cpo", "bc_weight": -1}]})
    assert info.value.key == "base.terms[1].bc_weight" and info.value.name == "bc_weight"


@pytest.fixture()
def scratch_registry(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def test_a_user_loss_declares_its_ranges_and_a_cross_parameter_check(scratch_registry):
    """Annotations (including a reason) and ``check=`` apply to user losses exactly as to built-in ones."""
    calls = []

    def check(hparams):
        calls.append(dict(hparams))
        if hparams["low"] >= hparams["high"]:
            raise ValueError(f"loss 'band': low must be below high, got {hparams['low']} >= {hparams['high']}")

    @register_loss("band", requires_reference=False, check=check)
    def band(
        batch: PairLogps,
        *,
        beta: Positive = 1.0,
        low: UnitInterval = 0.2,
        high: Annotated[float, at.Le(1), at.doc("a probability")] = 0.8,
        mode: Literal["a", "b", "c"] = "a",
        steps: int = 3,
        tag: str = "x",
    ) -> LossOutput:
        raise AssertionError("never computed here")

    assert get_loss("band", low=0.5).hparams == {"low": 0.5}
    assert calls[-1] == {"beta": 1.0, "low": 0.5, "high": 0.8, "mode": "a", "steps": 3, "tag": "x"}
    for hparams, message in [
        ({"high": 1.5}, "loss 'band': high must be <= 1 (a probability), got 1.5"),
        ({"mode": "d"}, "loss 'band': mode must be one of a, b, c, got 'd'"),
        ({"steps": 2.5}, "loss 'band': steps must be an integer, got 2.5"),
        ({"tag": 3}, "loss 'band': tag must be a str, got 3"),
        ({"low": 0.9}, "loss 'band': low must be below high, got 0.9 >= 0.8"),
    ]:
        with pytest.raises(ValueError) as info:
            get_loss("band", **hparams)
        assert str(info.value) == message


def test_unresolvable_annotations_leave_the_value_unchecked(scratch_registry):
    """A name only imported for type checkers cannot be evaluated: the value is not checked, not an error."""

    @register_loss("opaque", requires_reference=False)
    def opaque(batch: PairLogps, *, scale: "NotDefinedAnywhere" = 1.0) -> LossOutput:  # noqa: F821
        raise AssertionError

    assert get_loss("opaque", scale="anything").hparams == {"scale": "anything"}


def test_validation_does_not_compute_the_loss():
    """Binding touches no tensor; the loss still computes on the first call."""
    loss_fn = get_loss("dpo", beta=0.2)
    assert loss_fn(random_batch(0)).loss.shape == (random_batch(0).chosen.shape[0],)
