"""The vLLM engine (GPU, the ``gpu`` extra; written against the vLLM 0.33 offline API, imported lazily).

- The engine gets every setting explicitly: ``dtype`` (the recipe's model dtype, never vLLM's
  guess), ``trust_remote_code`` (off unless the recipe asks), ``generation_config="vllm"`` (the
  model's ``generation_config.json`` supplies no sampling defaults; every request sets top-k,
  min-p and the penalties to "off"), and with a LoRA adapter ``enable_lora`` and
  ``max_lora_rank`` (the adapter's ``r``, rounded up to a rank vLLM supports).
- Batch-invariant seeds: one request per ``(prompt, sample)`` with ``n=1`` and its own seed
  :func:`~prefopt.sampling.stream_seed` ``(seed, prompt id, sample index)``, so sample ``j`` of
  every prompt is its own stream, independent of batching and of the number of engines (vLLM's
  prefix cache shares the prompt's prefill between its samples).
- Finish reasons: vLLM's ``"stop"`` and ``"length"`` map to the rollout's; a request that ended
  any other way (``"abort"``, ``"error"``) is not an answer, so sampling fails with the request
  named instead of scoring a cut-off completion as finished (rerunning resumes the step).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from transformers import PreTrainedTokenizerBase

from prefopt.online.completions import make_rollouts, render_prompt
from prefopt.online.types import FINISH_REASONS, Rollout
from prefopt.sampling import PromptItem, SamplerStats, SamplingParams, stream_seed

logger = logging.getLogger(__name__)

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted max_lora_rank values


def import_vllm() -> ModuleType:
    """``import vllm``, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("vllm")
    except ImportError as err:
        raise ImportError("engine 'vllm' needs vLLM: pip install 'prefopt[gpu]' (or use engine: hf)") from err


def lora_rank_for_vllm(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of rank ``rank``."""
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")


def adapter_rank(lora_path: str | os.PathLike) -> int:
    """The rank ``r`` recorded in a PEFT adapter's ``adapter_config.json``."""
    path = Path(lora_path) / "adapter_config.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: cannot read the LoRA rank 'r' ({err}); pass max_lora_rank explicitly") from err


class VLLMSampler:
    """vLLM offline engine on a directory of (merged) weights, optionally with a LoRA adapter."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        tokenizer: PreTrainedTokenizerBase,
        *,
        dtype: str,
        trust_remote_code: bool = False,
        lora_path: str | os.PathLike | None = None,
        max_lora_rank: int | None = None,
        **llm_kwargs: Any,
    ):
        self._vllm = import_vllm()
        self.tokenizer = tokenizer
        self.lora_path = None if lora_path is None else os.fspath(lora_path)
        lora: dict[str, Any] = {"enable_lora": self.lora_path is not None}
        if self.lora_path is not None:
            rank = max_lora_rank if max_lora_rank is not None else adapter_rank(self.lora_path)
            lora["max_lora_rank"] = lora_rank_for_vllm(rank)
        # generation_config="vllm": the model's generation_config.json never supplies sampling defaults.
        self.llm = self._vllm.LLM(model=os.fspath(model_path), dtype=dtype, trust_remote_code=trust_remote_code,
                                  generation_config="vllm", **lora, **llm_kwargs)

    def _request_params(self, params: SamplingParams, prompt_id: str, sample_index: int):
        return self._vllm.SamplingParams(
            n=1,
            temperature=0.0 if params.greedy else params.temperature,
            top_p=1.0 if params.greedy else params.top_p,
            top_k=0,
            min_p=0.0,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            max_tokens=params.max_new_tokens,
            seed=stream_seed(params.seed, prompt_id, sample_index),
            skip_special_tokens=True,
        )

    def sample(
        self, prompts: Sequence[PromptItem], params: SamplingParams, round_index: int = 0
    ) -> tuple[list[Rollout], SamplerStats]:
        """One ``LLM.generate`` call over every ``(prompt, sample)`` request (vLLM schedules the batches)."""
        keys = [(item, j) for item in prompts for j in range(params.n)]
        ids = {item.id: render_prompt(self.tokenizer, item.prompt) for item in prompts}
        requests = [{"prompt_token_ids": ids[item.id]} for item, _ in keys]
        sampling = [self._request_params(params, item.id, j) for item, j in keys]
        lora = None
        if self.lora_path is not None:
            lora = importlib.import_module("vllm.lora.request").LoRARequest("policy", 1, self.lora_path)
        start = time.perf_counter()
        outputs = self.llm.generate(requests, sampling, use_tqdm=True, lora_request=lora)
        seconds = time.perf_counter() - start
        completions: list[list] = [[] for _ in prompts]
        for number, ((item, j), output) in enumerate(zip(keys, outputs)):
            completion = output.outputs[0]
            if completion.finish_reason not in FINISH_REASONS:
                raise RuntimeError(
                    f"vLLM ended prompt {item.id!r} sample {j} with finish_reason {completion.finish_reason!r} "
                    "(not an answer); check the engine log and run the same command again to resume"
                )
            completions[number // params.n].append((list(completion.token_ids), completion.finish_reason))
        rollouts = make_rollouts(prompts, completions, self.tokenizer, round_index)
        stats = SamplerStats(len(prompts), len(rollouts), sum(r.length for r in rollouts), seconds)
        logger.info("vLLM sampled %d rollouts at %.1f tokens/s", len(rollouts), stats.tokens_per_second)
        return rollouts, stats
