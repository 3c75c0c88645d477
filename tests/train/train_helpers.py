"""Shared pieces of the training tests: tiny raw pairs, a log recorder, quiet trainer arguments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
from transformers import TrainerCallback

from prefopt.train import PreferenceConfig

TRL_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
LENGTH_METRICS = ("length/chosen", "length/rejected")


def raw_pairs(n: int = 8) -> list[dict[str, Any]]:
    """``n`` short conversational pairs (chosen brief and right, rejected long and wrong), distinct lengths."""
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "chosen": [{"role": "assistant", "content": f"{2 * i}"}],
            "rejected": [
                {
                    "role": "assistant",
                    "content": "Let me think step by step. " * (1 + i % 3) + f"It is {2 * i + 1}.",
                }
            ],
        }
        for i in range(n)
    ]


def pairs_dataset(n: int = 8) -> datasets.Dataset:
    return datasets.Dataset.from_list(raw_pairs(n))


def write_pairs(path: Path, n: int = 8) -> str:
    """Write :func:`raw_pairs` as JSONL and return the path."""
    path.write_text("".join(json.dumps(row) + "\n" for row in raw_pairs(n)))
    return str(path)


def quiet_config(output_dir: Path, **overrides: Any) -> PreferenceConfig:
    """Arguments for short deterministic CPU runs: no saving, no reporting, log every step."""
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "reference_cache_dir": str(output_dir / "reference-cache"),
        "seed": 0,
    }
    return PreferenceConfig(**{**settings, **overrides})


class LogRecorder(TrainerCallback):
    """Keeps every ``logs`` dict the trainer emits."""

    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        self.logs.append(dict(logs or {}))

    def train_losses(self) -> list[float]:
        return [log["loss"] for log in self.logs if "loss" in log]
