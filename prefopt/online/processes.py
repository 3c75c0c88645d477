"""The processes of one ``prefopt rounds`` run: one, or N under ``accelerate launch``.

Under ``accelerate launch --num_processes N -m prefopt rounds RECIPE.yaml`` every process runs the
same loop. Sampling and evaluation are data parallel over prompts: each process generates the
rollouts of its contiguous shard of the prompt list and :meth:`Processes.gather` concatenates the
shards in rank order, so every process holds the full, ordered list. Because sampling is batch
invariant (a prompt's rollouts depend only on the seed, its id and the sample index), the gathered
rollouts equal those of a one-process run. Training is data parallel through the ``Trainer`` (DDP,
FSDP or DeepSpeed, as ``accelerate`` configures it). Only the main process writes the run directory
and the manifest; the others wait at a barrier after each step and re-read the manifest.

No distributed code of our own beyond this: the process group, the barrier and the gather are
``accelerate``'s (``PartialState``, ``wait_for_everyone``, ``gather_object``). Outside a launcher
(``WORLD_SIZE`` unset or 1) nothing is initialised and every call is trivial.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TypeVar

from prefopt.online.sampler import PromptItem, Sampler, SamplerStats, SamplingParams
from prefopt.online.types import Rollout

T = TypeVar("T")


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Processes:
    """This process's place among the run's processes, and the two collectives the rounds need."""

    def __init__(self) -> None:
        self.count = launched_processes()
        self._state = None
        if self.count > 1:
            import torch
            from accelerate import PartialState

            # no accelerator: the processes join one gloo group on the CPU (as prefopt train does)
            self._state = PartialState(cpu=not torch.accelerator.is_available())
        self.index = 0 if self._state is None else self._state.process_index

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory."""
        return self.index == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous share of ``items`` (sizes differ by at most one, earlier ranks larger)."""
        size, extra = divmod(len(items), self.count)
        start = self.index * size + min(self.index, extra)
        return list(items[start : start + size + (self.index < extra)])

    def gather(self, shard: list[T]) -> list[T]:
        """Every process's ``shard`` concatenated in rank order (the inverse of :meth:`shard`)."""
        if self._state is None:
            return list(shard)
        from accelerate.utils import gather_object

        return list(gather_object(shard))

    def wait(self) -> None:
        """Barrier: return once every process has arrived."""
        if self._state is not None:
            self._state.wait_for_everyone()


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
        if self.processes.count == 1:
            return self.sampler.sample(prompts, params, round_index)
        start = time.perf_counter()
        rollouts, stats = self.sampler.sample(self.processes.shard(prompts), params, round_index)
        rollouts = self.processes.gather(rollouts)
        totals = self.processes.gather([(stats.prompts, stats.rollouts, stats.generated_tokens)])
        prompts_n, rollouts_n, tokens = (sum(column) for column in zip(*totals))
        return rollouts, SamplerStats(prompts_n, rollouts_n, tokens, time.perf_counter() - start)
