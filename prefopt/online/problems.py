"""Load verifiable problems (question + gold answer) for the rounds loop and evaluation.

A problem source is a local JSON Lines / JSON / parquet file or a Hugging Face Hub dataset name;
field names are configurable so the same loader reads prefopt's arithmetic files
(``id``/``question``/``answer``), GSM8K (``question``/``answer`` with ``#### N``; no id → the row
index) and MATH-500 (``problem``/``answer``/``unique_id``). Each problem becomes a chat prompt: one
user message holding the question followed by the answer-format instruction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prefopt.data.errors import DataValidationError
from prefopt.data.errors import Problem as RowProblem
from prefopt.data.sources import is_local_file, read_rows
from prefopt.sampling import PromptItem


@dataclass(frozen=True)
class Problem:
    """A question with a verifiable gold answer and a stable id."""

    id: str
    question: str
    gold: str

    def prompt_item(self, instruction: str = "") -> PromptItem:
        """The chat prompt: the question, then ``instruction`` on its own line (if any)."""
        content = f"{self.question}\n{instruction}" if instruction else self.question
        return PromptItem(self.id, [{"role": "user", "content": content}])


def load_problems(
    source: str | os.PathLike,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str | None = "id",
    split: str = "train",
    config_name: str | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Read problems from a local file or a Hub dataset.

    Rows come from :func:`prefopt.data.sources.read_rows` (``split`` and ``config_name`` apply to
    Hub datasets; a local file is read whole). ``id_field=None`` (or a field the rows lack) numbers
    the problems ``"<row index>"``. Every bad row (unreadable, a missing or empty question/answer
    or id, a repeated id) is reported at once in a :class:`~prefopt.data.DataValidationError`
    naming the file, row and field. ``limit`` keeps the first ``limit`` problems.
    """
    local = is_local_file(source)  # a file has no splits or configs: the recipe's are for Hub names
    raw = read_rows(source, split=None if local else split, config_name=None if local else config_name)
    raw.raise_if_problems()
    where, first = raw.source, raw.rows[0][1]
    problems: list[Problem] = []
    bad: list[RowProblem] = []
    use_ids = id_field is not None and isinstance(first, dict) and id_field in first
    seen: dict[str, int] = {}
    for index, (number, row) in enumerate(raw.rows[:limit] if limit is not None else raw.rows):
        if not isinstance(row, dict):
            bad.append(RowProblem(where, number, None, "wrong_type", f"expected an object, got {type(row).__name__}"))
            continue
        missing = [
            RowProblem(where, number, name, "missing_field", f"missing or empty (fields present: {sorted(row)}); "
                       "set question_field / answer_field in the recipe's problems section")
            for name in (question_field, answer_field)
            if not isinstance(row.get(name), str) or not row[name].strip()
        ]
        if use_ids and row.get(id_field) is None:
            missing.append(RowProblem(where, number, id_field, "missing_id", "missing (the first row has it); give "
                                      "every row an id, or set id_field: null to number rows"))
        bad.extend(missing)
        if missing:
            continue
        problem_id = str(row[id_field]) if use_ids else str(index)
        if problem_id in seen:
            bad.append(RowProblem(where, number, id_field, "duplicate_id", f"problem id {problem_id!r} repeats row "
                                  f"{seen[problem_id]}; ids must be unique: set id_field: null to number rows"))
            continue
        seen[problem_id] = number
        problems.append(Problem(problem_id, row[question_field], row[answer_field]))
    if bad:
        raise DataValidationError(bad, n_rows=raw.n_rows, hint="Fix these problem rows and rerun.")
    return problems
