"""What a sampler takes and returns, shared by :mod:`prefopt.online` and :mod:`prefopt.evaluate`.

The engines live in :mod:`prefopt.online.sampler`; this module holds only the plain records and the
:class:`Sampler` protocol, so the evaluator and the rounds loop both import it downward (neither
imports the other through it). :func:`stream_seed` is the one definition of a rollout's random
stream: every engine derives the randomness of sample ``j`` of prompt ``id`` from
``(seed, id, j)`` alone, which makes the rollouts independent of batching and process count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    from prefopt.online.types import Prompt, Rollout


@dataclass(frozen=True)
class PromptItem:
    """A prompt to sample from: a stable ``id`` and the prompt (plain text or chat messages)."""

    id: str
    prompt: Prompt


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by both engines; nothing is read from the model's ``generation_config``.

    ``greedy`` overrides ``temperature``/``top_p`` (argmax decoding, for evaluation; ``n`` must be 1,
    since greedy samples would all be identical); ``n`` is the number of samples per prompt;
    ``batch_size`` counts prompts decoded together (HF only; vLLM schedules its own batches).
    ``seed`` with each prompt's id and sample index fixes every rollout (see :func:`stream_seed`).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    greedy: bool = False
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"SamplingParams: n, max_new_tokens and batch_size must be >= 1, got {self}")
        if self.greedy and self.n > 1:
            raise ValueError(
                f"SamplingParams: greedy decoding gives {self.n} identical samples per prompt; use n=1 with "
                "greedy=True, or sample (greedy=False, temperature > 0)"
            )
        if not self.greedy and (self.temperature <= 0 or not 0 < self.top_p <= 1):
            raise ValueError(
                f"SamplingParams: sampling needs temperature > 0 and 0 < top_p <= 1 (got {self.temperature}, "
                f"{self.top_p}); set greedy=True for argmax decoding"
            )


@dataclass(frozen=True)
class SamplerStats:
    """Throughput of one :meth:`Sampler.sample` call (generated tokens include EOS)."""

    prompts: int
    rollouts: int
    generated_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per wall-clock second."""
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


class Sampler(Protocol):
    """What the rounds loop and the evaluator need from an engine."""

    def sample(
        self, prompts: Sequence[PromptItem], params: SamplingParams, round_index: int = 0
    ) -> tuple[list[Rollout], SamplerStats]:
        """``params.n`` rollouts per prompt, grouped by prompt in input order."""
        ...


def stream_seed(seed: int, prompt_id: str, sample_index: int, *extra: int) -> int:
    """A 63-bit seed that depends only on its arguments (stable across processes, Python versions and runs).

    ``extra`` adds further counters (the HF engine passes the decoding step). Built on BLAKE2b, not
    Python's salted ``hash``, so every process derives the same stream for the same rollout.
    """
    key = "\x1f".join([str(int(seed)), prompt_id, str(int(sample_index)), *map(str, extra)])
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") >> 1
