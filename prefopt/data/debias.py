"""Measure and reduce the length bias of preference pairs.

Judges and annotators tend to prefer longer answers, and a policy trained on such pairs learns
"longer is better". :func:`length_bias_report` measures the bias three ways:

* ``frac_chosen_longer``: the fraction of pairs whose chosen completion is strictly longer.
* ``correlation``: the point-biserial (Pearson) correlation between the length difference and the
  label after orienting each pair at random, ``(a, b)`` with label 1 iff ``a`` is the chosen, so
  that both label values occur.
* ``coefficient`` (and ``coefficient_se``): theta of the no-intercept logistic fit
  ``P(label = 1) = sigmoid(theta * tanh(delta / std(delta)))``, ``delta = len(a) - len(b)``, the
  same tanh-standardized feature as LC-AlpacaEval. Without an intercept this fit does not depend
  on the random orientation (flipping a pair flips both the feature and the label), except through
  ``std(delta)``. Positive means longer completions are preferred.

Strategies (:func:`debias`) return a subset of the pairs:

* ``balance``: bin the pairs by quantiles of ``|delta|`` and, in every bin, keep as many
  chosen-longer as chosen-shorter pairs (a seeded random subsample of the larger side). Pairs of
  equal length are kept.
* ``ratio_cap``: keep pairs with ``max(len) / min(len) <= max_ratio``.
* ``length_match``: for every (prompt, chosen) that was compared with several rejected
  completions, keep the one pair whose rejected is closest in length to the chosen (the first
  such pair on ties). Only pairs present in the input are kept: no new pair is invented.

Lengths are characters by default, or tokens of a given tokenizer (``add_special_tokens=False``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefopt.data.formats import text_of
from prefopt.errors import UserError
from prefopt.io import PARQUET_SUFFIX, report_path, write_json, write_rows
from prefopt.lazy import lazy_import

if TYPE_CHECKING:
    import datasets
    import numpy as np
else:
    np = lazy_import("numpy")  # the command line imports STRATEGIES from here; numpy is for the work

Strategy = Literal["balance", "ratio_cap", "length_match"]
STRATEGIES: tuple[str, ...] = ("balance", "ratio_cap", "length_match")


def pair_lengths(pairs: datasets.Dataset, tokenizer: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Lengths of the chosen and rejected completions: characters, or tokens of ``tokenizer``.

    Conversational completions are measured on their messages' contents joined by newlines.
    """
    columns = []
    for field in ("chosen", "rejected"):
        texts = [text_of(value) for value in pairs[field]]
        if tokenizer is None:
            columns.append(np.array([len(t) for t in texts], dtype=np.int64))
        else:
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            columns.append(np.array([len(i) for i in ids], dtype=np.int64))
    return columns[0], columns[1]


def length_bias_report(len_chosen: np.ndarray, len_rejected: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The length-bias statistics of pairs with these lengths (see the module docstring).

    ``correlation`` is ``None`` when undefined (every length difference is 0); ``coefficient`` and
    ``coefficient_se`` are ``None`` when the maximum-likelihood fit does not exist (every non-tied
    pair has the longer completion chosen, or every one the shorter).
    """
    len_chosen, len_rejected = np.asarray(len_chosen, float), np.asarray(len_rejected, float)
    n = len(len_chosen)
    report: dict[str, Any] = {
        "n": n,
        "frac_chosen_longer": float(np.mean(len_chosen > len_rejected)) if n else None,
        "frac_equal_length": float(np.mean(len_chosen == len_rejected)) if n else None,
        "mean_len_chosen": float(len_chosen.mean()) if n else None,
        "mean_len_rejected": float(len_rejected.mean()) if n else None,
        "correlation": None,
        "coefficient": None,
        "coefficient_se": None,
    }
    if n < 2:
        return report
    a_is_chosen = np.random.default_rng(seed).random(n) < 0.5
    delta = np.where(a_is_chosen, len_chosen - len_rejected, len_rejected - len_chosen)
    label = a_is_chosen.astype(float)
    if delta.std() > 0 and label.std() > 0:
        report["correlation"] = float(np.corrcoef(delta, label)[0, 1])
    if delta.std(ddof=1) > 0:
        fit = _logistic_slope(np.tanh(delta / delta.std(ddof=1)), label)
        if fit is not None:
            report["coefficient"], report["coefficient_se"] = fit
    return report


def balance_indices(
    len_chosen: np.ndarray, len_rejected: np.ndarray, bins: int = 10, seed: int = 0
) -> np.ndarray:
    """Indices of a length-balanced subsample (sorted): equal chosen-longer and chosen-shorter per bin."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    delta = np.asarray(len_chosen) - np.asarray(len_rejected)
    magnitude = np.abs(delta)
    rng = np.random.default_rng(seed)
    keep = [np.flatnonzero(delta == 0)]
    if np.any(delta != 0):
        edges = np.quantile(magnitude[delta != 0], np.linspace(0, 1, bins + 1)[1:-1])
        bin_of = np.searchsorted(edges, magnitude, side="right")
        for b in range(bins):
            longer = np.flatnonzero((bin_of == b) & (delta > 0))
            shorter = np.flatnonzero((bin_of == b) & (delta < 0))
            k = min(len(longer), len(shorter))
            keep += [rng.choice(longer, k, replace=False), rng.choice(shorter, k, replace=False)]
    return np.sort(np.concatenate(keep)).astype(np.int64)


def ratio_cap_indices(len_chosen: np.ndarray, len_rejected: np.ndarray, max_ratio: float) -> np.ndarray:
    """Indices of the pairs with ``max(len) / min(len) <= max_ratio`` (never an empty vs non-empty pair)."""
    if max_ratio < 1:
        raise ValueError(
            f"max_ratio must be >= 1 (a ratio of the longer to the shorter length), got {max_ratio}"
        )
    longer = np.maximum(len_chosen, len_rejected).astype(float)
    shorter = np.minimum(len_chosen, len_rejected).astype(float)
    ratio = np.divide(longer, shorter, out=np.where(longer > 0, np.inf, 1.0), where=shorter > 0)
    return np.flatnonzero(ratio <= max_ratio).astype(np.int64)


def length_match_indices(
    pairs: datasets.Dataset, len_chosen: np.ndarray, len_rejected: np.ndarray
) -> np.ndarray:
    """Indices keeping, per (prompt, chosen), the pair whose rejected is closest in length to the chosen."""
    best: dict[tuple[str, str], int] = {}
    gap = np.abs(np.asarray(len_chosen) - np.asarray(len_rejected))
    for i, (prompt, chosen) in enumerate(zip(pairs["prompt"], pairs["chosen"])):
        key = (json.dumps(prompt, sort_keys=True), json.dumps(chosen, sort_keys=True))
        if key not in best or gap[i] < gap[best[key]]:
            best[key] = i
    return np.sort(np.fromiter(best.values(), dtype=np.int64, count=len(best)))


def debias(
    pairs: datasets.Dataset,
    strategy: Strategy = "balance",
    *,
    bins: int = 10,
    max_ratio: float = 2.0,
    tokenizer: Any = None,
    seed: int = 0,
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Apply ``strategy`` to ``pairs`` (columns ``prompt``, ``chosen``, ``rejected``, ...).

    Returns the kept pairs (all columns, input order) and a report with the settings and the
    :func:`length_bias_report` of the pairs ``before`` and ``after``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown debias strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    len_chosen, len_rejected = pair_lengths(pairs, tokenizer)
    if strategy == "balance":
        keep = balance_indices(len_chosen, len_rejected, bins=bins, seed=seed)
        settings: dict[str, Any] = {"bins": bins}
    elif strategy == "ratio_cap":
        keep = ratio_cap_indices(len_chosen, len_rejected, max_ratio)
        settings = {"max_ratio": max_ratio}
    else:
        keep = length_match_indices(pairs, len_chosen, len_rejected)
        settings = {}
    unit = (
        "characters"
        if tokenizer is None
        else f"tokens ({getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)})"
    )
    report = {
        "strategy": strategy,
        **settings,
        "seed": seed,
        "length_unit": unit,
        "kept": len(keep),
        "dropped": len(pairs) - len(keep),
        "before": length_bias_report(len_chosen, len_rejected, seed=seed),
        "after": length_bias_report(len_chosen[keep], len_rejected[keep], seed=seed),
    }
    return pairs.select(keep), report


def debias_file(
    source: str | Path,
    out: str | Path,
    strategy: Strategy = "balance",
    *,
    bins: int = 10,
    max_ratio: float = 2.0,
    tokenizer: Any = None,
    seed: int = 0,
    drop_invalid: bool = False,
) -> dict[str, Any]:
    """Load pairs with :func:`prefopt.data.load_pairs`, :func:`debias` them and write the result.

    ``out`` must end in ``.jsonl`` or ``.parquet``; the report is written next to it as
    ``<out stem>.report.json`` (see :func:`prefopt.io.report_path`). Both files are written atomically.
    Returns the report, with ``input``, ``output`` and ``report`` paths added.
    """
    out = Path(out)
    if not out.name.endswith((".jsonl", PARQUET_SUFFIX)):
        raise UserError(
            f"{out}: the output must end in .jsonl or .parquet (the format is chosen by extension)"
        )
    from prefopt.data.validate import load_pairs  # imported here: the command line starts without datasets

    pairs = load_pairs(source, drop_invalid=drop_invalid)
    kept, report = debias(pairs, strategy, bins=bins, max_ratio=max_ratio, tokenizer=tokenizer, seed=seed)
    report = {"input": str(source), "output": str(out), "report": str(report_path(out)), **report}
    write_rows(out, kept.with_format("arrow")[:])
    write_json(report_path(out), report, indent=2)
    return report


def format_debias_report(report: dict[str, Any]) -> str:
    """A before/after table of a :func:`debias` report, for the terminal."""
    settings = "".join(f", {k}={report[k]}" for k in ("bins", "max_ratio") if k in report)
    lines = [
        f"strategy {report['strategy']}{settings}, seed {report['seed']}, lengths in {report['length_unit']}",
        f"kept {report['kept']} pairs, dropped {report['dropped']}",
        f"{'':20}{'before':>16}{'after':>16}",
    ]
    for key in (
        "n",
        "frac_chosen_longer",
        "mean_len_chosen",
        "mean_len_rejected",
        "correlation",
        "coefficient",
    ):
        cells = []
        for side in ("before", "after"):
            value = report[side][key]
            if key == "coefficient" and value is not None:
                cells.append(f"{value:+.3f}±{report[side]['coefficient_se']:.3f}")
            else:
                cells.append(
                    "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
                )
        lines.append(f"{key:20}{cells[0]:>16}{cells[1]:>16}")
    if "output" in report:
        lines.append(f"wrote {report['output']} and {report['report']}")
    return "\n".join(lines)


def _logistic_slope(x: np.ndarray, y: np.ndarray, max_iter: int = 100) -> tuple[float, float] | None:
    """Maximum-likelihood theta of ``P(y=1) = sigmoid(theta * x)`` and its standard error (Newton).

    ``None`` when the data are separable by the sign of ``x`` (the estimate would be infinite).
    """
    signed = np.where(y == 1, x, -x)  # log-likelihood is sum log sigmoid(theta * signed)
    informative = signed[signed != 0]
    if len(informative) == 0 or np.all(informative > 0) or np.all(informative < 0):
        return None
    theta = 0.0
    for _ in range(max_iter):
        q = 1 / (1 + np.exp(-theta * signed))
        gradient = np.sum((1 - q) * signed)
        information = np.sum(q * (1 - q) * signed**2)
        step = gradient / information
        theta += step
        if abs(step) < 1e-10:
            break
    q = 1 / (1 + np.exp(-theta * signed))
    return float(theta), float(1 / math.sqrt(np.sum(q * (1 - q) * signed**2)))
