"""Row-level data problems and the exception that carries them.

Every problem names the file (or dataset), the 1-based row (the line number for jsonl) and the
field, so a user can open the file at the right place; :class:`DataValidationError` carries all
of them, not just the first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from prefopt.errors import UserError

#: How many problems an error message lists before summarizing the rest as a count.
MAX_SHOWN = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one row.

    ``reason`` is a short machine-readable category (``"empty_completion"``, ``"malformed_json"``,
    ...) used to group counts; ``message`` says what is wrong and what to do.
    """

    source: str
    row: int | None
    field: str | None
    reason: str
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.row is not None:
            where += f", row {self.row}"
        if self.field is not None:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict:
        """JSON-serializable form (for ``prefopt data inspect --json``)."""
        return asdict(self)


def count_reasons(problems: list[Problem]) -> dict[str, int]:
    """Number of problems per reason, most frequent first."""
    return dict(Counter(p.reason for p in problems).most_common())


def describe_problems(problems: list[Problem], limit: int = MAX_SHOWN) -> str:
    """A multi-line listing of the first ``limit`` problems plus a count of the rest."""
    lines = [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


class DataValidationError(UserError):
    """Raised when data rows have problems; ``problems`` holds every one of them.

    One problem is one line (``file, row N, field 'f': message. hint``); several are a count by
    reason and one line per problem (the first :data:`MAX_SHOWN`), then the hint.
    """

    def __init__(self, problems: list[Problem], *, n_rows: int, hint: str) -> None:
        self.problems = list(problems)
        self.n_rows = n_rows
        if len(self.problems) == 1:  # the common case reads as one line: where, what, what to do
            super().__init__(f"{self.problems[0]} ({self.problems[0].reason}). {hint}")
            return
        rows = {(p.source, p.row) for p in self.problems}
        reasons = ", ".join(f"{reason}: {count}" for reason, count in count_reasons(self.problems).items())
        super().__init__(
            f"{len(self.problems)} problem(s) in {len(rows)} of {n_rows} row(s) ({reasons}):\n"
            f"{describe_problems(self.problems)}\n{hint}"
        )


class DataSourceError(UserError):
    """A data source that cannot be read as asked (wrong or missing split, empty or corrupt file, bad output path)."""
