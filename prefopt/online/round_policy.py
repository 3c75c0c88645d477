"""A round of a ``prefopt rounds`` run as a model: ``runs/quickstart@3`` → the policy after round 3.

:func:`parse_round` recognises the ``RUN_DIR@ROUND`` form; :func:`load_round` rebuilds that policy
(the recipe's initial model with the adapters of rounds ``1..ROUND`` merged, see
:mod:`prefopt.online.policy`) with its tokenizer; :func:`export_round` writes it as a plain Hugging
Face model directory (``model.safetensors``, ``config.json``, ``generation_config.json``, the
tokenizer files and its chat template) that ``AutoModelForCausalLM.from_pretrained`` loads without
prefopt, e.g. for lighteval or lm-evaluation-harness (docs/evaluate.md).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefopt.config import RecipeError, format_validation_error
from prefopt.io import atomic_directory
from prefopt.models import load_tokenizer
from prefopt.online.config import RoundsRecipe
from prefopt.online.policy import load_policy
from prefopt.online.run_dir import MANIFEST, RunDir

_SPEC = re.compile(r"^(?P<run>.+)@(?P<round>\d+)$")
EXPORT_INFO = "prefopt_export.json"


def parse_round(spec: str) -> tuple[Path, int] | None:
    """``"runs/quickstart@3"`` → ``(Path("runs/quickstart"), 3)``; anything else → ``None``."""
    match = _SPEC.match(spec)
    return (Path(match["run"]), int(match["round"])) if match else None


def _open_run(root: Path, index: int) -> tuple[RunDir, RoundsRecipe]:
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"{root} is not a prefopt rounds run directory (no {MANIFEST}); "
                                "give RUN_DIR@ROUND, e.g. runs/quickstart@3")
    run = RunDir(root)
    stored = dict(run.manifest.get("recipe") or {})
    stored["logging"] = {**stored.get("logging", {}), "report_to": "none"}  # trackers play no part here
    try:
        recipe = RoundsRecipe.model_validate(stored)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, f"{root / MANIFEST} (the run's stored recipe)", RoundsRecipe,
                                                  "rounds recipe")) from None
    trained = [r for r in range(1, recipe.rounds.count + 1) if run.done(r, "train")]
    if index > 0 and index not in trained:
        have = f"rounds 0-{max(trained)}" if trained else "only round 0 (the initial model)"
        raise FileNotFoundError(f"{root}@{index}: round {index} has not been trained; {root} has {have}")
    return run, recipe


def load_round(spec: str, dtype: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, RoundsRecipe]:
    """The policy after round ``ROUND`` of ``RUN_DIR@ROUND``, its tokenizer and the run's recipe.

    ``dtype`` overrides the recipe's ``model.dtype``.
    """
    parsed = parse_round(spec)
    if parsed is None:
        raise ValueError(f"{spec!r} is not of the form RUN_DIR@ROUND (e.g. runs/quickstart@3)")
    root, index = parsed
    run, recipe = _open_run(root, index)
    config = recipe.model if dtype is None else recipe.model.model_copy(update={"dtype": dtype})
    model = load_policy(config, run, index)
    tokenizer = load_tokenizer(config.name_or_path, trust_remote_code=config.trust_remote_code)
    return model, tokenizer, recipe


def export_round(spec: str, out_dir: str | Path, dtype: str | None = None) -> Path:
    """Write the merged policy of ``RUN_DIR@ROUND`` to ``out_dir`` (atomically; it must not exist yet)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new OUT_DIR")
    model, tokenizer, recipe = load_round(spec, dtype)
    info: dict[str, Any] = {"source": spec, "base_model": recipe.model.name_or_path, "dtype": str(model.dtype),
                            "instruction": recipe.problems.instruction}
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=1) + "\n")
        _shareable(tmp)
    return out


def _shareable(directory: Path) -> None:
    """The usual permissions (umask applied) for a directory built in a private temporary one."""
    umask = os.umask(0o022)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)
