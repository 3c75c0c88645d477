"""Two processes on CPU through ``accelerate launch`` (gloo): ``prefopt train`` runs data parallel with each
reference mode and saves once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import save_tiny_model

REPO = Path(__file__).resolve().parents[1]
PAIRS, BATCH, STEPS, PROCESSES = 16, 2, 3, 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("reference", "lora"), [("precomputed", None), ("live", None), ("adapter_disabled", {"r": 4, "alpha": 8})]
)
def test_accelerate_launch_two_cpu_processes(tmp_path, reference, lora):
    model_dir = save_tiny_model(tmp_path / "tiny")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"What is {i} + {i}?",
                    "chosen": f"{2 * i}",
                    "rejected": f"I think it is {2 * i + 1}.",
                }
            )
            + "\n"
            for i in range(PAIRS)
        )
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": model_dir, "lora": lora},
                "data": {"train": str(pairs)},
                "loss": {
                    "name": "dpo",
                    "beta": 0.1,
                    "reference": reference,
                    "reference_cache_dir": str(tmp_path / "reference-cache"),
                },
                "optim": {"lr": 1e-3},
                "train": {"output_dir": str(tmp_path / "out"), "max_steps": STEPS, "batch_size": BATCH},
                "logging": {"logging_steps": 1},
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "recipes/accelerate/multi_cpu.yaml"),
        "--num_processes",
        str(PROCESSES),
        "--main_process_port",
        str(free_port()),
        "-m",
        "prefopt",
        "train",
        str(recipe),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-4000:]

    out = tmp_path / "out"
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    assert {weights, "tokenizer.json", "recipe.yaml", "trainer_state.json"} <= {p.name for p in out.iterdir()}
    state = json.loads((out / "trainer_state.json").read_text())
    # each step consumed BATCH pairs on each of the PROCESSES ranks: a single process would be at half this epoch
    assert state["global_step"] == STEPS
    assert state["epoch"] == pytest.approx(STEPS * BATCH * PROCESSES / PAIRS)
    assert result.stdout.count(f"prefopt train: {STEPS} steps") == 1  # printed by the main process only
