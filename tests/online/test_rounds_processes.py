"""``prefopt rounds`` on several processes: sharding, and a 2-process CPU run equal to a 1-process run.

The 2-process run (``accelerate launch``, gloo) samples and evaluates each process's shard of the
prompts and trains data parallel. Batch-invariant sampling makes its rollouts and held-out outcomes
identical to a 1-process run; with the same global batch (1 pair on each of 2 processes = 2 pairs on
one) the trained adapters agree to float tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_rounds import QUESTIONS, write_problems, without_timings

from prefopt.processes import Processes

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("n_items", [0, 1, 4, 7])
def test_shards_cover_the_list_in_order(count, n_items):
    items = list(range(n_items))
    shards = [Processes(index, count).shard(items) for index in range(count)]
    assert [x for shard in shards for x in shard] == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_one_process_is_trivial():
    group = Processes.launched()
    assert (group.rank, group.world) == (0, 1) and group.is_main
    assert group.shard([3, 1, 2]) == [3, 1, 2] and group.gather([3, 1]) == [3, 1]
    group.wait()


def _recipe(tmp_path: Path, model_dir: str, name: str, batch_size: int) -> Path:
    raw = {
        "run": {"name": name, "output_root": str(tmp_path / "runs")},
        "model": {"name_or_path": model_dir, "lora": {"r": 4, "alpha": 8}},
        "problems": {"train": write_problems(tmp_path / "train.jsonl", QUESTIONS[:6], "train"),
                     "heldout": write_problems(tmp_path / "heldout.jsonl", QUESTIONS, "heldout"),
                     "instruction": "Answer after ####."},
        "rounds": {"count": 2, "prompts_per_round": 3, "reference": "previous"},
        "sampler": {"engine": "hf", "n": 3, "max_new_tokens": 6, "batch_size": 2, "temperature": 1.0},
        "verifier": {"name": "exact"},
        "reward": {"name": "kimi"},
        "pairs": {"strategy": "best_vs_worst"},
        "loss": {"name": "dpo", "beta": 0.1, "reference": "adapter_disabled"},
        "optim": {"lr": 0.01},
        "train": {"epochs": 1, "batch_size": batch_size, "max_length": 256, "max_prompt_length": 200},
        "eval": {"max_new_tokens": 6, "batch_size": 3},
        "logging": {"report_to": "none", "logging_steps": 1},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _launch(recipe: Path, tmp_path: Path, num_processes: int) -> subprocess.CompletedProcess:
    from test_distributed import free_port

    prefix = [] if num_processes == 1 else [
        "-m", "accelerate.commands.launch", "--config_file", str(REPO / "recipes/accelerate/multi_cpu.yaml"),
        "--num_processes", str(num_processes), "--main_process_port", str(free_port()),
    ]
    command = [sys.executable, *prefix, "-m", "prefopt", "rounds", str(recipe), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, tiny_model_dir):
    one = _launch(_recipe(tmp_path, tiny_model_dir, "one", batch_size=2), tmp_path, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch(_recipe(tmp_path, tiny_model_dir, "two", batch_size=1), tmp_path, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("| round |") == 1  # the table is printed once, by the main process
    a, b = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    for r in range(3):
        ra, rb = a / f"round_{r:03d}", b / f"round_{r:03d}"
        ea, eb = (json.loads((d / "eval.json").read_text()) for d in (ra, rb))
        assert ea["outcomes"] == eb["outcomes"] and ea["lengths"] == eb["lengths"], f"round {r}: evaluation differs"
        if r == 0:
            continue
        for name in ("rollouts.jsonl", "scored.jsonl", "pairs.jsonl"):
            assert (ra / name).read_text() == (rb / name).read_text(), f"round {r}: {name} differs"
        wa = load_file(ra / "policy" / "adapter_model.safetensors")
        wb = load_file(rb / "policy" / "adapter_model.safetensors")
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-5, msg=f"round {r}: {key}")
        ma, mb = (without_timings(json.loads((d / "metrics.json").read_text())) for d in (ra, rb))
        assert {k: v for k, v in ma.items() if k != "tokens_per_second"} == \
            {k: v for k, v in mb.items() if k != "tokens_per_second"}
    manifest = json.loads((b / "manifest.json").read_text())
    assert set(manifest["rounds"]["2"]) == {"sample", "score", "pairs", "train", "eval"}
