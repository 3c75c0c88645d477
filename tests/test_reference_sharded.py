"""The reference precomputation shared by two gloo processes writes the same cache as one process; ZeRO-3
partitioned weights are gathered for it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import types
from pathlib import Path

import datasets
import pytest
import torch
from conftest import make_tiny_model, save_tiny_model
from safetensors.torch import load_file
from test_distributed import free_port

from prefopt.models import load_model
from prefopt.reference import Processes, add_reference_logps

TESTS = Path(__file__).resolve().parent


def sharded_pairs(n: int = 11) -> datasets.Dataset:
    """``n`` tokenized pairs of varied lengths (an odd count, so the shares differ in size)."""
    gen = torch.Generator().manual_seed(7)

    def ids(length: int) -> list[int]:
        return torch.randint(3, 250, (length,), generator=gen).tolist()

    return datasets.Dataset.from_list(
        [{"prompt_ids": ids(2 + i % 4), "chosen_ids": ids(1 + (3 * i) % 7), "rejected_ids": ids(2 + i % 5)} for i in range(n)]
    )


def test_processes_validate_the_rank():
    with pytest.raises(ValueError, match="rank 2"):
        Processes(2, 2)


@pytest.mark.slow
def test_two_processes_write_the_single_process_cache(tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny")
    single, shared = tmp_path / "single", tmp_path / "shared"
    add_reference_logps(sharded_pairs(), load_model(model_dir, device="cpu"), batch_size=2, cache_dir=single,
                        progress=False)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(TESTS / "distributed_reference_worker.py"), model_dir, str(shared)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "rank 0: 3 batches" in result.stdout and "rank 1: 3 batches" in result.stdout  # 6 batches, shared
    (one,), (two,) = list(single.iterdir()), list(shared.iterdir())
    assert one.name == two.name  # the same key: the same model and data
    want, got = load_file(one), load_file(two)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name


def test_zero3_partitioned_parameters_are_gathered_for_the_precomputation(tiny_tokenizer, tmp_path, monkeypatch):
    """A stand-in ``deepspeed.zero.GatheredParameters`` fills partitioned (empty) weights only inside its context."""
    model = make_tiny_model(tiny_tokenizer)
    want = add_reference_logps(sharded_pairs(), model, batch_size=2, cache_dir=tmp_path / "plain", progress=False)
    full = {p: p.data for p in model.parameters()}
    for param in model.parameters():
        param.ds_id = id(param)
        param.data = torch.empty(0)
    gathered: list[int] = []

    @contextlib.contextmanager
    def gathered_parameters(params, modifier_rank=None):
        gathered.append(len(params))
        for p in params:
            p.data = full[p]
        yield
        for p in params:
            p.data = torch.empty(0)

    fake = types.SimpleNamespace(zero=types.SimpleNamespace(GatheredParameters=gathered_parameters))
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    got = add_reference_logps(sharded_pairs(), model, batch_size=2, cache_dir=tmp_path / "zero3", progress=False)
    assert gathered == [len(full)]
    assert got["ref_chosen_logps"] == want["ref_chosen_logps"]
    assert got["ref_rejected_logps"] == want["ref_rejected_logps"]
    assert [p.name for p in (tmp_path / "zero3").iterdir()] == [p.name for p in (tmp_path / "plain").iterdir()]
