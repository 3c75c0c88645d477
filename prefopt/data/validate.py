"""Validate raw preference rows and load them as a normalized ``datasets.Dataset``.

:func:`validate_pairs` never raises on bad data: it returns a :class:`ValidationReport` with the
valid pairs and every problem. :func:`load_pairs` raises :class:`DataValidationError` when there
are problems, unless ``drop_invalid=True``, in which case it drops the bad rows and logs how many
were dropped and why.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from prefopt.data.errors import DataSourceError, DataValidationError, Problem
from prefopt.data.formats import FORMATS, Format, detect_format, normalize_row
from prefopt.data.sources import RawRows, read_rows
from prefopt.data.tokenize import encode_prompts

logger = logging.getLogger(__name__)

DROP_HINT = "Fix these rows, or pass drop_invalid=True (--drop-invalid) to drop them."


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_pairs`: the normalized valid pairs and the problems of the rest."""

    source: str
    format: str | None
    n_rows: int
    pairs: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_invalid(self) -> int:
        """Number of rows with at least one problem."""
        return self.n_rows - len(self.pairs)

    def dropped_by_reason(self) -> dict[str, int]:
        """Invalid rows per reason (a row with several problems counts under its first)."""
        first: dict[int | None, str] = {}
        for problem in self.problems:
            first.setdefault(problem.row, problem.reason)
        return dict(Counter(first.values()).most_common())

    def raise_if_invalid(self) -> None:
        """Raise :class:`DataValidationError` listing every problem, if there is any."""
        if self.problems:
            raise DataValidationError(self.problems, n_rows=self.n_rows, hint=DROP_HINT)


def _raw_rows(source: str | Path | Iterable[dict] | datasets.Dataset, split: str | None) -> RawRows:
    if isinstance(source, (str, Path)):
        return read_rows(source, split=split)
    name = "<dataset>" if isinstance(source, datasets.Dataset) else "<rows>"
    return RawRows(name, list(enumerate(source, start=1)))


def _dataset_format(raw: RawRows, fmt: str) -> str | None:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {fmt!r}")
        return fmt
    seen = Counter(detect_format(row) for _, row in raw.rows if isinstance(row, dict))
    seen.pop(None, None)
    return seen.most_common(1)[0][0] if seen else None


def validate_pairs(
    source: str | Path | Iterable[dict] | datasets.Dataset,
    *,
    split: str | None = None,
    format: Format = "auto",
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_prompt_length: int | None = None,
) -> ValidationReport:
    """Read and check every row of ``source``; never raises on bad rows.

    ``source`` is a path or Hub name (see :func:`prefopt.data.sources.read_rows`), or rows already in
    memory (a list of dicts or a ``datasets.Dataset``; rows are then numbered from 1). ``format`` is
    detected per dataset (the majority of rows) unless given; rows in another format are reported.
    With a ``tokenizer`` and ``max_prompt_length``, prompts over the token budget are reported too.
    """
    raw = _raw_rows(source, split)
    fmt = _dataset_format(raw, format)
    report = ValidationReport(raw.source, fmt, raw.n_rows, problems=list(raw.problems))
    for row_no, row in raw.rows:
        if fmt is None:
            report.problems.append(
                Problem(
                    raw.source,
                    row_no,
                    "prompt",
                    "missing_field",
                    (
                        "no 'prompt' field, and 'chosen' is neither a message list nor an HH transcript; "
                        "add 'prompt' or pass format=..."
                    ),
                )
            )
            continue
        pair, problems = normalize_row(row, fmt, raw.source, row_no)
        report.problems.extend(problems)
        if pair is not None:
            report.pairs.append(pair)
    if tokenizer is not None and max_prompt_length is not None and report.pairs:
        _check_prompt_budget(report, tokenizer, max_prompt_length)
    report.problems.sort(key=lambda p: (p.row is None, p.row or 0))
    return report


def _check_prompt_budget(report: ValidationReport, tokenizer: PreTrainedTokenizerBase, budget: int) -> None:
    lengths = [len(ids) for ids in encode_prompts([p["prompt"] for p in report.pairs], tokenizer)]
    kept = []
    for pair, length in zip(report.pairs, lengths):
        if length > budget:
            report.problems.append(
                Problem(
                    report.source,
                    pair["source_row"],
                    "prompt",
                    "prompt_too_long",
                    f"the prompt has {length} tokens > max_prompt_length={budget}; "
                    "shorten it or raise max_prompt_length",
                )
            )
        else:
            kept.append(pair)
    report.pairs = kept


def pairs_to_dataset(pairs: list[dict], source: str) -> datasets.Dataset:
    """Normalized pairs -> ``datasets.Dataset`` (every row gets every column; missing ones are None)."""
    columns = list(dict.fromkeys(key for pair in pairs for key in pair))
    try:
        return datasets.Dataset.from_dict({c: [pair.get(c) for pair in pairs] for c in columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataSourceError(
            f"{source}: the optional fields have inconsistent types across rows ({err}); "
            "make each field ('meta' in particular) the same type in every row"
        ) from err


def load_pairs(
    source: str | Path | Iterable[dict] | datasets.Dataset,
    *,
    split: str | None = None,
    format: Format = "auto",
    drop_invalid: bool = False,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_prompt_length: int | None = None,
) -> datasets.Dataset:
    """Load preference pairs as a normalized ``datasets.Dataset``, validating every row first.

    Columns: ``prompt``, ``chosen``, ``rejected`` (all strings for the standard format, message
    lists otherwise), the optional ``id``, ``weight``, ``chosen_token_rewards``,
    ``rejected_token_rewards``, ``meta`` when any row has them, and ``source_file`` /
    ``source_row`` (1-based; the line for jsonl) for error reports. Other fields are not kept.

    Raises :class:`DataValidationError` listing every problem unless ``drop_invalid``; then the
    invalid rows are dropped and their count per reason is logged as a warning.
    """
    report = validate_pairs(
        source, split=split, format=format, tokenizer=tokenizer, max_prompt_length=max_prompt_length
    )
    if report.problems and not drop_invalid:
        report.raise_if_invalid()
    if report.problems:
        logger.warning(
            "%s: dropped %d of %d rows (%s)",
            report.source,
            report.n_invalid,
            report.n_rows,
            ", ".join(f"{k}: {v}" for k, v in report.dropped_by_reason().items()),
        )
    if not report.pairs:
        if report.problems:
            raise DataValidationError(report.problems, n_rows=report.n_rows, hint="No valid pairs are left.")
        raise DataSourceError(f"{report.source}: contains no rows")
    logger.info("%s: loaded %d pairs in %r format", report.source, len(report.pairs), report.format)
    return pairs_to_dataset(report.pairs, report.source)
