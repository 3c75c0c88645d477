"""The run directory of ``prefopt rounds``: ``round_NNN/`` directories and the step manifest.

Files and directories are written atomically by :mod:`prefopt.io` (a reader or a resumed run sees
the old content or the complete new one). ``manifest.json`` records, per round, the steps completed
and what they measured; a step counts as done only once its files are in place *and* the manifest
says so, so a crash between the two redoes just that step (overwriting its files atomically).
Leftover temporaries of a killed run start with ``.tmp-`` and are removed by
:meth:`RunDir.clean_temporaries`. The fault points for resume tests are :func:`prefopt.io.fault_point`'s.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefopt.io import TMP_PREFIX, fault_point, read_json, write_json

MANIFEST = "manifest.json"


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
