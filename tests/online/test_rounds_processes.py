"""``prefopt rounds`` on several processes: sharding, and a 2-process CPU run equal to a 1-process run.

The 2-process run (``accelerate launch``, gloo) samples and evaluates each process's shard of the
prompts and trains data parallel. Batch-invariant sampling makes its rollouts and held-out outcomes
identical to a 1-process run; with the same global batch (1 pair on each of 2 processes = 2 pairs on
one) and a pair count the global batch divides (else the data loader pads the last batch of some
processes with repeated pairs) the trained adapters agree to 1e-5.
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
from test_rounds import QUESTIONS, REWARD_MODULE, without_timings, write_problems

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
        "problems": {"train": write_problems(tmp_path / "train.jsonl", QUESTIONS, "train"),
                     "instruction": "Answer after ####."},
        "rounds": {"count": 2, "prompts_per_round": 4, "partition": "epochs", "reference": "previous"},
        "sampler": {"engine": "hf", "n": 3, "max_new_tokens": 6, "batch_size": 2, "temperature": 1.0},
        "verifier": {"name": "exact"},
        "reward": {"name": "sample_index"},  # never tied: every prompt gives a pair
        "pairs": {"strategy": "best_vs_worst"},
        "loss": {"name": "dpo", "beta": 0.1, "reference": "adapter_disabled"},
        "optim": {"lr": 0.01},
        "train": {"epochs": 1, "batch_size": batch_size, "max_length": 256, "max_prompt_length": 200},
        "eval": {"sets": {"test": {"path": write_problems(tmp_path / "test.jsonl", QUESTIONS, "test")},
                          "other": {"path": write_problems(tmp_path / "other.jsonl", QUESTIONS[2:], "other")}},
                 "max_new_tokens": 6, "batch_size": 3},
        "logging": {"report_to": "none", "logging_steps": 1},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _launch(recipe: Path, tmp_path: Path, num_processes: int) -> subprocess.CompletedProcess:
    from test_distributed import free_port

    (tmp_path / "register_reward.py").write_text(REWARD_MODULE)
    driver = tmp_path / "driver.py"
    driver.write_text("import sys, register_reward\nfrom prefopt.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    prefix = [] if num_processes == 1 else [
        "-m", "accelerate.commands.launch", "--config_file", str(REPO / "recipes/accelerate/multi_cpu.yaml"),
        "--num_processes", str(num_processes), "--main_process_port", str(free_port()),
    ]
    command = [sys.executable, *prefix, str(driver), "rounds", str(recipe), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, tiny_model_dir):
    one = _launch(_recipe(tmp_path, tiny_model_dir, "one", batch_size=2), tmp_path, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch(_recipe(tmp_path, tiny_model_dir, "two", batch_size=1), tmp_path, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run directory:") == 1  # the summary is printed once, by the main process
    a, b = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    for r in range(3):
        ra, rb = a / f"round_{r:03d}", b / f"round_{r:03d}"
        ea, eb = (json.loads((d / "eval.json").read_text())["sets"] for d in (ra, rb))
        for name in ("test", "other"):
            assert ea[name]["completions"] == eb[name]["completions"], f"round {r}: evaluation on {name} differs"
        if r == 0:
            continue
        for name in ("rollouts.jsonl", "scored.jsonl", "pairs.jsonl"):
            assert (ra / name).read_text() == (rb / name).read_text(), f"round {r}: {name} differs"
        wa = load_file(ra / "policy" / "adapter_model.safetensors")
        wb = load_file(rb / "policy" / "adapter_model.safetensors")
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-5, msg=f"round {r}: {key}")
        ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ra, rb))
        assert {n: without_timings(m) for n, m in ma["sets"].items()} == {n: without_timings(m) for n, m in mb["sets"].items()}
        assert (ma["pairs"], ma["train_accuracy"], ma["reward"]) == (mb["pairs"], mb["train_accuracy"], mb["reward"])
    manifest = json.loads((b / "manifest.json").read_text())
    assert set(manifest["rounds"]["2"]) == {"sample", "score", "pairs", "train", "eval"}


class FakeGroup(Processes):
    """Rank ``rank`` of ``world`` whose all_gather returns what ``parts[r]`` says each rank contributed."""

    parts: dict[int, object] = {}

    def all_gather(self, obj):
        return [obj if r == self.rank else FakeGroup.parts[r] for r in range(self.world)]


class RecordingSampler:
    """Rollouts named after the prompts it was given (one per prompt)."""

    def sample(self, prompts, params, round_index=0):
        from prefopt.online.types import Rollout
        from prefopt.sampling import SamplerStats

        rollouts = [Rollout(p.id, 0, p.prompt, p.id, [1], 1, "stop", round_index) for p in prompts]
        return rollouts, SamplerStats(len(prompts), len(rollouts), len(rollouts), 0.1)


def test_tensor_parallel_groups_share_a_shard_and_count_once():
    """4 processes, engines of 2: ranks 0-1 sample the first half, 2-3 the second; each half is gathered once."""
    from prefopt.online.sharding import ShardedSampler
    from prefopt.sampling import PromptItem, SamplingParams

    prompts = [PromptItem(f"p{i}", f"q{i}") for i in range(5)]
    seen = {}
    for rank in range(4):
        shard = Processes(rank // 2, 2).shard(prompts)
        seen[rank] = [p.id for p in shard]
        FakeGroup.parts[rank] = (RecordingSampler().sample(shard, SamplingParams())[0], len(shard), len(shard), len(shard))
    assert seen == {0: ["p0", "p1", "p2"], 1: ["p0", "p1", "p2"], 2: ["p3", "p4"], 3: ["p3", "p4"]}
    rollouts, stats = ShardedSampler(RecordingSampler(), FakeGroup(1, 4), group_size=2).sample(prompts, SamplingParams())
    assert [r.prompt_id for r in rollouts] == ["p0", "p1", "p2", "p3", "p4"]  # once each, in order
    assert (stats.prompts, stats.rollouts, stats.generated_tokens) == (5, 5, 5)
    with pytest.raises(ValueError, match="do not split into engine groups of 2"):
        ShardedSampler(RecordingSampler(), Processes(0, 3), group_size=2)


def test_vllm_parallelism_arguments():
    from prefopt.online.sharding import vllm_parallelism

    assert vllm_parallelism(Processes(), 2) == {"tensor_parallel_size": 2}  # vLLM starts its own workers
    assert vllm_parallelism(Processes(3, 4), 2) == {"tensor_parallel_size": 2,
                                                    "distributed_executor_backend": "external_launcher"}
    with pytest.raises(ValueError, match="does not divide the 3 launched processes"):
        vllm_parallelism(Processes(0, 3), 2)
