"""Preference data: loading, validation, tokenization and collation of (prompt, chosen, rejected) pairs.

Typical use::

    pairs = load_pairs("pairs.jsonl")                      # raises DataValidationError on bad rows
    tokenized, stats = tokenize_pairs(pairs, tokenizer, max_length=1024, max_prompt_length=512)
    collator = PairCollator(tokenizer.pad_token_id)        # batches for prefopt.logps.pair_logps

See docs/data.md for the formats, the validation errors and the truncation policy.
"""

from prefopt.data.collate import PairCollator
from prefopt.data.errors import DataSourceError, DataValidationError, Problem
from prefopt.data.formats import FORMATS
from prefopt.data.inspect import inspect_pairs
from prefopt.data.tokenize import TokenizeStats, tokenize_pairs
from prefopt.data.validate import ValidationReport, load_pairs, validate_pairs

__all__ = [
    "FORMATS",
    "DataSourceError",
    "DataValidationError",
    "PairCollator",
    "Problem",
    "TokenizeStats",
    "ValidationReport",
    "inspect_pairs",
    "load_pairs",
    "tokenize_pairs",
    "validate_pairs",
]
