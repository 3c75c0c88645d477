"""bench/rewards_compare.py's report: rows per (reward, seed) in registry order, a mean row per reward run with
several seeds, the Pareto plot, and ``--report-only`` reading finished runs back (no rounds are run here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("rewards_compare", REPO / "bench" / "rewards_compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _round(accuracy: float, length: float, pairs: int | None = None, first_length: float = 60.0) -> dict:
    metrics = {"accuracy": accuracy, "ci_low": accuracy - 0.1, "ci_high": accuracy + 0.1, "mean_length": length,
               "accuracy_diff_vs_round0": accuracy - 0.2, "diff_ci_low": -0.1, "diff_ci_high": 0.3,
               "diff_p_value": 0.04, "length_change_vs_round0": length / first_length - 1, "truncation_rate": 0.02}
    row = {"sets": {"test": metrics, "test_oot": {**metrics, "accuracy": accuracy / 2}}, "sampling_seconds": 30.0}
    if pairs is not None:
        row["pairs"] = pairs
    return row


def _result(variant: str, seed: int, accuracy: float, length: float) -> dict:
    return {"variant": variant, "seed": seed, "seconds": 600.0,
            "rounds": [_round(0.2, 60.0), _round((0.2 + accuracy) / 2, 45.0, 10), _round(accuracy, length, 12)]}


def test_table_orders_rows_and_adds_a_mean_row_per_reward_with_two_seeds(tmp_path):
    bench = _bench()
    results = [_result("kimi", 1, 0.38, 22.0), _result("correctness", 0, 0.36, 28.0), _result("kimi", 0, 0.44, 21.0)]
    text = bench.table(results)
    test_rows = [line for line in text.split("**test_oot**")[0].splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[:2] for row in test_rows] == [
        ["| correctness", "0"], ["| kimi", "0"], ["| kimi", "1"], ["| **kimi**", "**mean of 2**"]]
    mean = test_rows[-1]
    assert "**41.0** (38–44)" in mean and "**21.5** (60.0)" in mean and "| 11.0 |" in mean  # pairs: mean of 11 and 11
    assert not any("mean of" in row for row in test_rows if "correctness" in row)  # one seed: no mean row
    bench.plot(results, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_read_variant_needs_every_round_and_sums_step_seconds(tmp_path, monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench, "RUNS", tmp_path)
    root = tmp_path / "kimi-seed1"
    (root / "round_000").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"recipe": {"rounds": {"count": 1}}}))
    (root / "round_000" / "metrics.json").write_text(json.dumps(_round(0.2, 60.0)))
    assert bench.read_variant("kimi", 1) is None  # round 1 has not finished
    (root / "round_001").mkdir()
    (root / "round_001" / "metrics.json").write_text(json.dumps({**_round(0.3, 40.0, 9), "training_seconds": 90.0}))
    result = bench.read_variant("kimi", 1)
    assert result["seed"] == 1 and len(result["rounds"]) == 2 and result["seconds"] == 150.0
