"""Length-controlled win rate (LC-AlpacaEval, Dubois et al. 2024, arXiv 2404.04475).

A judge compares a baseline output (``output_1``, ``generator_1``) with a model output
(``output_2``, ``generator_2``) on each instruction x; ``preference`` is in [1, 2] (2 = model wins,
soft values allowed) or 0 for a tie. The GLM of AlpacaEval's ``glm_winrate.py`` is::

    p_x   = preference - 1                   (a tie, 0, counts as 1.5 first)
    d_x   = len(output_1) - len(output_2)    (characters, baseline minus model)
    z_x   = d_x / std(d)                     (ddof = 1, over this model's annotations)
    P(model wins on x) = sigmoid(theta_len * tanh(z_x) + theta_diff * gamma_x + theta_model)

with no intercept (``gamma_x``, the instruction difficulty, only when the user supplies it). Soft
labels are fitted by duplicating each row (y = 1 with weight p, y = 0 with weight 1 - p) with
``LogisticRegressionCV(L1, liblinear, fit_intercept=False, random_state=123)``, 5-fold
``GroupKFold`` over the original rows and a continuous log-loss score, which is AlpacaEval's
procedure. The length-controlled win rate predicts every row with the length term set to zero::

    LC = 100 * mean_x sigmoid(theta_diff * gamma_x + theta_model)

Deliberate differences from AlpacaEval: rows without a preference are dropped before ``std(d)``
is computed (AlpacaEval drops them after), and the gamed-baseline regularization is not applied
(those annotations are a downloaded dataset; this module never downloads anything).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import make_scorer
from sklearn.model_selection import GroupKFold

from prefopt.data.errors import DataSourceError, DataValidationError, Problem
from prefopt.data.sources import read_rows
from prefopt.errors import UserError

logger = logging.getLogger(__name__)

LENGTH, DIFFICULTY, MODEL = "length", "instruction_difficulty", "model"
_REQUIRED = ("output_1", "output_2", "preference")


class AnnotationError(UserError):
    """Annotations that cannot be evaluated as asked (an unknown model, a bad preference value, ...)."""


def read_annotations(path: str | Path) -> list[dict[str, Any]]:
    """Read pairwise annotations: AlpacaEval's JSON list of dicts, or JSON Lines / parquet with the same fields.

    Each record needs ``output_1`` (baseline), ``output_2`` (model) and ``preference``; ``instruction``,
    ``generator_1``, ``generator_2`` and ``instruction_difficulty`` are optional. Rows are read by
    :func:`prefopt.data.sources.read_rows`; every unreadable or incomplete row is reported at once
    in a :class:`~prefopt.data.DataValidationError` naming the file, row and field.
    """
    raw = read_rows(path)
    problems = list(raw.problems)
    records = []
    for number, record in raw.rows:
        if not isinstance(record, dict):
            message = f"expected a JSON object, got {type(record).__name__}"
            problems.append(Problem(raw.source, number, None, "wrong_type", message))
            continue
        missing = [field for field in _REQUIRED if field not in record]
        problems.extend(
            Problem(raw.source, number, field, "missing_field", f"missing; every annotation needs {list(_REQUIRED)}")
            for field in missing
        )
        if not missing:
            records.append(record)
    if problems:
        raise DataValidationError(problems, n_rows=raw.n_rows, hint="Fix these annotation rows and rerun.")
    return records


def read_instruction_difficulty(path: str | Path) -> dict[str, float]:
    """Read a CSV with columns ``instruction`` and ``instruction_difficulty`` into a mapping."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"instruction", DIFFICULTY} - set(reader.fieldnames or ())
        if missing:
            raise DataSourceError(
                f"{path}: missing column(s) {sorted(missing)}; the header must name instruction,{DIFFICULTY}"
            )
        mapping = {}
        for lineno, record in enumerate(reader, start=2):
            try:
                mapping[record["instruction"]] = float(record[DIFFICULTY])
            except ValueError as err:
                raise DataSourceError(f"{path}, line {lineno}, field {DIFFICULTY!r}: {err}") from err
    return mapping


def glm_predictions(
    coefficients: Mapping[str, float], feature: np.ndarray, difficulty: np.ndarray | None
) -> np.ndarray:
    """Per-row ``sigmoid(theta_len * feature + theta_diff * difficulty + theta_model)``.

    Pass zeros as ``feature`` for the length-controlled prediction, ``tanh(z)`` for the GLM's
    uncontrolled one. ``difficulty`` is ignored (and may be None) without a difficulty term.
    """
    logits = coefficients[LENGTH] * np.asarray(feature, dtype=float) + coefficients[MODEL]
    if DIFFICULTY in coefficients:
        logits = logits + coefficients[DIFFICULTY] * np.asarray(difficulty, dtype=float)
    return _sigmoid(logits)


def length_feature(outputs_1: Sequence[str], outputs_2: Sequence[str]) -> np.ndarray:
    """``tanh((len(output_1) - len(output_2)) / std)``: character lengths, std with ddof = 1.

    The feature is 0 everywhere when the std is 0 (every length difference is the same).
    """
    delta = np.array([len(a) - len(b) for a, b in zip(outputs_1, outputs_2, strict=True)], dtype=float)
    std = delta.std(ddof=1) if len(delta) > 1 else 0.0
    return np.tanh(delta / std) if std > 0 else np.zeros_like(delta)


def length_controlled_winrate(
    annotations: Sequence[Mapping[str, Any]],
    *,
    model: str | None = None,
    baseline: str | None = None,
    instruction_difficulty: Mapping[str, float] | None = None,
    warn_extreme_changes: bool = True,
) -> dict[str, Any]:
    """Raw and length-controlled win rate of ``model`` against ``baseline`` (see module docstring).

    Args:
        annotations: records with ``output_1``, ``output_2``, ``preference`` (see :func:`read_annotations`).
        model: keep rows whose ``generator_2`` is ``model``; rows with ``generator_1 == model`` are
            flipped (outputs swapped, preference mirrored). Required if several models are present.
        baseline: keep only rows whose other generator is ``baseline``.
        instruction_difficulty: instruction -> gamma. Without it, a per-row ``instruction_difficulty``
            field is used when every row has one; otherwise the GLM has no difficulty term.
        warn_extreme_changes: log a warning when LC and raw win rates differ a lot
            (AlpacaEval's ``get_is_extreme_changes``).

    Returns:
        ``win_rate``, ``standard_error`` (100 * SEM of p), ``length_controlled_winrate``,
        ``lc_standard_error`` (100 * SEM of the per-row LC predictions; 0 without a difficulty
        term, where every prediction is the same), ``lc_delta_method_se`` (see
        :func:`lc_delta_method_se`), ``n``, ``n_dropped`` (rows without a preference), ``model``,
        ``baseline``, ``coefficients`` (name -> fitted theta), ``C`` (the chosen inverse L1
        strength; None when model and baseline are the same) and ``extreme_change`` (bool).
    """
    selected, model, baseline = _select(annotations, model, baseline)
    prefs = np.array([_preference(r["preference"], i) for i, r in selected], dtype=float)
    keep = ~np.isnan(prefs)
    selected = [item for item, k in zip(selected, keep) if k]
    rows = [r for _, r in selected]
    p = prefs[keep]
    if len(rows) < 2:
        raise AnnotationError(f"need at least 2 annotations with a preference, got {len(rows)}")
    result: dict[str, Any] = {
        "model": model,
        "baseline": baseline,
        "n": len(rows),
        "n_dropped": int((~keep).sum()),
        "win_rate": float(100 * p.mean()),
        "standard_error": float(100 * p.std(ddof=1) / math.sqrt(len(p))),
    }
    feature = length_feature([r["output_1"] for r in rows], [r["output_2"] for r in rows])
    difficulty = _difficulty(selected, instruction_difficulty)
    if model is not None and model == baseline:  # LC = 50 by construction, as in AlpacaEval
        coefficients = {LENGTH: 0.0, MODEL: 0.0} | ({DIFFICULTY: 0.0} if difficulty is not None else {})
        chosen_c, delta_se = None, 0.0
    else:
        coefficients, chosen_c = fit_glm(feature, difficulty, p)
        delta_se = lc_delta_method_se(coefficients, feature, difficulty)
    lc_rows = 100 * glm_predictions(coefficients, np.zeros_like(feature), difficulty)
    lc_sem = 0.0 if difficulty is None else float(lc_rows.std(ddof=1) / math.sqrt(len(lc_rows)))
    result |= {
        "length_controlled_winrate": float(lc_rows.mean()),
        "lc_standard_error": lc_sem,
        "lc_delta_method_se": delta_se,
        "coefficients": coefficients,
        "C": chosen_c,
    }
    result["extreme_change"] = is_extreme_change(result["win_rate"], result["length_controlled_winrate"])
    if warn_extreme_changes and result["extreme_change"]:
        logger.warning(
            "length-controlled win rate %.1f%% is very different from the raw %.1f%%; the GLM may have "
            "failed (too few annotations, or length almost perfectly predicts the preference)",
            result["length_controlled_winrate"],
            result["win_rate"],
        )
    return result


def fit_glm(
    feature: np.ndarray, difficulty: np.ndarray | None, p: np.ndarray, n_splits: int = 5
) -> tuple[dict[str, float], float]:
    """Fit the GLM on soft labels ``p`` exactly as AlpacaEval does; return (coefficients, chosen C).

    ``feature`` is :func:`length_feature`, ``difficulty`` the per-row gamma or None.
    """
    names, x = _design(feature, difficulty)
    n = len(p)
    x_dup = np.concatenate([x, x])
    y_dup = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    true_prob = np.concatenate([p, 1 - p])  # the weight of each duplicated row
    groups = np.concatenate([np.arange(n), np.arange(n)])
    scorer = make_scorer(_soft_log_loss, response_method="predict_proba", greater_is_better=False)
    with sklearn.config_context(enable_metadata_routing=True):
        scorer = scorer.set_score_request(true_prob=True)
        glm = LogisticRegressionCV(
            cv=GroupKFold(n_splits=min(n_splits, n)),
            scoring=scorer,
            solver="liblinear",
            fit_intercept=False,
            random_state=123,
            **_l1_penalty_kwargs(),
        )
        glm.set_fit_request(sample_weight=True)
        glm.fit(x_dup, y_dup, sample_weight=true_prob, groups=groups, true_prob=true_prob)
    chosen_c = float(np.ravel(glm.C_)[0])
    return dict(zip(names, (float(c) for c in glm.coef_[0]))), chosen_c


def lc_delta_method_se(
    coefficients: Mapping[str, float], feature: np.ndarray, difficulty: np.ndarray | None
) -> float:
    """Delta-method standard error (x100) of the LC win rate, from the GLM's Fisher information.

    ``Var(theta) ~ (X^T diag(q (1 - q)) X)^-1`` at the fitted theta (the L1 penalty is ignored);
    the LC win rate's gradient is ``mean_x q'_x * x_test``. Unlike ``lc_standard_error`` (spread of
    the per-row predictions, AlpacaEval's definition) it reflects the uncertainty of the fit, and it
    is not 0 without a difficulty term.
    """
    names, x = _design(feature, difficulty)
    theta = np.array([coefficients[name] for name in names])
    q = _sigmoid(x @ theta)
    information = x.T @ (x * (q * (1 - q))[:, None])
    x_test = x.copy()
    x_test[:, 0] = 0  # the length column
    q_test = _sigmoid(x_test @ theta)
    gradient = (x_test * (q_test * (1 - q_test))[:, None]).mean(axis=0)
    return float(100 * math.sqrt(max(gradient @ np.linalg.pinv(information) @ gradient, 0.0)))


def is_extreme_change(win_rate: float, lc_win_rate: float, abs_diff: float = 10, rel_diff: float = 4) -> bool:
    """AlpacaEval's warning rule: LC below ``min(WR - WR/4, WR - 10)`` or above
    ``max(WR + (100-WR)/4, WR + 10)``."""
    too_small = lc_win_rate < min(win_rate - win_rate / rel_diff, win_rate - abs_diff)
    too_large = lc_win_rate > max(win_rate + (100 - win_rate) / rel_diff, win_rate + abs_diff)
    return bool(too_small or too_large)


def _design(feature: np.ndarray, difficulty: np.ndarray | None) -> tuple[list[str], np.ndarray]:
    """The GLM's column names and design matrix: length, [difficulty], model (no intercept)."""
    names = [LENGTH] + ([DIFFICULTY] if difficulty is not None else []) + [MODEL]
    columns = [feature] + ([difficulty] if difficulty is not None else []) + [np.ones_like(feature)]
    return names, np.stack(columns, axis=1)


def _soft_log_loss(y_true: np.ndarray, y_pred: np.ndarray, true_prob: np.ndarray) -> float:
    """Continuous-label log loss on the duplicated rows (every row's target is p, whichever copy)."""
    target = np.where(y_true == 1, true_prob, 1 - true_prob)
    q = np.clip(y_pred, 1e-15, 1 - 1e-15)
    return float(-np.mean(target * np.log(q) + (1 - target) * np.log(1 - q)))


def _l1_penalty_kwargs() -> dict[str, Any]:
    """An L1 penalty in the spelling of the installed scikit-learn (``penalty`` is deprecated in 1.8)."""
    major, minor = (int(part) for part in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        return {"l1_ratios": (1.0,), "use_legacy_attributes": False}
    return {"penalty": "l1"}


def _select(
    annotations: Sequence[Mapping[str, Any]], model: str | None, baseline: str | None
) -> tuple[list[tuple[int, Mapping[str, Any]]], str | None, str | None]:
    """(record index, record) of ``model`` vs ``baseline``, oriented so that the model is ``output_2``."""
    if model is None:
        models = sorted({str(r.get("generator_2")) for r in annotations if "generator_2" in r})
        if len(models) > 1:
            raise AnnotationError(
                f"annotations compare several models {models}; choose one with model=... (--model)"
            )
        model = models[0] if models else None
    rows: list[tuple[int, Mapping[str, Any]]] = []
    for index, record in enumerate(annotations):
        gen_1, gen_2 = record.get("generator_1"), record.get("generator_2")
        if model is not None and gen_2 != model and gen_1 == model:
            record = _flipped(record)
        elif model is not None and gen_2 != model and "generator_2" in record:
            continue
        if baseline is not None and record.get("generator_1") != baseline:
            continue
        rows.append((index, record))
    if baseline is None:
        baselines = sorted({str(r.get("generator_1")) for _, r in rows if "generator_1" in r})
        if len(baselines) > 1:
            raise AnnotationError(
                f"{model!r} is compared with several baselines {baselines}; choose one (--baseline)"
            )
        baseline = baselines[0] if baselines else None
    if not rows:
        raise AnnotationError(f"no annotations compare model {model!r} with baseline {baseline!r}")
    return rows, model, baseline


def _flipped(record: Mapping[str, Any]) -> dict[str, Any]:
    """The same judgment with the two outputs swapped (preference 1 <-> 2, soft values mirrored)."""
    flipped = dict(record)
    flipped["output_1"], flipped["output_2"] = record["output_2"], record["output_1"]
    flipped["generator_1"], flipped["generator_2"] = record.get("generator_2"), record.get("generator_1")
    pref = record["preference"]
    if isinstance(pref, (int, float)) and not isinstance(pref, bool) and pref != 0 and not math.isnan(pref):
        flipped["preference"] = 3 - pref
    return flipped


def _preference(value: Any, row: int) -> float:
    """Map a raw preference to p in [0, 1] (tie 0 -> 0.5); NaN when the row has no preference."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value == 0 or 1 <= value <= 2):
        raise AnnotationError(
            f"annotation {row}, field 'preference': {value!r} is not in [1, 2] (2 = model wins) or 0 (tie); "
            "fix the judge output or drop the row"
        )
    return 0.5 if value == 0 else float(value) - 1


def _difficulty(
    rows: Sequence[tuple[int, Mapping[str, Any]]], mapping: Mapping[str, float] | None
) -> np.ndarray | None:
    """Per-row instruction difficulty from ``mapping`` or from the rows' own field; None when absent.

    ``rows`` are (record index, record) pairs; the index names the record in errors.
    """
    if mapping is not None:
        missing = [i for i, r in rows if r.get("instruction") not in mapping]
        if missing:
            raise AnnotationError(
                f"annotation {missing[0]} (and {len(missing) - 1} more), field 'instruction': no difficulty "
                "for it in the given mapping; add it to the CSV or drop the mapping"
            )
        return np.array([mapping[r["instruction"]] for _, r in rows], dtype=float)
    if rows and all(r.get(DIFFICULTY) is not None for _, r in rows):
        return np.array([r[DIFFICULTY] for _, r in rows], dtype=float)
    return None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -x))
