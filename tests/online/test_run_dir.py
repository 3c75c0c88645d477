"""The rounds run directory: atomic files and directories under injected faults, JSON errors, the manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefopt.online import run_dir
from prefopt.online.run_dir import (
    FAULT_ENV,
    FAULT_EXIT_CODE,
    InjectedFault,
    RunDir,
    atomic_directory,
    atomic_write_text,
    fault_point,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)


@pytest.fixture()
def raise_at(monkeypatch):
    """``raise_at(point)``: make ``fault_point(point)`` raise :class:`InjectedFault`."""
    monkeypatch.setenv(f"{FAULT_ENV}_MODE", "raise")
    return lambda point: monkeypatch.setenv(FAULT_ENV, point)


def temporaries(root: Path) -> list[Path]:
    return sorted(root.rglob(".tmp-*"))


def test_fault_point_fires_only_at_the_named_point(raise_at):
    fault_point("1:sample:start")  # no fault configured: nothing happens
    raise_at("1:train:start")
    fault_point("1:sample:start")
    with pytest.raises(InjectedFault, match="1:train:start"):
        fault_point("1:train:start")


def test_atomic_write_keeps_the_old_content_when_the_write_is_interrupted(tmp_path, raise_at):
    path = tmp_path / "rollouts.jsonl"
    atomic_write_text(path, "old content\n")
    raise_at("write:rollouts.jsonl")
    with pytest.raises(InjectedFault):
        atomic_write_text(path, "new content that is half written when the fault fires\n")
    assert path.read_text() == "old content\n"
    assert temporaries(tmp_path) == []  # an exception removes its own temporary
    atomic_write_text(tmp_path / "other.jsonl", "unaffected\n")  # the fault names another file
    assert (tmp_path / "other.jsonl").read_text() == "unaffected\n"


def test_a_killed_write_leaves_the_old_file_and_a_temporary_that_clean_removes(tmp_path):
    path = tmp_path / "round_001" / "scored.jsonl"
    atomic_write_text(path, "old\n")
    # A real process exit (os._exit, as a kill) in the middle of the write; the module is loaded from
    # its file (standard library imports only), so the child starts in well under a second.
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('run_dir', {run_dir.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "module.atomic_write_text(module.Path(sys.argv[1]), 'new ' * 1000)\n"
    )
    env = {**os.environ, FAULT_ENV: "write:scored.jsonl"}
    env.pop(f"{FAULT_ENV}_MODE", None)
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == FAULT_EXIT_CODE, done.stderr
    assert path.read_text() == "old\n"
    leftovers = temporaries(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].read_text() == "new " * 500  # the torn half
    RunDir(tmp_path).clean_temporaries()
    assert temporaries(tmp_path) == [] and path.read_text() == "old\n"


def test_atomic_directory_replaces_the_target_only_on_success(tmp_path, raise_at):
    target = tmp_path / "round_001" / "policy"
    with atomic_directory(target) as tmp:
        (tmp / "old.bin").write_text("old")
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]

    with pytest.raises(RuntimeError, match="boom"), atomic_directory(target) as tmp:
        (tmp / "new.bin").write_text("new")
        raise RuntimeError("boom")
    raise_at("dir:policy")
    with pytest.raises(InjectedFault), atomic_directory(target) as tmp:
        (tmp / "new.bin").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    assert temporaries(tmp_path) == []

    raise_at("dir:other")
    with atomic_directory(target) as tmp:
        (tmp / "new.bin").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]  # replaced whole, not merged
    assert temporaries(tmp_path) == []


def test_json_and_jsonl_round_trip_and_name_corrupt_rows(tmp_path):
    rows = [{"id": "a", "text": "ünïcödé ✓"}, {"id": "b", "n": [1, 2]}]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    assert read_jsonl(tmp_path / "rows.jsonl") == rows
    assert "✓" in (tmp_path / "rows.jsonl").read_text(encoding="utf-8")  # not escaped
    write_json(tmp_path / "data.json", {"x": 1.5})
    assert read_json(tmp_path / "data.json") == {"x": 1.5}

    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"id": "a"}\n{"id": "b"}\n{"id": \n')
    with pytest.raises(ValueError, match=r"pairs\.jsonl row 3: not valid JSON.*delete the file"):
        read_jsonl(bad)
    (tmp_path / "eval.json").write_text("{")
    with pytest.raises(ValueError, match=r"eval\.json: not valid JSON"):
        read_json(tmp_path / "eval.json")


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
