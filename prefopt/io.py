"""Atomic file writes and the JSON / JSON Lines / parquet writers and readers every command uses.

Every write goes to a temporary sibling (``.tmp-<name>-*``), is flushed and fsynced, and is moved
into place with ``os.replace``; a directory (a round's ``policy/``) is built in a temporary
sibling and renamed. A reader (or a resumed run) sees the old content or the complete new one,
never a torn file; an exception removes its temporary, and a killed process leaves only a
``.tmp-`` file that :meth:`prefopt.online.run_dir.RunDir.clean_temporaries` removes.

Fault injection for resume tests: ``PREFOPT_ROUNDS_FAULT=<point>`` (``write:<file name>`` in the
middle of a file write, ``dir:<directory name>`` before a directory is renamed, and the rounds'
own ``<round>:<step>:<when>`` points) makes :func:`fault_point` end the process with
``os._exit(75)`` there, as a kill would; ``PREFOPT_ROUNDS_FAULT_MODE=raise`` raises
:class:`InjectedFault` instead (in-process tests).

Readers name the file (and the row of a JSON Lines file) of corrupt content in a
:class:`CorruptFileError`, a :class:`~prefopt.errors.UserError` the command line prints as one
line. Standard library only at import time (pyarrow is imported by the parquet writer).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from prefopt.errors import UserError

TMP_PREFIX = ".tmp-"
FAULT_ENV = "PREFOPT_ROUNDS_FAULT"
FAULT_EXIT_CODE = 75
PARQUET_SUFFIX = ".parquet"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class InjectedFault(RuntimeError):
    """Raised at the fault point named by ``PREFOPT_ROUNDS_FAULT`` when the mode is ``raise``."""


class CorruptFileError(UserError):
    """A JSON / JSON Lines file that cannot be parsed; the message names the file and the row."""


def fault_point(name: str) -> None:
    """Simulate a kill at ``name`` when ``$PREFOPT_ROUNDS_FAULT`` names it (tests only)."""
    if os.environ.get(FAULT_ENV) != name:
        return
    if os.environ.get(f"{FAULT_ENV}_MODE") == "raise":
        raise InjectedFault(f"injected fault at {name}")
    os._exit(FAULT_EXIT_CODE)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write; on success it replaces ``path``.

    For writers that take a file name (parquet, safetensors, matplotlib). The temporary is
    fsynced before the rename and gets the usual permissions (``0666 & ~umask``); on an
    exception it is removed and ``path`` is left as it was. ``write:<name>`` is a fault point
    just before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        fault_point(f"write:{path.name}")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    The fault point ``write:<name>`` fires after the first half is written and flushed, so a
    kill there leaves a torn temporary beside an intact ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            half = len(text) // 2
            handle.write(text[:half])
            handle.flush()
            fault_point(f"write:{path.name}")
            handle.write(text[half:])
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; on success it replaces ``target`` whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}-", dir=target.parent))
    try:
        yield tmp
        fault_point(f"dir:{target.name}")
        if target.exists():
            stale = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}stale-{target.name}-", dir=target.parent))
            os.replace(target, stale / target.name)
            shutil.rmtree(stale)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any, *, indent: int = 1) -> None:
    """Atomically write ``data`` as indented JSON (UTF-8, non-ASCII kept) plus a newline."""
    atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically write one JSON object per line (UTF-8, non-ASCII kept)."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_rows(path: str | os.PathLike, rows: Any) -> Path:
    """Atomically write rows as parquet (a ``.parquet`` path) or JSON Lines (any other path).

    ``rows`` is an iterable of dicts or a ``pyarrow.Table`` (written as is to parquet, so its
    schema is kept). Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    import pyarrow as pa  # imported here: the command line starts without pyarrow

    if path.suffix != PARQUET_SUFFIX:
        write_jsonl(path, rows.to_pylist() if isinstance(rows, pa.Table) else rows)
        return path
    import pyarrow.parquet as pq

    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def report_path(out: str | os.PathLike) -> Path:
    """Where a command that writes ``out`` puts its report: ``pairs.jsonl`` -> ``pairs.report.json``."""
    out = Path(out)
    return out.with_name(out.name.rsplit(".", 1)[0] + ".report.json")


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading bytes, decompressing a ``.gz`` file."""
    path = Path(path)
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def decode_utf8(raw: bytes) -> tuple[str | None, str | None]:
    """``(text, None)``, or ``(None, what is wrong)`` for bytes that are not UTF-8."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        bad = raw[err.start : err.start + 1]
        return None, f"byte {err.start} ({bad!r}) is not valid UTF-8; re-encode the file as UTF-8"


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    """``(line number, value, None)`` per non-blank line of a JSON Lines file (``.gz``: gzipped).

    A line that cannot be read yields ``(line number, None, (reason, message))`` with ``reason``
    ``"invalid_utf8"`` or ``"malformed_json"``, and reading goes on: the caller decides whether one
    bad line fails the file (:func:`read_jsonl`) or is reported with the others
    (:func:`prefopt.data.sources.read_rows`). Lines are split on ``\n`` only, so a U+2028 inside a
    string stays in its row.
    """
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            text, problem = decode_utf8(raw)
            if text is None:
                yield number, None, ("invalid_utf8", problem)
                continue
            try:
                value = json.loads(text.rstrip("\r\n"))  # so an error's column is on this line
            except json.JSONDecodeError as err:
                yield number, None, ("malformed_json", f"malformed JSON at column {err.colno}: {err.msg}")
                continue
            yield number, value, None


def read_json(path: str | os.PathLike, *, hint: str = "delete the file to recompute it") -> Any:
    """Read a JSON file; corrupt content raises :class:`CorruptFileError` naming the file and line."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CorruptFileError(
            f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}; {hint}"
        ) from err


def read_jsonl(path: str | os.PathLike, *, hint: str = "delete the file to recompute it") -> list[Any]:
    """Read JSON Lines (blank lines skipped); an unreadable line raises :class:`CorruptFileError` naming its row."""
    rows = []
    for number, value, problem in iter_jsonl(path):
        if problem is not None:
            raise CorruptFileError(f"{path}, row {number}: {problem[1]}; {hint}")
        rows.append(value)
    return rows
