"""``TrainingArguments`` keywords whose names differ across the supported transformers releases.

transformers 5.21 renamed ``gradient_checkpointing`` / ``gradient_checkpointing_kwargs`` to
``activation_checkpointing`` / ``activation_checkpointing_kwargs`` (the old names stay as deprecated
aliases until v6); 5.20 and older, which vLLM 0.33 pins, know only the old names. prefopt builds
the keywords from the fields the installed ``TrainingArguments`` actually has, so one code path
runs on every release from the pyproject floor up (CI: ``.ci/run``'s version matrix).
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

from transformers import TrainingArguments

# Non-reentrant checkpointing: the reentrant variant re-runs the forward in the backward, which under
# DDP with find_unused_parameters (the Trainer's default for a PEFT model) marks parameters ready twice.
CHECKPOINTING_KWARGS: dict[str, Any] = {"use_reentrant": False}


@cache
def training_argument_fields() -> frozenset[str]:
    """The field names of the installed ``TrainingArguments``."""
    return frozenset(f.name for f in dataclasses.fields(TrainingArguments))


def checkpointing_arguments(enabled: bool) -> dict[str, Any]:
    """``TrainingArguments`` keywords that switch (non-reentrant) activation checkpointing on or off."""
    fields = training_argument_fields()
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    arguments: dict[str, Any] = {name: enabled}
    if enabled:
        arguments[f"{name}_kwargs"] = dict(CHECKPOINTING_KWARGS)
    return arguments
