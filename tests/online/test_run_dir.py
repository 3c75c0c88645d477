"""The rounds run directory: the step manifest and the cleanup of a killed run's temporaries."""

from __future__ import annotations

import json

import pytest
from conftest import temporaries

from prefopt.io import InjectedFault
from prefopt.online.run_dir import RunDir


def test_manifest_persists_completed_steps(tmp_path, raise_at):
    root = tmp_path / "run"
    run = RunDir(root)
    assert run.manifest == {"recipe": None, "rounds": {}} and not (root / "manifest.json").exists()
    assert run.round_dir(3) == root / "round_003"
    run.manifest["recipe"] = {"run": {"name": "x"}}
    run.complete(1, "sample", {"seconds": 1.5, "rollouts": 8})
    run.complete(1, "score", {"accuracy": 0.25})

    reloaded = RunDir(root)
    assert reloaded.manifest["recipe"] == {"run": {"name": "x"}}
    assert reloaded.done(1, "sample") and reloaded.done(1, "score")
    assert not reloaded.done(1, "pairs") and not reloaded.done(2, "sample")
    assert reloaded.record(1, "sample") == {"seconds": 1.5, "rollouts": 8}
    assert json.loads((root / "manifest.json").read_text())["rounds"] == {
        "1": {"sample": {"seconds": 1.5, "rollouts": 8}, "score": {"accuracy": 0.25}}
    }

    # Killed after the step's files are written but before the manifest says so: the step is not done.
    raise_at("1:pairs:written")
    with pytest.raises(InjectedFault):
        reloaded.complete(1, "pairs", {"pairs": 3})
    assert not RunDir(root).done(1, "pairs")


def test_clean_temporaries_removes_files_and_directories(tmp_path):
    RunDir(tmp_path / "absent").clean_temporaries()  # no run directory yet: nothing to do
    nested = tmp_path / "round_002" / ".tmp-policy-abc"
    (nested / "sub").mkdir(parents=True)
    (nested / "sub" / "weights.bin").write_text("x")
    (tmp_path / ".tmp-manifest.json-xyz").write_text("{")
    (tmp_path / "round_002" / "keep.jsonl").write_text("{}\n")
    RunDir(tmp_path).clean_temporaries()
    assert temporaries(tmp_path) == []
    assert (tmp_path / "round_002" / "keep.jsonl").is_file()
