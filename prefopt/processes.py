"""The processes of one job: one, or N under ``accelerate launch`` / ``torchrun``.

:class:`Processes` is this process's ``rank`` among ``world`` and the few collectives prefopt
needs over them: the reference precomputation shares its batches across ranks and gathers the
results; ``prefopt rounds`` samples and evaluates each rank's contiguous shard of the prompts,
gathers them in rank order, and waits for the others after each step. The collectives are
``torch.distributed``'s on the default process group (``accelerate``'s ``PartialState`` or the
trainer initialises it); with ``world == 1`` every call is trivial and nothing is initialised.
Objects travel with ``all_gather_object`` between the job's own processes (never to disk).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    """This process's place among the job's processes: ``rank`` of ``world``."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"process rank {self.rank} is not in 0..{self.world - 1}")

    @classmethod
    def launched(cls) -> Processes:
        """The processes a launcher started (``WORLD_SIZE``), their process group initialised; one without a launcher.

        Without an accelerator the processes join one gloo group on the CPU, as ``prefopt train`` does.
        """
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        import torch
        from accelerate import PartialState

        state = PartialState(cpu=not torch.accelerator.is_available())
        return cls(state.process_index, state.num_processes)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes shared files)."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous share of ``items`` (sizes differ by at most one, lower ranks larger)."""
        size, extra = divmod(len(items), self.world)
        start = self.rank * size + min(self.rank, extra)
        return list(items[start : start + size + (self.rank < extra)])

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` from every process, in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def gather(self, shard: list[T]) -> list[T]:
        """Every rank's ``shard`` concatenated in rank order (the inverse of :meth:`shard`)."""
        return [item for part in self.all_gather(shard) for item in part]

    def wait(self) -> None:
        """Barrier: return once every process has arrived."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
