"""Length debiasing on synthetic pairs whose length bias is known."""

from __future__ import annotations

import argparse
import json

import datasets
import numpy as np
import pytest

from prefopt.commands import data as data_command
from prefopt.data import load_pairs
from prefopt.data.debias import (
    balance_indices,
    debias,
    debias_file,
    length_bias_report,
    pair_lengths,
    ratio_cap_indices,
)
from prefopt.io import report_path


def biased_pairs(n: int = 4000, p_longer: float = 0.8, seed: int = 0) -> datasets.Dataset:
    """Two random lengths per pair; the longer one is the chosen with probability ``p_longer``."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(20, 600, size=n), rng.integers(20, 600, size=n)
    longer_wins = rng.random(n) < p_longer
    chosen = np.where(longer_wins, np.maximum(a, b), np.minimum(a, b))
    rejected = np.where(longer_wins, np.minimum(a, b), np.maximum(a, b))
    return datasets.Dataset.from_dict(
        {
            "prompt": [f"question {i}" for i in range(n)],
            "chosen": ["c" * int(k) for k in chosen],
            "rejected": ["r" * int(k) for k in rejected],
        }
    )


def test_report_measures_known_bias():
    pairs = biased_pairs()
    report = length_bias_report(*pair_lengths(pairs))
    assert report["n"] == 4000
    assert report["frac_chosen_longer"] == pytest.approx(0.8, abs=0.02)
    assert report["correlation"] > 0.3
    assert report["coefficient"] > 10 * report["coefficient_se"] > 0


def test_unbiased_pairs_have_no_length_signal():
    report = length_bias_report(*pair_lengths(biased_pairs(p_longer=0.5, seed=1)))
    assert report["frac_chosen_longer"] == pytest.approx(0.5, abs=0.03)
    assert abs(report["coefficient"]) < 3 * report["coefficient_se"]
    assert abs(report["correlation"]) < 0.05


def test_coefficient_does_not_depend_on_orientation_seed_beyond_std():
    """Flipping a pair flips feature and label, so only std(delta) moves with the seed."""
    lengths = pair_lengths(biased_pairs(n=2000))
    coefficients = [length_bias_report(*lengths, seed=s)["coefficient"] for s in range(3)]
    assert max(coefficients) - min(coefficients) < 0.05 * abs(coefficients[0])


def test_balance_removes_the_bias():
    pairs = biased_pairs()
    balanced, report = debias(pairs, "balance", bins=10, seed=0)
    assert report["before"]["frac_chosen_longer"] == pytest.approx(0.8, abs=0.02)
    after = report["after"]
    assert after["frac_chosen_longer"] == pytest.approx(0.5, abs=0.01)
    assert abs(after["coefficient"]) < 3 * after["coefficient_se"]
    assert abs(after["correlation"]) < 0.05
    assert report["kept"] == len(balanced) < len(pairs) and report["dropped"] == len(pairs) - len(balanced)
    again, _ = debias(pairs, "balance", bins=10, seed=0)
    assert again["chosen"] == balanced["chosen"]  # seeded


def test_balance_keeps_ties_and_equal_counts_per_bin():
    len_chosen = np.array([5, 10, 3, 7, 7, 50, 1, 60])
    len_rejected = np.array([1, 2, 9, 7, 7, 10, 90, 20])
    keep = balance_indices(len_chosen, len_rejected, bins=1, seed=0)
    delta = len_chosen[keep] - len_rejected[keep]
    assert {3, 4} <= set(keep.tolist())  # equal lengths are kept
    assert (delta > 0).sum() == (delta < 0).sum() == 2  # 2 chosen-shorter pairs exist


def test_ratio_cap_is_enforced():
    pairs = biased_pairs(n=500)
    capped, report = debias(pairs, "ratio_cap", max_ratio=1.5)
    lc, lr = pair_lengths(capped)
    assert np.all(np.maximum(lc, lr) / np.minimum(lc, lr) <= 1.5)
    all_c, all_r = pair_lengths(pairs)
    assert len(capped) == int(np.sum(np.maximum(all_c, all_r) <= 1.5 * np.minimum(all_c, all_r)))
    assert report["max_ratio"] == 1.5
    np.testing.assert_array_equal(ratio_cap_indices(np.array([0, 0, 4]), np.array([0, 3, 2]), 2.0), [0, 2])
    with pytest.raises(ValueError, match="max_ratio must be >= 1"):
        ratio_cap_indices(all_c, all_r, 0.5)


def test_length_match_picks_closest_rejected():
    pairs = datasets.Dataset.from_dict(
        {
            "prompt": ["p1", "p1", "p1", "p2", "p1"],
            "chosen": ["c" * 50, "c" * 50, "c" * 50, "c" * 20, "d" * 10],
            "rejected": ["r" * 10, "r" * 45, "r" * 80, "r" * 90, "r" * 12],
            "source": ["a", "b", "c", "d", "e"],
        }
    )
    matched, report = debias(pairs, "length_match")
    assert matched["source"] == ["b", "d", "e"]  # p1/c*50 -> the 45-char rejected; others are alone
    assert report["dropped"] == 2


def test_length_match_on_conversational_pairs():
    def msg(role: str, text: str) -> list[dict]:
        return [{"role": role, "content": text}]

    pairs = datasets.Dataset.from_dict(
        {
            "prompt": [msg("user", "hi")] * 3,
            "chosen": [msg("assistant", "x" * 30)] * 3,
            "rejected": [msg("assistant", "y" * k) for k in (5, 29, 100)],
        }
    )
    matched, _ = debias(pairs, "length_match")
    assert [m[0]["content"] for m in matched["rejected"]] == ["y" * 29]


def test_token_lengths_use_the_tokenizer(tiny_tokenizer):
    pairs = datasets.Dataset.from_dict({"prompt": ["p"], "chosen": ["éé"], "rejected": ["abc"]})
    assert [x.tolist() for x in pair_lengths(pairs)] == [[2], [3]]
    # byte-level tokenizer: é is 2 bytes, so 2 tokens
    assert [x.tolist() for x in pair_lengths(pairs, tiny_tokenizer)] == [[4], [3]]


def test_undefined_statistics_are_none():
    report = length_bias_report(np.array([5, 6, 7]), np.array([1, 2, 3]))
    assert report["frac_chosen_longer"] == 1.0 and report["coefficient"] is None  # separable: no finite MLE
    tied = length_bias_report(np.array([4, 4]), np.array([4, 4]))
    assert tied["correlation"] is None and tied["coefficient"] is None


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="unknown debias strategy 'shortest'"):
        debias(biased_pairs(n=10), "shortest")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_debias_file_writes_pairs_and_report(tmp_path, suffix):
    source = tmp_path / "pairs.jsonl"
    biased_pairs(n=300).to_json(str(source), lines=True)
    out = tmp_path / "out" / f"balanced{suffix}"
    report = debias_file(source, out, "balance", bins=4, seed=3)
    expected, _ = debias(load_pairs(source), "balance", bins=4, seed=3)
    written = load_pairs(out)
    assert len(written) == report["kept"] == len(expected)
    assert written["chosen"] == expected["chosen"]
    assert report_path(out) == tmp_path / "out" / "balanced.report.json"
    assert json.loads(report_path(out).read_text()) == report
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, "balanced.report.json"]
    )  # no temp files
    with pytest.raises(ValueError, match=r"must end in .jsonl or .parquet"):
        debias_file(source, tmp_path / "out.csv")


def test_cli_debias_writes_and_prints(tmp_path, capsys):
    source, out = tmp_path / "pairs.jsonl", tmp_path / "capped.parquet"
    biased_pairs(n=200).to_json(str(source), lines=True)
    parser = argparse.ArgumentParser(prog="prefopt")
    data_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "data",
            "debias",
            str(source),
            "--out",
            str(out),
            "--strategy",
            "ratio_cap",
            "--max-ratio",
            "1.2",
            "--json",
        ]
    )
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(report_path(out).read_text())
    assert printed["max_ratio"] == 1.2 and len(load_pairs(out)) == printed["kept"]
