"""Per-round metrics of ``prefopt rounds`` to the experiment trackers named in ``logging.report_to``.

After each round's evaluation, its ``metrics.json`` goes to every tracker, step = the round index,
under stable names:

- per evaluation set: ``round/accuracy``, ``round/ci_low``, ``round/ci_high``, ``round/mean_length``,
  ``round/median_length``, ``round/truncation_rate`` and, from round 1, ``round/accuracy_diff_vs_round0``,
  ``round/diff_p_value``, ``round/length_change_vs_round0``;
- per round: ``round/pairs``, ``round/train_accuracy``, ``round/train_mean_length``,
  ``round/train_truncation_rate``, ``round/sampling_seconds``, ``round/training_seconds``,
  ``round/eval_seconds``.

One group per evaluation set: TensorBoard gets one run per set (``<run>/tensorboard/<set>/``, so a
chart of ``round/accuracy`` has a line per set) and the per-round values in ``<run>/tensorboard/``;
Weights & Biases gets ``<set>/round/accuracy`` and ``round/pairs``. ``report_to: none`` logs nothing,
``all`` logs to every installed tracker. An unknown or uninstalled tracker is an error when the
recipe loads (:func:`check_trackers`), not mid-run.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Protocol

SET_KEYS = ("accuracy", "ci_low", "ci_high", "mean_length", "median_length", "truncation_rate",
            "accuracy_diff_vs_round0", "diff_p_value", "length_change_vs_round0")
ROUND_KEYS = ("pairs", "train_accuracy", "train_mean_length", "train_truncation_rate", "sampling_seconds",
              "training_seconds", "eval_seconds")


class Tracker(Protocol):
    """A destination for per-round scalars."""

    def log(self, groups: dict[str | None, dict[str, float]], step: int) -> None:
        """Log ``groups`` (evaluation set name, or ``None`` for per-round values → tag → value) at ``step``."""
        ...


class TensorBoardTracker:
    """TensorBoard event files under ``<run>/tensorboard/`` (one sub-run per evaluation set)."""

    def __init__(self, root: Path, run_name: str) -> None:
        self.directory = root / "tensorboard"

    def log(self, groups: dict[str | None, dict[str, float]], step: int) -> None:
        """Write each group's scalars with a short-lived writer (nothing stays open between rounds)."""
        from torch.utils.tensorboard import SummaryWriter

        for group, scalars in groups.items():
            writer = SummaryWriter(log_dir=str(self.directory / group if group else self.directory))
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step=step)
            writer.close()


class WandbTracker:
    """A Weights & Biases run (``$WANDB_PROJECT``, default ``prefopt``), resumed across rounds and restarts."""

    def __init__(self, root: Path, run_name: str) -> None:
        self.root, self.run_name = root, run_name
        digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]
        self.run_id = f"{run_name}-{digest}"

    def log(self, groups: dict[str | None, dict[str, float]], step: int) -> None:
        """Log every group as ``<set>/<tag>`` (per-round values as ``<tag>``) in one step."""
        import wandb

        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "prefopt"), name=self.run_name, id=self.run_id,
                         resume="allow", dir=str(self.root))
        run.log({(f"{group}/{tag}" if group else tag): value for group, scalars in groups.items()
                 for tag, value in scalars.items()}, step=step)
        run.finish()


TRACKERS: dict[str, tuple[str, Callable[[Path, str], Tracker]]] = {
    "tensorboard": ("tensorboard", TensorBoardTracker),
    "wandb": ("wandb", WandbTracker),
}
"""Tracker name → (the module it needs, its class)."""


def _installed(name: str) -> bool:
    return importlib.util.find_spec(TRACKERS[name][0]) is not None


def resolve_trackers(report_to: str | list[str]) -> list[str]:
    """The tracker names of ``logging.report_to`` (``none`` → none, ``all`` → every installed one)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return [name for name in TRACKERS if _installed(name)]
    return names


def check_trackers(report_to: str | list[str]) -> None:
    """Raise ``ValueError`` (one line naming ``logging.report_to``) for an unknown or uninstalled tracker."""
    for name in resolve_trackers(report_to):
        if name not in TRACKERS:
            raise ValueError(f"logging.report_to: unknown tracker {name!r} for rounds; choose from none, all, "
                             f"{', '.join(TRACKERS)}")
        if not _installed(name):
            raise ValueError(f"logging.report_to: {name} is not installed; pip install {TRACKERS[name][0]} "
                             "(or remove it from logging.report_to)")


def round_scalars(metrics: dict[str, Any]) -> dict[str | None, dict[str, float]]:
    """The tracked scalars of one round's ``metrics.json``: per evaluation set, and per round (``None``)."""
    groups: dict[str | None, dict[str, float]] = {
        name: {f"round/{k}": float(values[k]) for k in SET_KEYS if values.get(k) is not None}
        for name, values in metrics["sets"].items()
    }
    groups[None] = {f"round/{k}": float(metrics[k]) for k in ROUND_KEYS if metrics.get(k) is not None}
    return groups


def log_round(report_to: str | list[str], root: Path, run_name: str, metrics: dict[str, Any]) -> None:
    """Send one round's metrics to every tracker of ``report_to``."""
    groups = round_scalars(metrics)
    for name in resolve_trackers(report_to):
        TRACKERS[name][1](root, run_name).log(groups, step=int(metrics["round"]))
