"""Find the newest *complete* Hugging Face Trainer checkpoint, never one a killed process was writing.

``transformers.trainer_utils.get_last_checkpoint`` returns the highest ``checkpoint-N`` directory,
whatever is in it; a process killed while saving leaves a directory with a torn weights file or
no ``trainer_state.json``, and resuming from it crashes or silently trains from garbage.
:func:`last_complete_checkpoint` walks the checkpoints newest first and returns the first one that
:func:`checkpoint_problem` finds complete:

- ``trainer_state.json`` (the Trainer writes it last) parses and records ``global_step == N``;
- a weights file is present (full model or PEFT adapter, safetensors, sharded safetensors with
  every shard of the index, or ``.bin``), or the sharded states of DeepSpeed / FSDP;
- every safetensors file's header parses and its tensors fit the file (a truncated file fails);
- every torch file (``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth``, ``*.bin``) is a readable
  zip archive (torch writes the archive's directory last, so a truncated file fails). Nothing is
  unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SAFETENSORS = ("model.safetensors", "adapter_model.safetensors")
_BIN = ("pytorch_model.bin", "adapter_model.bin")
_INDEX = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_TORCH_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt")


def _safetensors_problem(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
    except (OSError, struct.error, ValueError) as err:
        return f"{path.name}: unreadable safetensors header ({err})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if path.stat().st_size < 8 + size + end:
        return f"{path.name}: truncated ({path.stat().st_size} bytes, the header needs {8 + size + end})"
    return None


def _torch_file_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path):
            return None
    except (OSError, zipfile.BadZipFile) as err:
        return f"{path.name}: not a complete torch archive ({err})"


def _weights_problem(directory: Path) -> str | None:
    for name in _INDEX:
        if (directory / name).is_file():
            try:
                shards = sorted(set(json.loads((directory / name).read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError) as err:
                return f"{name}: unreadable index ({err})"
            missing = [s for s in shards if not (directory / s).is_file()]
            return f"{name}: missing shard(s) {missing}" if missing else None
    present = [name for name in (*_SAFETENSORS, *_BIN) if (directory / name).is_file()]
    sharded = [p.name for p in directory.iterdir() if p.name.startswith(("global_step", "pytorch_model_fsdp"))]
    return None if present or sharded else "no weights file"


def checkpoint_problem(directory: str | os.PathLike) -> str | None:
    """Why ``directory`` (a ``checkpoint-N``) cannot be resumed from, or ``None`` if it is complete."""
    directory = Path(directory)
    match = _CHECKPOINT.match(directory.name)
    state_path = directory / "trainer_state.json"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError) as err:
        return f"trainer_state.json: not valid JSON ({err})"
    if match and state.get("global_step") != int(match.group(1)):
        return f"trainer_state.json records global_step {state.get('global_step')!r}, not {match.group(1)}"
    problem = _weights_problem(directory)
    if problem:
        return problem
    for path in sorted(directory.iterdir()):
        if path.name.endswith(".safetensors"):
            problem = _safetensors_problem(path)
        elif path.name in _TORCH_FILES or path.name.endswith(".bin") or re.match(r"^rng_state.*\.pth$", path.name):
            problem = _torch_file_problem(path)
        if problem:
            return problem
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir`` (``None`` if there is none, or no directory).

    Incomplete checkpoints are skipped with a warning naming what is wrong; they are left in place.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = sorted(
        ((int(m.group(1)), path) for path in root.iterdir() if path.is_dir() and (m := _CHECKPOINT.match(path.name))),
        reverse=True,
    )
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        logger.warning("skipping the incomplete checkpoint %s (%s); resuming from an earlier one", path, problem)
    return None
