"""Read raw rows from a file, a saved dataset directory or a Hub dataset, keeping row numbers.

The one row reader: preference pairs (:mod:`prefopt.data.validate`), annotation candidates,
verifiable problems (:mod:`prefopt.online.problems`) and judge annotations
(:mod:`prefopt.evaluate.lc_winrate`) all read through :func:`read_rows`. jsonl (optionally
gzipped) is read in binary and decoded line by line, so undecodable bytes and malformed JSON are
:class:`~prefopt.data.errors.Problem` s with their line number instead of aborting the whole read;
a source that cannot be read at all (a corrupt parquet file, an empty file, a missing split)
raises :class:`~prefopt.data.errors.DataSourceError`, and a missing file ``FileNotFoundError``.
Callers that cannot use partial data call :meth:`RawRows.raise_if_problems`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.data.errors import DataSourceError, DataValidationError, Problem
from prefopt.io import decode_utf8, iter_jsonl, open_binary

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

    def raise_if_problems(self, hint: str = "Fix or remove these rows and rerun.") -> None:
        """Raise :class:`DataValidationError` listing every row that could not be read, if any."""
        if self.problems:
            raise DataValidationError(self.problems, n_rows=self.n_rows, hint=hint)


def is_local_file(source: str | Path) -> bool:
    """Whether ``source`` names an existing local file (``~`` expanded) rather than a directory or Hub name."""
    return Path(source).expanduser().is_file()


def read_rows(source: str | Path, *, split: str | None = None, config_name: str | None = None) -> RawRows:
    """Read every row of ``source``; a source with no rows at all raises :class:`DataSourceError`.

    ``source`` is a ``.jsonl``/``.jsonl.gz``/``.ndjson``, ``.json``/``.json.gz`` (an array of
    objects) or ``.parquet`` file, a directory written by ``Dataset.save_to_disk`` /
    ``DatasetDict.save_to_disk``, or otherwise the name of a Hugging Face Hub dataset (loaded with
    ``datasets.load_dataset(source, config_name, split=split)``; GSM8K needs ``config_name="main"``).
    ``split`` picks a split of a ``DatasetDict``; a file has no splits, so ``split`` and
    ``config_name`` are errors there (:func:`is_local_file` tells a caller which kind it has).
    """
    raw = _read(Path(source).expanduser(), str(source), split, config_name)
    if not raw.rows and not raw.problems:
        raise DataSourceError(f"{raw.source}: contains no rows; an empty data file is an error")
    return raw


def _read(path: Path, name: str, split: str | None, config_name: str | None) -> RawRows:
    if config_name is not None and (path.is_dir() or path.is_file()):
        raise DataSourceError(f"{name}: config_name={config_name!r} only applies to Hub datasets")
    if path.is_dir():
        import datasets  # imported here: reading plain files does not need it

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
            return _read_parquet(path)
        raise DataSourceError(
            f"{name}: unknown file type; use one of {', '.join(JSONL_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES)}"
        )
    if path.suffix or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{name}: no such file or directory")
    import datasets

    return _from_dataset(datasets.load_dataset(name, config_name, split=split), name, split)


def _read_jsonl(path: Path) -> RawRows:
    out = RawRows(str(path))
    for line_no, value, problem in iter_jsonl(path):
        if problem is None:
            out.rows.append((line_no, value))
            continue
        reason, message = problem
        if reason == "malformed_json":
            message += "; each line must be one JSON object"
        out.problems.append(Problem(out.source, line_no, None, reason, message))
    return out


def _read_json(path: Path) -> RawRows:
    out = RawRows(str(path))
    with open_binary(path) as handle:
        raw = handle.read()
    text, message = decode_utf8(raw)
    if text is None:
        out.problems.append(Problem(out.source, None, None, "invalid_utf8", message))
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


def _read_parquet(path: Path) -> RawRows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataSourceError(f"{path}: not a readable parquet file ({err}); rewrite or replace it") from None
    return RawRows(str(path), list(enumerate(table.to_pylist(), start=1)))


def _from_dataset(data: Any, name: str, split: str | None) -> RawRows:
    import datasets

    if isinstance(data, datasets.DatasetDict):
        if split is None and len(data) == 1:
            split = next(iter(data))
        if split not in data:
            raise DataSourceError(f"{name}: pass split=... (--split), one of {sorted(data)}")
        data = data[split]
    source = name if split is None else f"{name}[{split}]"
    return RawRows(source, list(enumerate(data, start=1)))
