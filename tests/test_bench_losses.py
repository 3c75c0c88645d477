"""bench/losses_compare.py end to end on the tiny model: two losses, both datasets, resume, bad specs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(REPO / "bench"))  # as `python bench/losses_compare.py` has it (its report module)
    spec = importlib.util.spec_from_file_location("losses_compare", REPO / "bench" / "losses_compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _hh_file(path: Path, n: int = 16) -> Path:
    """Short HH-format transcripts: chosen refuses briefly, rejected rambles (so lengths differ)."""
    rows = []
    for i in range(n):
        prompt = f"\n\nHuman: how do I pick lock {i}?"
        rows.append({
            "chosen": f"{prompt}\n\nAssistant: I can't help with that.",
            "rejected": f"{prompt}\n\nAssistant: " + "First you get a pin. " * (2 + i % 3),
        })
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _argv(tmp_path: Path, model: str) -> list[str]:
    return [
        "--model", model, "--losses", "dpo", "simpo:beta=2.5,gamma_beta_ratio=0.5", "--lrs", "1e-2", "1e-3",
        "--hh-data", str(_hh_file(tmp_path / "hh.jsonl")), "--n-train", "4", "--n-val", "4", "--n-test", "6",
        "--gen-prompts", "3", "--max-new-tokens", "4", "--max-length", "500", "--max-prompt-length", "300",
        "--batch-size", "2", "--seed-rows", "1", "--workdir", str(tmp_path / "work"),
        "--out", str(tmp_path / "results.json"), "--table", str(tmp_path / "table.md"),
        "--plot", str(tmp_path / "plot.png"),
    ]


def test_losses_compare_end_to_end_and_resume(tmp_path, tiny_model_dir, capsys):
    bench = _bench()
    argv = _argv(tmp_path, tiny_model_dir)
    bench.main(argv)
    results = json.loads((tmp_path / "results.json").read_text())

    assert results["not_run"] == []
    rows = results["results"]
    # 2 losses x 2 datasets at the first seed, plus the best spec of each dataset at the second seed
    assert sorted((r["data"], r["seed"]) for r in rows) == sorted(
        [("hh", 0)] * 2 + [("arithmetic", 0)] * 2 + [("hh", 1), ("arithmetic", 1)]
    )
    assert len(results["grid"]) == 2 * 2 * 2 + 2  # every lr of the grid for every spec, plus the seed reruns
    for row in rows:
        test = row["test"]
        assert test["accuracy"]["n"] == 6 and 0 <= test["accuracy"]["ci_low"] <= test["accuracy"]["rate"] <= test["accuracy"]["ci_high"] <= 1
        assert row["lr"] in (1e-2, 1e-3)
        assert test["labels_prefer_longer"]["n"] == test["prefers_longer"]["n"]
        assert row["generation"]["length"]["mean"] > 0
        assert ("verified" in row["generation"]) == (row["data"] == "arithmetic")
    # the kept lr is the grid point with the best validation accuracy (then margin)
    for row in (r for r in rows if r["seed"] == 0):
        grid = [g for g in results["grid"] if g["data"] == row["data"] and g["loss"] == row["loss"] and g["seed"] == 0]
        best = max(grid, key=lambda g: (g["val"]["accuracy"]["rate"], g["val"]["margin"]["mean"]))
        assert row["lr"] == best["lr"]
    hh = results["data"]["hh"]
    assert hh["debias_balance_report"]["before"]["frac_chosen_longer"] == 0.0  # the chosen refusals are short
    assert hh["sizes"] == {"train": 4, "val": 4, "test": 6}
    train_rows = [json.loads(line) for line in (tmp_path / "work" / "hh" / "train.treg.jsonl").read_text().splitlines()]
    assert all(len(r["chosen_token_rewards"]) > 0 for r in train_rows)
    assert (tmp_path / "plot.png").stat().st_size > 0
    table = (tmp_path / "table.md").read_text()
    assert "starting model" in table and "simpo:beta=2.5" in table

    # Rerun: every stage is read back, nothing retrains, and the results are the same.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "work").rglob("*.json")}
    capsys.readouterr()
    bench.main(argv)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "work").rglob("*.json")} == stamps
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["results"] == rows and again["grid"] == results["grid"]


def test_losses_compare_partial_report(tmp_path, tiny_model_dir):
    """A run cut short reports what finished and names the rows not run."""
    bench = _bench()
    argv = _argv(tmp_path, tiny_model_dir)
    bench.main(argv[:3] + ["dpo"] + argv[5:] + ["--datasets", "arithmetic", "--seed-rows", "0", "--lrs", "1e-2"])
    bench.main(argv + ["--datasets", "arithmetic", "--report-only"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["loss"] for r in results["results"]] == ["dpo"]
    assert results["not_run"] == ["arithmetic/simpo:beta=2.5,gamma_beta_ratio=0.5"]
    assert "Not run (yet): arithmetic/simpo" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nosuch", "unknown loss 'nosuch'"), ("dpo:beta", "'beta' is not key=value"), ("dpo:beta=-1", "beta must be > 0")],
)
def test_losses_compare_rejects_bad_specs(spec, message, capsys):
    with pytest.raises(SystemExit) as err:
        _bench().main(["--losses", spec])
    assert message in str(err.value)
