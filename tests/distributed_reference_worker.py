"""One process of the sharded reference test (``tests/test_reference_sharded.py``), launched by torchrun.

Usage: ``torchrun --nproc_per_node N distributed_reference_worker.py MODEL_DIR CACHE_DIR``; prints how many
batches this process ran.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from test_reference_sharded import sharded_pairs

import prefopt.reference as reference
from prefopt.models import load_model
from prefopt.reference import Processes, add_reference_logps


def main(model_dir: str, cache_dir: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    model = load_model(model_dir, device="cpu")
    processes = Processes(dist.get_rank(), dist.get_world_size())
    forwards = []
    real = reference.completion_logps
    reference.completion_logps = lambda *a, **k: forwards.append(1) or real(*a, **k)
    add_reference_logps(sharded_pairs(), model, batch_size=2, cache_dir=cache_dir, progress=False, processes=processes)
    print(f"rank {processes.rank}: {len(forwards)} batches")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
    os._exit(0)
