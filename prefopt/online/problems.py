"""Load verifiable problems (question + gold answer) for the rounds loop and evaluation.

A problem source is a local JSON Lines / JSON / parquet file or a Hugging Face Hub dataset name;
field names are configurable so the same loader reads prefopt's arithmetic files
(``id``/``question``/``answer``), GSM8K (``question``/``answer`` with ``#### N``; no id → the row
index) and MATH-500 (``problem``/``answer``/``unique_id``). Each problem becomes a chat prompt: one
user message holding the question followed by the answer-format instruction.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _read_rows(source: str, split: str, config_name: str | None) -> tuple[list[dict[str, Any]], str]:
    path = Path(os.path.expanduser(source))
    if path.is_file():
        if path.suffix == ".parquet":
            from datasets import Dataset

            return Dataset.from_parquet(str(path)).to_list(), str(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json" and text.lstrip().startswith("["):
            return json.loads(text), str(path)
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} row {number}: not valid JSON ({err.msg}); fix or remove the line") from err
        return rows, str(path)
    if path.suffix in (".jsonl", ".json", ".parquet") or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"problem file {source} does not exist; check the data path in the recipe")
    from datasets import load_dataset

    return load_dataset(source, config_name, split=split).to_list(), f"{source}[{split}]"


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

    ``id_field=None`` (or a field the rows lack) numbers the problems ``"<row index>"``. Missing or
    empty question/answer fields raise with the file, row and field named. ``limit`` keeps the first
    ``limit`` problems.
    """
    rows, where = _read_rows(os.fspath(source), split, config_name)
    problems: list[Problem] = []
    use_ids = id_field is not None and bool(rows) and id_field in rows[0]
    for index, row in enumerate(rows[:limit] if limit is not None else rows):
        for name in (question_field, answer_field):
            value = row.get(name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"{where} row {index + 1}: field {name!r} is missing or empty (fields present: {sorted(row)}); "
                    "set question_field / answer_field in the recipe's problems section"
                )
        if use_ids and row.get(id_field) is None:
            raise ValueError(
                f"{where} row {index + 1}: field {id_field!r} is missing (the first row has it); give every row "
                "an id, or set id_field: null to number rows"
            )
        problem_id = str(row[id_field]) if use_ids else str(index)
        problems.append(Problem(problem_id, row[question_field], row[answer_field]))
    seen: set[str] = set()
    for index, problem in enumerate(problems):
        if problem.id in seen:
            raise ValueError(
                f"{where} row {index + 1}: problem id {problem.id!r} (field {id_field!r}) repeats an earlier row; "
                "ids must be unique: set id_field: null to number rows"
            )
        seen.add(problem.id)
    return problems
