"""Preference data: loading, validation, tokenization and collation of (prompt, chosen, rejected) pairs.

Typical use::

    pairs = load_pairs("pairs.jsonl")                      # raises DataValidationError on bad rows
    tokenized, stats = tokenize_pairs(pairs, tokenizer, max_length=1024, max_prompt_length=512)
    collator = PairCollator(tokenizer.pad_token_id)        # batches for prefopt.logps.pair_logps

See docs/data.md for the formats, the validation errors and the truncation policy. The names below
are imported on first use (PEP 562), so ``import prefopt.data.errors`` (the command line's error
types) does not load torch, transformers or datasets.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FORMATS": "prefopt.data.formats",
    "DataSourceError": "prefopt.data.errors",
    "DataValidationError": "prefopt.data.errors",
    "PairCollator": "prefopt.data.collate",
    "Problem": "prefopt.data.errors",
    "TokenizeStats": "prefopt.data.tokenize",
    "ValidationReport": "prefopt.data.validate",
    "inspect_pairs": "prefopt.data.inspect",
    "load_pairs": "prefopt.data.validate",
    "tokenize_pairs": "prefopt.data.tokenize",
    "validate_pairs": "prefopt.data.validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prefopt.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
