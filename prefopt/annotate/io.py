"""Candidate rows for ``prefopt annotate cdr --candidates`` (annotated pairs are written by :func:`prefopt.io.write_rows`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.data.errors import DataValidationError, Problem
from prefopt.data.sources import read_rows


def _check_prompt(prompt: Any) -> str | None:
    if isinstance(prompt, str) and prompt:
        return None
    if (
        isinstance(prompt, list)
        and prompt
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt
        )
    ):
        return None
    return "must be a non-empty string or a list of {role, content} messages"


def read_candidates(path: str | Path) -> list[dict[str, Any]]:
    """Rows ``{"prompt", "candidates": [str, ...], "id"?}`` from JSON Lines / JSON / parquet.

    Raises :class:`~prefopt.data.DataValidationError` naming the file, row and field of every
    malformed row.
    """
    raw = read_rows(path)
    problems = list(raw.problems)
    rows = []
    for number, row in raw.rows:
        if not isinstance(row, dict):
            problems.append(Problem(raw.source, number, None, "wrong_type", "expected a JSON object"))
            continue
        bad = []
        message = _check_prompt(row.get("prompt"))
        if message:
            bad.append(Problem(raw.source, number, "prompt", "bad_prompt", message))
        candidates = row.get("candidates")
        if (
            not isinstance(candidates, list)
            or len(candidates) < 2
            or not all(isinstance(c, str) for c in candidates)
        ):
            bad.append(
                Problem(
                    raw.source,
                    number,
                    "candidates",
                    "bad_candidates",
                    "must be a list of at least 2 response strings",
                )
            )
        problems.extend(bad)
        if not bad:
            rows.append({k: row[k] for k in ("id", "prompt", "candidates") if k in row})
    if problems:
        raise DataValidationError(problems, n_rows=raw.n_rows, hint="Fix these candidate rows and rerun.")
    return rows  # not empty: read_rows rejects a source without rows
