"""Reading answers out of text: the model's final answer, the gold answer, and the format check.

Answers (model side), first match wins: the last ``\\boxed{...}``; the text after the last
``####``; with ``fallback="last_number"`` the last number in the text. Golds: GSM8K style
(``... #### 1,234``), MATH style (``\\boxed{...}`` anywhere, or a bare LaTeX answer).

The **format check** (:func:`format_score`) asks whether a completion gives its answer in the form
the instruction asks for — ``boxed`` (a closed ``\\boxed{...}``), ``hash`` (``#### N``), ``any``
(either) or ``pattern`` (a configured regular expression, searched) — *and* was finished by the
model, not cut at the generation limit. Its 0/1 result is the ``format_scores`` every reward that
uses well-formedness reads (LASER's base, Kimi's gate, TLTS's format term, ``format_length``).
"""

from __future__ import annotations

import re
from typing import Literal

Fallback = Literal["last_number", "none"]
AnswerFormat = Literal["any", "boxed", "hash", "pattern"]
ANSWER_FORMATS: tuple[str, ...] = ("any", "boxed", "hash", "pattern")

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _clean_number(text: str) -> str:
    text = text.strip().replace("$", "").replace("\\!", "")
    return _THOUSANDS.sub("", text).rstrip(".").strip()


def hash_answer(completion: str) -> str | None:
    """The number after the last ``####`` (GSM8K style), or ``None``."""
    if "####" not in completion:
        return None
    tail = completion.rsplit("####", 1)[1].strip().splitlines()
    return _clean_number(tail[0]) if tail and _clean_number(tail[0]) else None


def extract_answer(completion: str, fallback: Fallback = "last_number") -> str | None:
    """The model's final answer: last ``\\boxed{}``, else after the last ``####``, else (fallback) the last number."""
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    hashed = hash_answer(completion)
    if hashed is not None:
        return hashed
    if fallback == "last_number":
        numbers = _NUMBER.findall(completion)
        if numbers:
            return _clean_number(numbers[-1])
    return None


def extract_gold(gold: str) -> str:
    """The reference answer: after ``####`` (GSM8K), inside the last ``\\boxed{}`` (MATH solution), else as is."""
    if "####" in gold:
        return _clean_number(gold.rsplit("####", 1)[1])
    boxed = last_boxed(gold)
    return boxed if boxed is not None else gold.strip()


def check_answer_format(answer_format: str, pattern: str | None) -> None:
    """Raise ``ValueError`` unless ``answer_format`` is known and ``pattern`` is given exactly for ``pattern``."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"format must be one of {', '.join(ANSWER_FORMATS)}, got {answer_format!r}")
    if (answer_format == "pattern") != (pattern is not None):
        raise ValueError("format_pattern is required with format: pattern and only used by it")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"format_pattern {pattern!r} is not a regular expression: {err}") from None


def format_score(
    completion: str, finish_reason: str, answer_format: AnswerFormat = "any", pattern: str | None = None
) -> float:
    """1.0 when the completion was finished (``finish_reason == "stop"``) and has its answer in ``answer_format``."""
    if finish_reason != "stop":
        return 0.0
    if answer_format == "pattern":
        return float(re.search(pattern or "", completion, flags=re.DOTALL) is not None)
    boxed = answer_format in ("any", "boxed") and last_boxed(completion) is not None
    hashed = answer_format in ("any", "hash") and hash_answer(completion) is not None
    return float(boxed or hashed)
