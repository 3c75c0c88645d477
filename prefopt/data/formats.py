"""The pair formats prefopt reads, their detection, and their normalization to one schema.

Formats (``format=`` everywhere):

* ``standard``: ``prompt``, ``chosen``, ``rejected`` strings (TRL's standard preference format).
* ``conversational``: ``prompt`` a list of ``{"role", "content"}`` messages, ``chosen`` and
  ``rejected`` lists of assistant messages (TRL's conversational format).
* ``implicit``: ``chosen`` and ``rejected`` are full message lists sharing a prefix, which becomes
  the prompt. A ``prompt`` string beside them (the layout of HuggingFaceH4/ultrafeedback_binarized
  and princeton-nlp's SimPO datasets) only repeats the first user turn and is not used.
* ``hh``: no ``prompt``; ``chosen`` and ``rejected`` are Anthropic HH-RLHF transcripts
  (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) split at the last shared ``\\n\\nAssistant:`` turn.

``implicit`` and ``hh`` rows are converted to the conversational form, so after normalization a
dataset is either all-``standard`` (strings) or all-conversational (message lists).
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal

from prefopt.data.errors import Problem

Format = Literal["auto", "standard", "conversational", "implicit", "hh"]
FORMATS: tuple[str, ...] = ("standard", "conversational", "implicit", "hh")
ROLES = ("system", "user", "assistant", "tool")
HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def detect_format(row: dict) -> str | None:
    """The format ``row`` looks like, or ``None`` if its fields do not identify one."""
    prompt, chosen = row.get("prompt"), row.get("chosen")
    if "prompt" in row:
        if isinstance(prompt, str):
            # a prompt string beside full conversations (HuggingFaceH4 / princeton-nlp layout): implicit
            return "implicit" if isinstance(chosen, list) else "standard"
        return "conversational" if isinstance(prompt, list) else None
    if isinstance(chosen, list):
        return "implicit"
    if isinstance(chosen, str) and HH_ASSISTANT in chosen:
        return "hh"
    return None


def is_conversational(pair: dict) -> bool:
    """Whether a normalized pair holds message lists (else plain strings)."""
    return isinstance(pair["prompt"], list)


def text_of(value: str | list[dict]) -> str:
    """The text of a prompt or completion: the string itself or its messages' contents joined."""
    return value if isinstance(value, str) else "\n".join(m["content"] for m in value)


class _RowChecker:
    """Collects the problems of one row while normalizing it."""

    def __init__(self, source: str, row: int) -> None:
        self.source, self.row = source, row
        self.problems: list[Problem] = []

    def add(self, field: str | None, reason: str, message: str) -> None:
        self.problems.append(Problem(self.source, self.row, field, reason, message))

    def string(self, value: Any, field: str) -> str | None:
        if value is None:
            self.add(field, "missing_field", f"missing; {field!r} is required")
            return None
        if not isinstance(value, str):
            self.add(field, "wrong_type", f"expected a string, got {type(value).__name__}")
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            self.add(
                field,
                "invalid_utf8",
                f"character {err.start} is an unpaired surrogate; fix the text's encoding",
            )
            return None
        return value

    def messages(self, value: Any, field: str) -> list[dict] | None:
        if value is None:
            self.add(field, "missing_field", f"missing; {field!r} is required")
            return None
        if not isinstance(value, list):
            self.add(field, "wrong_type", f"expected a list of messages, got {type(value).__name__}")
            return None
        out = []
        for i, message in enumerate(value):
            where = f"{field}[{i}]"
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                self.add(where, "wrong_type", 'expected a message {"role": ..., "content": ...}')
                return None
            if message["role"] not in ROLES:
                self.add(
                    f"{where}.role", "wrong_role", f"unknown role {message['role']!r}; use one of {ROLES}"
                )
                return None
            content = self.string(message["content"], f"{where}.content")
            if content is None:
                return None
            out.append({"role": message["role"], "content": content})
        return out


def _check_prompt_roles(check: _RowChecker, prompt: list[dict], field: str) -> None:
    for i, message in enumerate(prompt):
        if message["role"] == "system" and i > 0:
            check.add(f"{field}[{i}].role", "wrong_role", "a system message may only come first")
    if prompt and prompt[-1]["role"] == "assistant":
        check.add(
            f"{field}[{len(prompt) - 1}].role",
            "wrong_role",
            "the prompt ends with an assistant message; the last prompt message must be the user's turn",
        )


def _check_completion_roles(check: _RowChecker, completion: list[dict], field: str, offset: int) -> None:
    for i, message in enumerate(completion, start=offset):
        if message["role"] != "assistant":
            check.add(
                f"{field}[{i}].role",
                "wrong_role",
                f"completion messages must be 'assistant', got {message['role']!r}; chosen and rejected "
                "must differ only in their final assistant turn(s)",
            )
            return


def _split_implicit(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared > 0 and chosen[shared - 1]["role"] == "assistant":
        shared -= 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _hh_messages(text: str) -> list[dict]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[{"role": "user", ...}, {"role": "assistant", ...}]``."""
    parts = _HH_TURN.split(text)
    return [
        {"role": _HH_ROLES[role], "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2])
    ]


def _split_hh(
    check: _RowChecker, chosen: str, rejected: str
) -> tuple[list[dict], list[dict], list[dict]] | None:
    if not chosen.startswith("\n\nHuman:"):
        check.add("chosen", "wrong_type", 'an HH transcript must start with "\\n\\nHuman:"')
        return None
    cut = os.path.commonprefix([chosen, rejected]).rfind(HH_ASSISTANT)
    if cut < 0:
        check.add("rejected", "wrong_type", 'chosen and rejected share no "\\n\\nAssistant:" turn')
        return None
    prompt = _hh_messages(chosen[:cut])
    completions = []
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        rest = text[cut + len(HH_ASSISTANT) :]
        if "\n\nHuman:" in rest:
            check.add(
                field,
                "wrong_role",
                "has a Human turn after the last shared Assistant turn; the pair must differ only in the final reply",
            )
            return None
        # The reply is one assistant message even if it quotes "\n\nAssistant:" (a known HH quirk).
        completions.append([{"role": "assistant", "content": rest.strip()}])
    return prompt, completions[0], completions[1]


def _optional_fields(check: _RowChecker, row: dict) -> dict:
    out: dict[str, Any] = {}
    if row.get("id") is not None:
        out["id"] = str(row["id"])
    weight = row.get("weight")
    if weight is not None:
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight < 0
        ):
            check.add("weight", "wrong_type", f"expected a finite number >= 0, got {weight!r}")
        else:
            out["weight"] = float(weight)
    for field in ("chosen_token_rewards", "rejected_token_rewards"):
        values = row.get(field)
        if values is None:
            continue
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            check.add(field, "wrong_type", "expected a list of finite numbers, one per completion token")
        else:
            out[field] = [float(v) for v in values]
    if row.get("meta") is not None:
        if not isinstance(row["meta"], dict):
            check.add("meta", "wrong_type", f"expected an object, got {type(row['meta']).__name__}")
        else:
            out["meta"] = row["meta"]
    return out


def _is_empty(completion: str | list[dict]) -> bool:
    return not text_of(completion).strip()


def normalize_row(row: Any, fmt: str, source: str, row_no: int) -> tuple[dict | None, list[Problem]]:
    """Normalize one raw row of format ``fmt`` to ``prompt``/``chosen``/``rejected`` (+ optional fields).

    Returns ``(pair, [])`` or ``(None, problems)``; ``pair`` also records ``source_file`` and
    ``source_row`` so later stages (tokenization) can report problems by row.
    """
    check = _RowChecker(source, row_no)
    if not isinstance(row, dict):
        check.add(
            None,
            "wrong_type",
            f"expected a JSON object with prompt/chosen/rejected, got {type(row).__name__}",
        )
        return None, check.problems
    seen = detect_format(row)
    if seen is not None and seen != fmt:
        field = "prompt" if "prompt" in row or fmt in ("standard", "conversational") else "chosen"
        check.add(
            field,
            "inconsistent_format",
            f"row is in {seen!r} format but the dataset is {fmt!r}; "
            "convert it, or load the formats separately",
        )
        return None, check.problems
    pair = _normalize_fields(check, row, fmt)
    extras = _optional_fields(check, row)
    if pair is None or check.problems:
        return None, check.problems
    for field in ("chosen", "rejected"):
        if _is_empty(pair[field]):
            check.add(field, "empty_completion", "the completion is empty; drop the row or supply a response")
    if not text_of(pair["prompt"]).strip():
        check.add("prompt", "empty_prompt", "the prompt is empty; every pair needs a prompt")
    if pair["chosen"] == pair["rejected"]:
        check.add(
            "rejected", "identical", "chosen and rejected are identical; the pair carries no preference"
        )
    if check.problems:
        return None, check.problems
    return {**pair, **extras, "source_file": source, "source_row": row_no}, []


def _normalize_fields(check: _RowChecker, row: dict, fmt: str) -> dict | None:
    if fmt == "standard":
        values = [check.string(row.get(f), f) for f in ("prompt", "chosen", "rejected")]
        return None if None in values else dict(zip(("prompt", "chosen", "rejected"), values))
    if fmt == "hh":
        chosen, rejected = (
            check.string(row.get("chosen"), "chosen"),
            check.string(row.get("rejected"), "rejected"),
        )
        if chosen is None or rejected is None:
            return None
        split = _split_hh(check, chosen, rejected)
    elif fmt == "implicit":
        chosen, rejected = (
            check.messages(row.get("chosen"), "chosen"),
            check.messages(row.get("rejected"), "rejected"),
        )
        if chosen is None or rejected is None:
            return None
        split = _split_implicit(chosen, rejected)
    elif fmt == "conversational":
        split = tuple(check.messages(row.get(f), f) for f in ("prompt", "chosen", "rejected"))
        if None in split:
            return None
    else:
        raise ValueError(f"unknown format {fmt!r}; use 'auto' or one of {FORMATS}")
    if split is None:
        return None
    prompt, chosen, rejected = split
    _check_prompt_roles(check, prompt, "prompt")
    offset = len(prompt) if fmt == "implicit" else 0  # report indices of the row's own lists
    _check_completion_roles(check, chosen, "chosen", offset)
    _check_completion_roles(check, rejected, "rejected", offset)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
