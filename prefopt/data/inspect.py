"""``inspect_pairs``: counts, length statistics and problems of a preference dataset, as a dict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from prefopt.data.errors import MAX_SHOWN, Problem, count_reasons
from prefopt.data.formats import Format, text_of
from prefopt.data.tokenize import TemplateMismatch, encode_pairs
from prefopt.data.validate import validate_pairs

FIELDS = ("prompt", "chosen", "rejected")
_BATCH = 512


def length_stats(lengths: list[int]) -> dict[str, float]:
    """``mean``, ``median``, ``p90`` and ``max`` of a list of lengths (zeros when empty)."""
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0}
    values = np.asarray(lengths, dtype=np.float64)
    return {
        "mean": round(float(values.mean()), 1),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": int(values.max()),
    }


def _comparison(chosen: list[int], rejected: list[int]) -> dict[str, float]:
    c, r = np.asarray(chosen), np.asarray(rejected)
    n = max(len(c), 1)
    return {"chosen_longer": round(float((c > r).sum()) / n, 4), "equal": round(float((c == r).sum()) / n, 4)}


def _token_lengths(
    pairs: list[dict], tokenizer: PreTrainedTokenizerBase
) -> tuple[dict[str, list[int]], list[Problem]]:
    lengths: dict[str, list[int]] = {f: [] for f in FIELDS}
    problems = []
    for start in range(0, len(pairs), _BATCH):
        batch = pairs[start : start + _BATCH]
        encoded = encode_pairs(*([p[f] for p in batch] for f in FIELDS), tokenizer)
        for pair, *ids in zip(batch, *encoded):
            mismatch = next((x for x in ids if isinstance(x, TemplateMismatch)), None)
            if mismatch is not None:
                problems.append(
                    Problem(pair["source_file"], pair["source_row"], None, "template_mismatch", str(mismatch))
                )
                continue
            for f, x in zip(FIELDS, ids):
                lengths[f].append(len(x))
    return lengths, problems


def inspect_pairs(
    source: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    tokenizer_name: str | None = None,
    format: Format = "auto",
    split: str | None = None,
    max_problems: int = MAX_SHOWN,
) -> dict:
    """Report on the preference data at ``source`` without raising on bad rows.

    Keys: ``source``, ``format``, ``rows``, ``valid_pairs``, ``invalid_rows``,
    ``problems_by_reason``, ``problems`` (the first ``max_problems``, as dicts), ``chars`` (per
    field: mean/median/p90/max of the text length over valid pairs; message lists count their
    contents), ``chars_comparison`` (fraction of pairs whose chosen is longer / equally long) and,
    with a ``tokenizer``, ``tokenizer`` (``tokenizer_name`` or its ``name_or_path``), ``tokens`` and
    ``tokens_comparison`` (prompt tokens as templated with the
    generation prompt; completion tokens including EOS, as :func:`tokenize_pairs` counts them).
    """
    report = validate_pairs(source, split=split, format=format)
    problems = list(report.problems)
    chars = {f: [len(text_of(p[f])) for p in report.pairs] for f in FIELDS}
    result: dict = {
        "source": report.source,
        "format": report.format,
        "rows": report.n_rows,
        "valid_pairs": len(report.pairs),
        "invalid_rows": report.n_invalid,
        "chars": {f: length_stats(v) for f, v in chars.items()},
        "chars_comparison": _comparison(chars["chosen"], chars["rejected"]),
    }
    if tokenizer is not None:
        tokens, template_problems = _token_lengths(report.pairs, tokenizer)
        problems += template_problems
        result["tokenizer"] = tokenizer_name or tokenizer.name_or_path
        result["tokens"] = {f: length_stats(v) for f, v in tokens.items()}
        result["tokens_comparison"] = _comparison(tokens["chosen"], tokens["rejected"])
    result["problems_total"] = len(problems)
    result["problems_by_reason"] = count_reasons(problems)
    result["problems"] = [p.to_dict() for p in problems[:max_problems]]
    return result


def format_report(result: dict) -> str:
    """Human-readable text of an :func:`inspect_pairs` result."""
    header = (
        f"{result['source']}: {result['rows']} rows, {result['valid_pairs']} valid pairs, "
        f"{result['invalid_rows']} invalid; format {result['format']}"
    )
    lines = [header]
    for unit in ("chars", "tokens"):
        if unit not in result:
            continue
        if unit == "tokens":
            lines.append(f"tokenizer: {result['tokenizer']}")
        lines.append(f"{unit:<40} {'mean':>9} {'median':>9} {'p90':>9} {'max':>9}")
        for f in FIELDS:
            s = result[unit][f]
            lines.append(f"  {f:<38} {s['mean']:>9.1f} {s['median']:>9.1f} {s['p90']:>9.1f} {s['max']:>9d}")
        comparison = result[f"{unit}_comparison"]
        lines.append(
            f"  chosen longer than rejected ({unit}): {comparison['chosen_longer']:.1%} "
            f"(equal: {comparison['equal']:.1%})"
        )
    if result["problems_total"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in result["problems_by_reason"].items())
        lines.append(f"problems: {result['problems_total']} ({reasons})")
        lines += [f"  - {Problem(**p)}" for p in result["problems"]]
        if result["problems_total"] > len(result["problems"]):
            lines.append(f"  ... and {result['problems_total'] - len(result['problems'])} more")
    else:
        lines.append("problems: none")
    return "\n".join(lines)
