"""The run directory of ``prefopt rounds``: atomic files and directories, and the step manifest.

Every file is written to a temporary sibling, flushed, fsynced and moved into place with
``os.replace``; a directory (a round's ``policy/``) is built in a temporary sibling and renamed.
So a reader (or a resumed run) sees either the old content or the complete new one, never a torn
file. ``manifest.json`` records, per round, the steps completed and what they measured; a step
counts as done only once its files are in place *and* the manifest says so, so a crash between
the two redoes just that step (overwriting its files atomically). Leftover temporaries of a
killed run start with ``.tmp-`` and are removed by :meth:`RunDir.clean_temporaries`.

Fault injection for resume tests: ``PREFOPT_ROUNDS_FAULT=<point>`` (e.g. ``1:train:start``,
``1:sample:written``, ``write:rollouts.jsonl``, ``dir:policy``) makes :func:`fault_point` end the process with
``os._exit(75)`` at that point, as a kill would; ``PREFOPT_ROUNDS_FAULT_MODE=raise`` raises
:class:`InjectedFault` instead (in-process tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
FAULT_ENV = "PREFOPT_ROUNDS_FAULT"
FAULT_EXIT_CODE = 75
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class InjectedFault(RuntimeError):
    """Raised at the fault point named by ``PREFOPT_ROUNDS_FAULT`` when the mode is ``raise``."""


def fault_point(name: str) -> None:
    """Simulate a kill at ``name`` when ``$PREFOPT_ROUNDS_FAULT`` names it (tests only)."""
    if os.environ.get(FAULT_ENV) != name:
        return
    if os.environ.get(f"{FAULT_ENV}_MODE") == "raise":
        raise InjectedFault(f"injected fault at {name}")
    os._exit(FAULT_EXIT_CODE)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory + ``os.replace``)."""
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
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file, naming the file in the error if it is corrupt."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete the file to recompute it") from err


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically write one JSON object per line."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON Lines, naming the file and row of a corrupt line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} row {number}: not valid JSON ({err.msg}); delete the file to recompute it") from err
    return rows


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; on success it replaces ``target`` by rename."""
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


class RunDir:
    """``<root>/manifest.json`` plus ``round_NNN/`` directories; the manifest is reloaded on creation.

    Manifest layout: ``{"recipe": {...resolved recipe...}, "rounds": {"1": {"sample": {...}, ...}}}``,
    where each completed step maps to the numbers it recorded (timings, counts).

    ``writer=False`` (every process but the main one of a multi-process run) keeps the manifest in
    memory only: :meth:`complete` and :meth:`save` write nothing, and :meth:`reload` reads what the
    writer saved.
    """

    def __init__(self, root: Path, writer: bool = True):
        self.root = Path(root)
        self.writer = writer
        self.manifest: dict[str, Any] = {}
        self.reload()

    def reload(self) -> None:
        """Read ``manifest.json`` again (an empty manifest when there is none yet)."""
        path = self.root / MANIFEST
        self.manifest = read_json(path) if path.is_file() else {"recipe": None, "rounds": {}}

    def round_dir(self, index: int) -> Path:
        """``round_NNN/`` for round ``index``."""
        return self.root / f"round_{index:03d}"

    def done(self, index: int, step: str) -> bool:
        """Whether ``step`` of round ``index`` completed."""
        return step in self.manifest["rounds"].get(str(index), {})

    def record(self, index: int, step: str) -> dict[str, Any]:
        """What a completed step recorded."""
        return self.manifest["rounds"][str(index)][step]

    def complete(self, index: int, step: str, record: dict[str, Any]) -> None:
        """Mark ``step`` of round ``index`` complete (after its files are in place) and save the manifest."""
        fault_point(f"{index}:{step}:written")
        self.manifest["rounds"].setdefault(str(index), {})[step] = record
        self.save()

    def save(self) -> None:
        """Write the manifest atomically (the writer only)."""
        if self.writer:
            write_json(self.root / MANIFEST, self.manifest)

    def clean_temporaries(self) -> None:
        """Remove temporaries a killed run left behind (``.tmp-*`` files and directories; the writer only)."""
        if not self.writer or not self.root.is_dir():
            return
        for path in self.root.rglob(f"{TMP_PREFIX}*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
