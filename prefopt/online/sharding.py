"""Data-parallel sampling for ``prefopt rounds`` under ``accelerate launch --num_processes N``.

:class:`ShardedSampler` wraps an engine: each process generates the rollouts of its contiguous
shard of the prompt list and the shards are gathered in rank order, so every process holds the
full, ordered list. Because sampling is batch invariant (a prompt's rollouts depend only on the
seed, its id and the sample index), the gathered rollouts equal those of a one-process run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prefopt.sampling import PromptItem, Sampler, SamplerStats, SamplingParams
from prefopt.online.types import Rollout
from prefopt.processes import Processes


class ShardedSampler:
    """A sampler whose ``sample`` runs on this process's shard of the prompts and returns every shard's rollouts.

    The stats add up prompts, rollouts and tokens over the processes; ``seconds`` is this process's
    wall time including the gather (the slowest shard bounds it).
    """

    def __init__(self, sampler: Sampler, processes: Processes) -> None:
        self.sampler, self.processes = sampler, processes

    def sample(
        self, prompts: Sequence[PromptItem], params: SamplingParams, round_index: int = 0
    ) -> tuple[list[Rollout], SamplerStats]:
        """``params.n`` rollouts per prompt, grouped by prompt in input order, as one process would return them."""
        if self.processes.world == 1:
            return self.sampler.sample(prompts, params, round_index)
        start = time.perf_counter()
        rollouts, stats = self.sampler.sample(self.processes.shard(prompts), params, round_index)
        rollouts = self.processes.gather(rollouts)
        totals = self.processes.all_gather((stats.prompts, stats.rollouts, stats.generated_tokens))
        prompts_n, rollouts_n, tokens = (sum(column) for column in zip(*totals))
        return rollouts, SamplerStats(prompts_n, rollouts_n, tokens, time.perf_counter() - start)
