"""The one key check of the plain dataclass records that round-trip through JSON.

Rollouts, scored rollouts and the reward state (:mod:`prefopt.online.types`) and verification
results (:mod:`prefopt.verification`) are dataclasses with ``to_dict`` / ``from_dict``; a file row
with a missing or unknown field is reported by :func:`check_keys` naming the file, row and fields.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any


def check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    """Raise ``ValueError`` prefixed with ``where`` unless ``data`` has every required field of ``cls`` and no other."""
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    unknown = sorted(set(data) - names)
    missing = sorted(n for n in required if n not in data)
    if unknown or missing:
        raise ValueError(
            f"{where}: cannot build {cls.__name__}: missing field(s) {missing}, unknown field(s) {unknown}; "
            f"expected fields {sorted(names)}"
        )
