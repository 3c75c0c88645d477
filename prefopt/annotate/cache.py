"""On-disk cache of per-response scores: append-only JSON Lines with atomic finalization.

Each line is ``{"key": <sha256 of the scorer fingerprint + formatted texts>, "logp": float, "n_tokens": int}``.
Scores are appended (and fsynced) after every batch, so a run killed at any moment keeps all
finished batches; a half-written last line is ignored on the next load. :meth:`ScoreCache.finalize`
rewrites the file without duplicates, atomically (:func:`prefopt.io.write_jsonl`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from prefopt.io import write_jsonl

logger = logging.getLogger(__name__)


class ScoreCache:
    """Scores keyed by a hex digest; ``path`` is created on the first append."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._scores: dict[str, tuple[float, int]] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        bad = 0
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    self._scores[record["key"]] = (float(record["logp"]), int(record["n_tokens"]))
                except (ValueError, KeyError, TypeError):
                    bad += 1
        if bad:
            logger.warning(
                "%s: ignored %d unreadable line(s) (an interrupted write); they are recomputed",
                self.path,
                bad,
            )

    def __len__(self) -> int:
        return len(self._scores)

    def lookup(self, keys: list[str]) -> dict[str, tuple[float, int]]:
        """The cached ``(logp, n_tokens)`` of those ``keys`` that are present."""
        return {k: self._scores[k] for k in keys if k in self._scores}

    def append(self, scores: dict[str, tuple[float, int]]) -> None:
        """Add scores and append them to the file, flushed and fsynced before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for key, score in scores.items():
                handle.write(json.dumps(self._record(key, score)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._scores.update(scores)

    def finalize(self) -> None:
        """Rewrite the file with one line per key, atomically (temporary file, then rename)."""
        if not self._scores:
            return
        write_jsonl(self.path, (self._record(key, score) for key, score in self._scores.items()))

    @staticmethod
    def _record(key: str, score: tuple[float, int]) -> dict[str, object]:
        return {"key": key, "logp": score[0], "n_tokens": score[1]}
