"""Length-controlled win rate: AlpacaEval's definitions, the SPEC §6 test vector, and the GLM fit
checked against an independent unregularized Newton solve on synthetic annotations with a known
length effect."""

from __future__ import annotations

import argparse
import json
import logging
import math

import numpy as np
import pytest

from prefopt.commands import eval as eval_command
from prefopt.evaluate.lc_winrate import (
    DIFFICULTY,
    LENGTH,
    MODEL,
    glm_predictions,
    is_extreme_change,
    length_controlled_winrate,
    length_feature,
    read_annotations,
    read_instruction_difficulty,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def synthetic_annotations(
    n: int = 600, theta_len: float = -1.5, theta_model: float = 0.0, theta_diff: float = 0.0, seed: int = 0
) -> tuple[list[dict], float]:
    """Model outputs mostly longer (0.6-3x the baseline's); the judge follows the GLM with ``theta_len``.

    Rows carry their ``instruction_difficulty`` only when ``theta_diff`` is non-zero. Returns the annotations
    and the true length-free win rate ``100 * mean sigmoid(theta_diff*g + theta_model)``.
    """
    rng = np.random.default_rng(seed)
    len_base = rng.integers(200, 800, size=n)
    len_model = (len_base * rng.uniform(0.6, 3.0, size=n)).astype(int)
    delta = (len_base - len_model).astype(float)
    gamma = rng.normal(0, 1, size=n)
    logits = theta_len * np.tanh(delta / delta.std(ddof=1)) + theta_diff * gamma + theta_model
    wins = rng.random(n) < _sigmoid(logits)
    rows = [
        {
            "instruction": f"instruction {i}",
            "output_1": "b" * int(len_base[i]),
            "output_2": "m" * int(len_model[i]),
            "preference": 2 if wins[i] else 1,
            "generator_1": "baseline",
            "generator_2": "model",
        }
        | ({DIFFICULTY: float(gamma[i])} if theta_diff else {})
        for i in range(n)
    ]
    return rows, float(100 * _sigmoid(theta_diff * gamma + theta_model).mean())


def newton_lc_winrate(rows: list[dict], with_difficulty: bool) -> float:
    """Independent reference: unregularized soft-label logistic regression by Newton's method."""
    p = np.array([0.5 if r["preference"] == 0 else r["preference"] - 1 for r in rows], dtype=float)
    delta = np.array([len(r["output_1"]) - len(r["output_2"]) for r in rows], dtype=float)
    columns = [np.tanh(delta / delta.std(ddof=1)), np.ones_like(p)]
    if with_difficulty:
        columns.insert(1, np.array([r["instruction_difficulty"] for r in rows]))
    x = np.stack(columns, axis=1)
    theta = np.zeros(x.shape[1])
    for _ in range(50):
        q = _sigmoid(x @ theta)
        hessian = x.T @ (x * (q * (1 - q))[:, None])
        theta += np.linalg.solve(hessian, x.T @ (p - q))
    x_test = x.copy()
    x_test[:, 0] = 0
    return float(100 * _sigmoid(x_test @ theta).mean())


def test_raw_win_rate_is_alpacaeval_definition():
    """p = preference - 1 with ties (0) as 0.5: [1, 0, 0.5, 0.75, 1] -> 65.0;
    SE = 100 * std(ddof=1) / sqrt(5)."""
    prefs = [2, 1, 0, 1.75, 2]
    rows = [
        {"output_1": "x" * (10 + i), "output_2": "y" * (30 - 3 * i), "preference": v}
        for i, v in enumerate(prefs)
    ]
    result = length_controlled_winrate(rows, warn_extreme_changes=False)
    p = np.array([1, 0, 0.5, 0.75, 1])
    assert result["win_rate"] == pytest.approx(65.0, abs=1e-12)
    assert result["standard_error"] == pytest.approx(100 * p.std(ddof=1) / math.sqrt(5), abs=1e-12)
    assert result["n"] == 5


def test_spec_test_vector():
    """SPEC §6: lengths baseline [100, 200, 300], model [150, 150, 450] -> z = [-0.5, 0.5, -1.5];
    theta_len=-1.5, theta_diff=1, theta_model=0.5, gamma=[-0.5, 0, 0.5]
    -> LC 61.7839, uncontrolled 67.7358."""
    feature = length_feature(["a" * 100, "a" * 200, "a" * 300], ["b" * 150, "b" * 150, "b" * 450])
    np.testing.assert_allclose(feature, np.tanh([-0.5, 0.5, -1.5]), rtol=1e-12)
    coefficients = {LENGTH: -1.5, DIFFICULTY: 1.0, MODEL: 0.5}
    gamma = np.array([-0.5, 0.0, 0.5])
    assert 100 * glm_predictions(coefficients, np.zeros(3), gamma).mean() == pytest.approx(61.7839, abs=1e-4)
    assert 100 * glm_predictions(coefficients, feature, gamma).mean() == pytest.approx(67.7358, abs=1e-4)


def test_length_bias_is_removed_and_matches_independent_fit():
    rows, true_lc = synthetic_annotations(theta_len=-1.5, theta_model=0.0)
    result = length_controlled_winrate(rows, warn_extreme_changes=False)
    assert result["win_rate"] > 70  # the judge prefers the much longer model outputs
    assert result["length_controlled_winrate"] == pytest.approx(true_lc, abs=8)
    assert result["length_controlled_winrate"] == pytest.approx(newton_lc_winrate(rows, False), abs=0.5)
    assert result["coefficients"][LENGTH] < -0.5
    assert set(result["coefficients"]) == {LENGTH, MODEL}
    assert result["lc_standard_error"] == 0.0  # one prediction for every row


def test_instruction_difficulty_term_matches_independent_fit(tmp_path):
    rows, true_lc = synthetic_annotations(theta_len=-1.0, theta_model=0.8, theta_diff=1.0, seed=1)
    result = length_controlled_winrate(rows, warn_extreme_changes=False)
    assert set(result["coefficients"]) == {LENGTH, DIFFICULTY, MODEL}
    assert result["length_controlled_winrate"] == pytest.approx(newton_lc_winrate(rows, True), abs=0.5)
    assert result["length_controlled_winrate"] == pytest.approx(true_lc, abs=8)
    assert result["lc_standard_error"] > 0

    csv_path = tmp_path / "difficulty.csv"
    csv_path.write_text(
        "instruction,instruction_difficulty\n"
        + "".join(f"{r['instruction']},{r[DIFFICULTY]}\n" for r in rows)
    )
    stripped = [{k: v for k, v in r.items() if k != DIFFICULTY} for r in rows]
    from_csv = length_controlled_winrate(
        stripped, instruction_difficulty=read_instruction_difficulty(csv_path), warn_extreme_changes=False
    )
    assert from_csv["length_controlled_winrate"] == pytest.approx(
        result["length_controlled_winrate"], abs=1e-9
    )


def test_soft_preferences_match_independent_fit():
    rows, _ = synthetic_annotations(n=400, seed=2)
    rng = np.random.default_rng(3)
    for row in rows:
        row["preference"] = float(rng.uniform(1.6, 2.0) if row["preference"] == 2 else rng.uniform(1.0, 1.4))
    result = length_controlled_winrate(rows, warn_extreme_changes=False)
    assert result["length_controlled_winrate"] == pytest.approx(newton_lc_winrate(rows, False), abs=0.5)


def test_flipped_rows_and_model_selection():
    rows, _ = synthetic_annotations(n=200, seed=4)
    mixed = []
    for i, row in enumerate(rows):
        if i % 2:  # the same judgment written with the model in position 1
            row = dict(
                row,
                output_1=row["output_2"],
                output_2=row["output_1"],
                generator_1="model",
                generator_2="baseline",
                preference=3 - row["preference"],
            )
        mixed.append(row)
    other = dict(rows[0], generator_2="other-model")
    expected = length_controlled_winrate(rows, warn_extreme_changes=False)
    got = length_controlled_winrate(mixed + [other], model="model", warn_extreme_changes=False)
    assert got["win_rate"] == pytest.approx(expected["win_rate"])
    assert got["length_controlled_winrate"] == pytest.approx(expected["length_controlled_winrate"], abs=1e-9)
    with pytest.raises(ValueError, match="several models"):
        length_controlled_winrate(rows + [other])


def test_baseline_against_itself_is_fifty():
    rows = [dict(r, generator_2="baseline") for r in synthetic_annotations(n=50)[0]]
    assert length_controlled_winrate(rows, warn_extreme_changes=False)["length_controlled_winrate"] == 50.0


def test_missing_and_invalid_preferences():
    rows, _ = synthetic_annotations(n=60)
    rows[3]["preference"] = None
    assert length_controlled_winrate(rows, warn_extreme_changes=False)["n_dropped"] == 1
    rows[5]["preference"] = 3
    with pytest.raises(ValueError, match=r"annotation 5, field 'preference'"):
        length_controlled_winrate(rows)


def test_extreme_change_rule_and_warning(caplog):
    """WR 20: warn below min(20 - 5, 20 - 10) = 10 or above max(20 + 20, 20 + 10) = 40."""
    assert is_extreme_change(20, 9.9) and not is_extreme_change(20, 10.1)
    assert is_extreme_change(20, 40.1) and not is_extreme_change(20, 39.9)
    rows, _ = synthetic_annotations(theta_len=-3.0, theta_model=-1.5, seed=5)
    with caplog.at_level(logging.WARNING, logger="prefopt.evaluate.lc_winrate"):
        result = length_controlled_winrate(rows)
    assert result["extreme_change"]
    assert "very different from the raw" in caplog.text


def test_read_json_list_and_jsonl(tmp_path):
    rows, _ = synthetic_annotations(n=20)
    as_list, as_lines = tmp_path / "annotations.json", tmp_path / "judgments.jsonl"
    as_list.write_text(json.dumps(rows))
    as_lines.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_annotations(as_list) == read_annotations(as_lines) == rows
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"output_1": "a", "preference": 1}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl, row 1, field 'output_2': missing; every annotation needs"):
        read_annotations(bad)


def test_cli_prints_json(tmp_path, capsys):
    rows, _ = synthetic_annotations(n=200)
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(rows))
    parser = argparse.ArgumentParser(prog="prefopt")
    eval_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", "lc-winrate", str(path), "--json"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = length_controlled_winrate(rows, warn_extreme_changes=False)
    assert printed["length_controlled_winrate"] == pytest.approx(expected["length_controlled_winrate"])
    assert printed["model"] == "model" and printed["baseline"] == "baseline"


def test_delta_method_se_equals_binomial_se_without_length_differences():
    """Equal lengths: LC = sigmoid(theta_model) = mean p, and the delta-method SE is sqrt(q (1 - q) / n)."""
    rng = np.random.default_rng(6)
    rows = [
        {"output_1": "same", "output_2": "size", "preference": 2 if w else 1} for w in rng.random(500) < 0.7
    ]
    result = length_controlled_winrate(rows, warn_extreme_changes=False)
    q = result["win_rate"] / 100
    assert result["length_controlled_winrate"] == pytest.approx(result["win_rate"], abs=0.05)
    assert result["lc_delta_method_se"] == pytest.approx(100 * math.sqrt(q * (1 - q) / 500), rel=0.01)


def test_errors_name_the_original_record():
    rows, _ = synthetic_annotations(n=40, theta_diff=1.0)
    other = dict(rows[0], generator_2="other-model")
    bad = dict(rows[1], preference="model")
    with pytest.raises(ValueError, match=r"annotation 2, field 'preference': 'model' is not in \[1, 2\]"):
        length_controlled_winrate([other, other, bad] + rows, model="model")
    mapping = {r["instruction"]: 0.0 for r in rows[1:]}
    with pytest.raises(ValueError, match=r"annotation 1 \(and 0 more\), field 'instruction'"):
        length_controlled_winrate([other] + rows, model="model", instruction_difficulty=mapping)
