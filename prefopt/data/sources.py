"""Read raw rows from a file, a saved dataset directory or a Hub dataset, keeping row numbers.

jsonl (optionally gzipped) is read in binary and decoded line by line, so undecodable bytes and
malformed JSON are reported with their line number instead of aborting the whole read.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from prefopt.data.errors import DataSourceError, Problem

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
JSON_SUFFIXES = (".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)


@dataclass
class RawRows:
    """Rows read from ``source``: ``(1-based row, value)`` pairs plus problems found while reading."""

    source: str
    rows: list[tuple[int, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        """Rows seen, including those that could not be read."""
        return len(self.rows) + len({p.row for p in self.problems})


def read_rows(source: str | Path, *, split: str | None = None) -> RawRows:
    """Read every row of ``source``.

    ``source`` is a ``.jsonl``/``.jsonl.gz``/``.ndjson``, ``.json``/``.json.gz`` (an array of
    objects) or ``.parquet`` file, a directory written by ``Dataset.save_to_disk`` /
    ``DatasetDict.save_to_disk``, or otherwise the name of a Hugging Face Hub dataset (loaded with
    ``datasets.load_dataset``). ``split`` picks a split of a ``DatasetDict``.
    """
    path = Path(source)
    name = str(source)
    if path.is_dir():
        data = datasets.load_from_disk(str(path))
        if split is not None and isinstance(data, datasets.Dataset):
            raise DataSourceError(f"{name}: holds a single Dataset without splits; drop split={split!r}")
        return _from_dataset(data, name, split)
    if path.is_file():
        if split is not None:
            raise DataSourceError(f"{name}: split={split!r} only applies to dataset directories and Hub datasets")
        lower = path.name.lower()
        if lower.endswith(JSONL_SUFFIXES):
            return _read_jsonl(path)
        if lower.endswith(JSON_SUFFIXES):
            return _read_json(path)
        if lower.endswith(PARQUET_SUFFIXES):
            return _from_dataset(datasets.Dataset.from_parquet(str(path)), name, None)
        raise DataSourceError(
            f"{name}: unknown file type; use one of {', '.join(JSONL_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES)}"
        )
    if path.suffix or name.startswith((".", "/")):
        raise FileNotFoundError(f"{name}: no such file or directory")
    return _from_dataset(datasets.load_dataset(name, split=split), name, split)


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _decode(raw: bytes, source: str, row: int) -> tuple[str | None, Problem | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return None, Problem(
            source,
            row,
            None,
            "invalid_utf8",
            f"byte {err.start} ({raw[err.start : err.start + 1]!r}) is not valid UTF-8; re-encode the file as UTF-8",
        )


def _read_jsonl(path: Path) -> RawRows:
    out = RawRows(str(path))
    with _open_binary(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            text, problem = _decode(raw, out.source, line_no)
            if problem is not None:
                out.problems.append(problem)
                continue
            try:
                out.rows.append((line_no, json.loads(text)))
            except json.JSONDecodeError as err:
                out.problems.append(
                    Problem(
                        out.source,
                        line_no,
                        None,
                        "malformed_json",
                        f"malformed JSON at column {err.colno}: {err.msg}; each line must be one JSON object",
                    )
                )
    return out


def _read_json(path: Path) -> RawRows:
    out = RawRows(str(path))
    with _open_binary(path) as handle:
        raw = handle.read()
    text, problem = _decode(raw, out.source, None)
    if problem is not None:
        out.problems.append(problem)
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # one object per line under a .json name
            return _read_jsonl(path)
        out.problems.append(
            Problem(
                out.source,
                err.lineno,
                None,
                "malformed_json",
                f"malformed JSON at column {err.colno}: {err.msg}",
            )
        )
        return out
    if not isinstance(data, list):
        message = (
            f"expected a JSON array of pair objects, got a {type(data).__name__}; or use one object per line"
        )
        out.problems.append(Problem(out.source, None, None, "wrong_type", message))
        return out
    out.rows = list(enumerate(data, start=1))
    return out


def _from_dataset(data: datasets.Dataset | datasets.DatasetDict, name: str, split: str | None) -> RawRows:
    if isinstance(data, datasets.DatasetDict):
        if split is None and len(data) == 1:
            split = next(iter(data))
        if split not in data:
            raise DataSourceError(f"{name}: pass split=... (--split), one of {sorted(data)}")
        data = data[split]
    source = name if split is None else f"{name}[{split}]"
    return RawRows(source, list(enumerate(data, start=1)))
