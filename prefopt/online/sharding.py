"""Data-parallel sampling for ``prefopt rounds`` under ``accelerate launch --num_processes N``.

:class:`ShardedSampler` wraps an engine: each process generates the rollouts of its contiguous
shard of the prompt list and the shards are gathered in rank order, so every process holds the
full, ordered list. Because sampling is batch invariant (a prompt's rollouts depend only on the
seed, its id and the sample index), the gathered rollouts equal those of a one-process run.

With vLLM tensor parallelism over ``group_size`` processes (``sampler.tensor_parallel_size``), the
processes of one group run one engine together and must send it the same prompts: the prompts are
sharded over the ``world / group_size`` groups, and only each group's first process contributes
its (identical) rollouts to the gather.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prefopt.online.types import Rollout
from prefopt.processes import Processes
from prefopt.sampling import PromptItem, Sampler, SamplerStats, SamplingParams


class ShardedSampler:
    """A sampler whose ``sample`` runs on this process's shard of the prompts and returns every shard's rollouts.

    The stats add up prompts, rollouts and tokens over the processes; ``seconds`` is this process's
    wall time including the gather (the slowest shard bounds it).
    """

    def __init__(self, sampler: Sampler, processes: Processes, group_size: int = 1) -> None:
        if processes.world % group_size:
            raise ValueError(f"{processes.world} processes do not split into engine groups of {group_size}")
        self.sampler, self.processes, self.group_size = sampler, processes, group_size

    def sample(
        self, prompts: Sequence[PromptItem], params: SamplingParams, round_index: int = 0
    ) -> tuple[list[Rollout], SamplerStats]:
        """``params.n`` rollouts per prompt, grouped by prompt in input order, as one process would return them."""
        world, group = self.processes.world, self.group_size
        if world == group:  # one engine (group) for all processes: nothing to shard
            return self.sampler.sample(prompts, params, round_index)
        start = time.perf_counter()
        groups = Processes(self.processes.rank // group, world // group)
        rollouts, stats = self.sampler.sample(groups.shard(prompts), params, round_index)
        leaders = self.processes.all_gather((rollouts, stats.prompts, stats.rollouts, stats.generated_tokens))[::group]
        rollouts = [rollout for part in leaders for rollout in part[0]]
        prompts_n, rollouts_n, tokens = (sum(part[k] for part in leaders) for k in (1, 2, 3))
        return rollouts, SamplerStats(prompts_n, rollouts_n, tokens, time.perf_counter() - start)


def vllm_parallelism(processes: Processes, tensor_parallel_size: int) -> dict[str, Any]:
    """The vLLM ``LLM(...)`` arguments for ``tensor_parallel_size`` GPUs per engine among ``processes``.

    One process: vLLM starts its own ``tensor_parallel_size`` workers. Several (``accelerate
    launch``): every process is one of the engine's ranks, on its own GPU, through vLLM's
    ``distributed_executor_backend="external_launcher"`` (the processes of a group of
    ``tensor_parallel_size`` consecutive ranks form one engine). Written against vLLM 0.33.
    """
    if processes.world > 1 and processes.world % tensor_parallel_size:
        raise ValueError(
            f"sampler.tensor_parallel_size={tensor_parallel_size} does not divide the {processes.world} launched "
            "processes; launch a multiple of it"
        )
    kwargs: dict[str, Any] = {"tensor_parallel_size": tensor_parallel_size}
    if processes.world > 1:
        kwargs["distributed_executor_backend"] = "external_launcher"
    return kwargs
