"""Sample completions for prompts: one interface, two engines (Hugging Face ``generate``, vLLM).

- :class:`HFSampler` runs batched ``model.generate`` (CPU or GPU) with **left padding** and the KV
  cache, ``n`` samples per prompt via ``num_return_sequences``. Reproducible given ``seed``: each
  batch reseeds torch with ``seed + batch index``, so the same prompts, batch size and seed give the
  same rollouts.
- :class:`VLLMSampler` (GPU, the ``gpu`` extra; ``vllm`` is imported lazily) loads the policy from a
  directory of merged weights, optionally with a LoRA adapter, and samples with per-request seeds.

Both return :class:`~prefopt.online.types.Rollout` records (prompt id, sample index, completion
text and token ids, length in tokens with EOS counted when generated, finish reason ``"stop"`` or
``"length"``) and :class:`SamplerStats` (tokens/s). ``greedy=True`` decodes deterministically
(evaluation). :func:`make_sampler` picks the engine: ``auto`` = vLLM if CUDA is available and
``vllm`` imports, else HF.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from prefopt.online.types import Prompt, Rollout

logger = logging.getLogger(__name__)

Engine = Literal["auto", "hf", "vllm"]


@dataclass(frozen=True)
class PromptItem:
    """A prompt to sample from: a stable ``id`` and the prompt (plain text or chat messages)."""

    id: str
    prompt: Prompt


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by both engines.

    ``greedy`` overrides ``temperature``/``top_p`` (argmax decoding, for evaluation; ``n`` must be 1:
    Hugging Face ``generate`` refuses several greedy sequences); ``n`` is the number of samples per
    prompt; ``batch_size`` counts prompts per ``generate`` call (HF only).
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


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    """Token ids of ``prompt``: chat messages go through the chat template (with the generation
    prompt); plain text is tokenized as is, without special tokens."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def split_completion(generated: list[int], eos_ids: set[int]) -> tuple[list[int], str]:
    """Cut a generated row after its first EOS: ``(completion_ids, finish_reason)``.

    EOS is kept (it counts in the length); a row without EOS was truncated (``"length"``).
    """
    for i, token in enumerate(generated):
        if token in eos_ids:
            return generated[: i + 1], "stop"
    return generated, "length"


class HFSampler:
    """Batched Hugging Face ``generate`` on an in-memory model (any device)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, progress: bool = True):
        if tokenizer.pad_token_id is None:
            raise ValueError("HFSampler: the tokenizer has no pad token; set tokenizer.pad_token before sampling")
        self.model = model
        self.tokenizer = tokenizer
        self.progress = progress

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        eos = sorted(_eos_ids(self.model, self.tokenizer))
        common: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos,
            use_cache=True,
        )
        if params.greedy:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0, **common)

    @torch.inference_mode()
    def sample(
        self, prompts: Sequence[PromptItem], params: SamplingParams, round_index: int = 0
    ) -> tuple[list[Rollout], SamplerStats]:
        """Generate ``params.n`` completions per prompt in batches of ``params.batch_size`` prompts."""
        config = self._generation_config(params)
        eos_ids = _eos_ids(self.model, self.tokenizer)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        rollouts: list[Rollout] = []
        tokens = 0
        start = time.perf_counter()
        bar = tqdm(total=len(prompts), desc="sampling", unit="prompt", disable=not self.progress)
        for batch_index, first in enumerate(range(0, len(prompts), params.batch_size)):
            batch = prompts[first : first + params.batch_size]
            encoded = [render_prompt(self.tokenizer, item.prompt) for item in batch]
            width = max(len(ids) for ids in encoded)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=device)
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
            torch.manual_seed(params.seed + batch_index)
            output = self.model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
            generated = output[:, width:].tolist()
            for row, ids in enumerate(generated):
                item = batch[row // params.n]
                completion_ids, finish = split_completion(ids, eos_ids)
                tokens += len(completion_ids)
                rollouts.append(
                    Rollout(
                        prompt_id=item.id,
                        sample_index=row % params.n,
                        prompt=item.prompt,
                        completion=self.tokenizer.decode(completion_ids, skip_special_tokens=True),
                        completion_ids=completion_ids,
                        length=len(completion_ids),
                        finish_reason=finish,
                        round=round_index,
                    )
                )
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - start):.0f}")
        bar.close()
        self.model.train(was_training)
        stats = SamplerStats(len(prompts), len(rollouts), tokens, time.perf_counter() - start)
        logger.info("sampled %d rollouts, %d tokens at %.1f tokens/s", len(rollouts), tokens, stats.tokens_per_second)
        return rollouts, stats


class VLLMSampler:
    """vLLM offline engine on a directory of (merged) weights, optionally with a LoRA adapter."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        tokenizer: PreTrainedTokenizerBase,
        lora_path: str | os.PathLike | None = None,
        **llm_kwargs: Any,
    ):
        vllm = _import_vllm()
        self._vllm = vllm
        self.tokenizer = tokenizer
        self.lora_path = None if lora_path is None else os.fspath(lora_path)
        self.llm = vllm.LLM(model=os.fspath(model_path), enable_lora=self.lora_path is not None, **llm_kwargs)

    def sample(
        self, prompts: Sequence[PromptItem], params: SamplingParams, round_index: int = 0
    ) -> tuple[list[Rollout], SamplerStats]:
        """One ``LLM.generate`` call over all prompts (vLLM schedules the batches itself)."""
        vllm = self._vllm
        sampling = vllm.SamplingParams(
            n=params.n,
            temperature=0.0 if params.greedy else params.temperature,
            top_p=1.0 if params.greedy else params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
        )
        requests = [{"prompt_token_ids": render_prompt(self.tokenizer, item.prompt)} for item in prompts]
        lora = None
        if self.lora_path is not None:
            lora = importlib.import_module("vllm.lora.request").LoRARequest("policy", 1, self.lora_path)
        start = time.perf_counter()
        outputs = self.llm.generate(requests, sampling, use_tqdm=True, lora_request=lora)
        seconds = time.perf_counter() - start
        rollouts: list[Rollout] = []
        for item, output in zip(prompts, outputs):
            for index, completion in enumerate(output.outputs):
                ids = list(completion.token_ids)
                rollouts.append(
                    Rollout(
                        prompt_id=item.id,
                        sample_index=index,
                        prompt=item.prompt,
                        completion=completion.text,
                        completion_ids=ids,
                        length=len(ids),
                        finish_reason="length" if completion.finish_reason == "length" else "stop",
                        round=round_index,
                    )
                )
        stats = SamplerStats(len(prompts), len(rollouts), sum(r.length for r in rollouts), seconds)
        logger.info("vLLM sampled %d rollouts at %.1f tokens/s", len(rollouts), stats.tokens_per_second)
        return rollouts, stats


def _import_vllm():
    try:
        return importlib.import_module("vllm")
    except ImportError as err:
        raise ImportError("engine 'vllm' needs vLLM: pip install 'prefopt[gpu]' (or use engine: hf)") from err


def resolve_engine(engine: Engine) -> Literal["hf", "vllm"]:
    """``auto`` → ``vllm`` when CUDA is available and ``vllm`` is installed, else ``hf``."""
    if engine not in ("auto", "hf", "vllm"):
        raise ValueError(f"sampler engine must be 'auto', 'hf' or 'vllm', got {engine!r}")
    if engine != "auto":
        return engine
    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None else "hf"


def make_sampler(
    engine: Engine,
    tokenizer: PreTrainedTokenizerBase,
    *,
    model: PreTrainedModel | None = None,
    model_path: str | os.PathLike | None = None,
    lora_path: str | os.PathLike | None = None,
    progress: bool = True,
    **vllm_kwargs: Any,
) -> Sampler:
    """Build the sampler for ``engine``: HF needs ``model``, vLLM needs ``model_path`` (merged weights)."""
    if resolve_engine(engine) == "vllm":
        if model_path is None:
            raise ValueError("the vLLM sampler loads weights from disk: pass model_path (a directory of weights)")
        return VLLMSampler(model_path, tokenizer, lora_path=lora_path, **vllm_kwargs)
    if model is None:
        raise ValueError("the HF sampler runs an in-memory model: pass model")
    return HFSampler(model, tokenizer, progress=progress)
