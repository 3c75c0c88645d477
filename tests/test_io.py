"""prefopt.io: atomic files and directories under injected faults, the writers, and readers that name corrupt rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import temporaries

from prefopt.errors import UserError
from prefopt.io import (
    FAULT_ENV,
    FAULT_EXIT_CODE,
    InjectedFault,
    atomic_directory,
    atomic_path,
    atomic_write_text,
    fault_point,
    iter_jsonl,
    read_json,
    read_jsonl,
    report_path,
    write_json,
    write_jsonl,
    write_rows,
)
from prefopt.online.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]


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
    # A real process exit (os._exit, as a kill) in the middle of the write; prefopt.io imports only
    # the standard library, so the child starts in well under a second.
    script = "import sys, prefopt.io as io; io.atomic_write_text(sys.argv[1], 'new ' * 1000)\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), FAULT_ENV: "write:scored.jsonl"}
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
    with pytest.raises(ValueError, match=r"pairs\.jsonl, row 3: malformed JSON at column 8.*delete the file"):
        read_jsonl(bad)
    (tmp_path / "eval.json").write_text("{")
    with pytest.raises(ValueError, match=r"eval\.json: malformed JSON at line 1 column 2"):
        read_json(tmp_path / "eval.json")




def test_atomic_path_replaces_only_on_success_with_the_usual_permissions(tmp_path, raise_at):
    path = tmp_path / "sub" / "plot.png"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".tmp-plot.png-")
        tmp.write_bytes(b"old")
    assert path.read_bytes() == b"old"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    raise_at("write:plot.png")
    with pytest.raises(InjectedFault), atomic_path(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"old" and temporaries(tmp_path) == []


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_write_rows_picks_the_format_by_suffix_and_keeps_a_table_schema(tmp_path, suffix):
    rows = [{"prompt": "p", "chosen": "ünï", "score": 1.5}, {"prompt": "q", "chosen": "c", "score": None}]
    path = write_rows(tmp_path / f"pairs{suffix}", rows)
    assert path == tmp_path / f"pairs{suffix}"
    read = pq.read_table(path).to_pylist() if suffix == ".parquet" else read_jsonl(path)
    assert read == rows
    table = pa.table({"ids": pa.array([[1, 2], []], type=pa.list_(pa.int32()))})
    write_rows(path, table)  # replaces the file
    if suffix == ".parquet":
        assert pq.read_table(path).schema.field("ids").type == pa.list_(pa.int32())
    else:
        assert read_jsonl(path) == [{"ids": [1, 2]}, {"ids": []}]
    assert temporaries(tmp_path) == []


def test_report_path_sits_next_to_the_output():
    assert report_path("out/pairs.jsonl") == Path("out/pairs.report.json")
    assert report_path("out/pairs.v2.parquet") == Path("out/pairs.v2.report.json")


def test_corrupt_files_are_user_errors_naming_file_and_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]  # blank lines are skipped
    path.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(UserError, match=r"rows\.jsonl, row 2: malformed JSON.*fix it"):
        read_jsonl(path, hint="fix it")


def test_iter_jsonl_reports_bad_lines_and_reads_on(tmp_path):
    import gzip

    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b'{"a": "x\xe2\x80\xa8y"}\n\n{"a": \n\xff\n[1]\n')
    got = list(iter_jsonl(path))
    assert got[0] == (1, {"a": "x\u2028y"}, None)  # U+2028 does not split the row
    assert got[1][:2] == (3, None) and got[1][2][0] == "malformed_json"
    assert got[2] == (4, None, ("invalid_utf8", "byte 0 (b'\\xff') is not valid UTF-8; re-encode the file as UTF-8"))
    assert got[3] == (5, [1], None)
