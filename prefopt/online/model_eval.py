"""Accuracy and length of any model on verifiable problems: what ``prefopt eval accuracy`` runs.

A model is a local directory, a built-in name, a Hub id, or a round of a rounds run
(``runs/quickstart@3``, :mod:`prefopt.online.round_policy`). Problems are read as ``prefopt rounds``
reads them (:func:`prefopt.online.problems.load_problems`), in one of :data:`PROBLEM_FORMATS`:
``gsm8k`` (``question`` / ``answer`` / ``id`` when present: GSM8K and prefopt's arithmetic files) or
``math500`` (``problem`` / ``solution`` / ``unique_id``); ``auto`` picks by the fields present. The
instruction appended to each question defaults to the run's own (for ``RUN@ROUND`` and exported
rounds), else the format's. Two models on the same problems compare *paired* (:func:`paired_difference`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefopt.data import DataSourceError
from prefopt.evaluate.accuracy import AccuracyReport, evaluate_accuracy
from prefopt.models import load_model, load_tokenizer, resolve
from prefopt.online.problems import Problem, load_problems
from prefopt.online.round_policy import EXPORT_INFO, load_round, parse_round
from prefopt.online.sampler import make_sampler, resolve_engine
from prefopt.sampling import SamplingParams
from prefopt.verification import Truncated, Verifier


@dataclass(frozen=True)
class ProblemFormat:
    """Field names of a problem source and the instruction its answers are checked against."""

    question_field: str
    answer_field: str
    id_field: str | None
    instruction: str


PROBLEM_FORMATS: dict[str, ProblemFormat] = {
    # the instructions of recipes/online/gsm8k.yaml and recipes/online/math500.yaml
    "gsm8k": ProblemFormat("question", "answer", "id",
                           "Solve the problem step by step. Write the final answer as a number on the last line, "
                           "after ####."),
    "math500": ProblemFormat("problem", "solution", "unique_id",
                             "Please reason step by step, and put your final answer within \\boxed{}."),
}


def read_problems(
    source: str, problem_format: str = "auto", *, split: str = "test", config_name: str | None = None,
    limit: int | None = None, fields: dict[str, str | None] | None = None,
) -> tuple[list[Problem], ProblemFormat]:
    """Problems of ``source`` in ``problem_format`` (``auto``: the first format whose fields the rows have).

    ``fields`` (``question_field`` / ``answer_field`` / ``id_field``) override the format's names.
    Bad rows raise :class:`DataSourceError` naming the source, row and field.
    """
    if problem_format != "auto" and problem_format not in PROBLEM_FORMATS:
        raise DataSourceError(f"unknown problem format {problem_format!r}; choose auto, {', '.join(PROBLEM_FORMATS)}")
    names = list(PROBLEM_FORMATS) if problem_format == "auto" else [problem_format]
    errors: list[ValueError] = []
    for name in names:
        fmt = PROBLEM_FORMATS[name]
        chosen = {"question_field": fmt.question_field, "answer_field": fmt.answer_field, "id_field": fmt.id_field,
                  **(fields or {})}
        try:
            problems = load_problems(source, split=split, config_name=config_name, limit=limit, **chosen)
        except ValueError as err:
            errors.append(err)
            continue
        if not problems:
            raise DataSourceError(f"{source}: no problems to evaluate")
        return problems, fmt
    # auto: a format whose fields fail only past row 1 is the file's format, with a bad row
    deep = [e for e in errors if " row 1:" not in str(e)]
    raise DataSourceError(str((deep or errors)[0])) from None


@dataclass
class LoadedModel:
    """A model to evaluate, its tokenizer, where its weights are on disk (vLLM) and the run's instruction."""

    label: str
    model: Any
    tokenizer: Any
    weights_dir: Path | None
    instruction: str | None


def load_any_model(spec: str, dtype: str | None = None, trust_remote_code: bool = False) -> LoadedModel:
    """Load ``spec``: ``RUN_DIR@ROUND``, a built-in name, a local directory or a Hub id.

    ``dtype`` ``None``: the run's ``model.dtype`` for a round, else float32. A round (or a directory
    written by ``prefopt export``) brings its run's instruction.
    """
    if parse_round(spec) is not None:
        model, tokenizer, recipe = load_round(spec, dtype)
        return LoadedModel(spec, model, tokenizer, None, recipe.problems.instruction)
    model = load_model(spec, dtype=dtype or "float32", trust_remote_code=trust_remote_code)
    path, gguf = resolve(spec)
    weights = Path(path) if gguf is None and Path(path).is_dir() else None
    info = weights / EXPORT_INFO if weights is not None else None
    instruction = json.loads(info.read_text())["instruction"] if info is not None and info.is_file() else None
    return LoadedModel(spec, model, load_tokenizer(spec, trust_remote_code=trust_remote_code), weights, instruction)


def evaluate_model(
    loaded: LoadedModel, problems: list[Problem], instruction: str, verifier: Verifier, params: SamplingParams,
    engine: str = "hf", progress: bool = True, truncated: Truncated = "incorrect", trust_remote_code: bool = False,
) -> AccuracyReport:
    """Answer every problem with ``loaded`` (greedy, or ``params.n`` samples), verify and summarize."""
    if resolve_engine(engine) == "vllm":
        if loaded.weights_dir is None:
            raise DataSourceError(f"{loaded.label}: the vLLM engine needs weights in a directory; "
                                  "export a run's round first (prefopt export) or use --engine hf")
        dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
        sampler = make_sampler("vllm", loaded.tokenizer, model_path=loaded.weights_dir, dtype=dtype,
                               trust_remote_code=trust_remote_code)
    else:
        sampler = make_sampler("hf", loaded.tokenizer, model=loaded.model, progress=progress)
    items = [p.prompt_item(instruction) for p in problems]
    return evaluate_accuracy(sampler, items, [p.gold for p in problems], verifier, params, truncated)
