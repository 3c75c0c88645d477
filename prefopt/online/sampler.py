"""Sample completions for prompts: one interface, two engines, and the choice between them.

- :class:`~prefopt.online.hf_sampler.HFSampler` decodes an in-memory model (CPU or GPU), dropping
  finished rows from the batch and its KV cache (:mod:`prefopt.online.hf_sampler`).
- :class:`~prefopt.online.vllm_sampler.VLLMSampler` (GPU, the ``gpu`` extra) loads the policy from
  a directory of merged weights, optionally with a LoRA adapter (:mod:`prefopt.online.vllm_sampler`).

Both return :class:`~prefopt.online.types.Rollout` records (prompt id, sample index, completion
text and token ids, length in tokens with EOS counted when generated, finish reason ``"stop"`` or
``"length"``) and a :class:`~prefopt.sampling.SamplerStats`. Both are **batch-invariant**: the
rollouts of a prompt depend only on the seed, the prompt id and the sample index (see
:mod:`prefopt.online.decoding`), and both render prompts with the training tokenizer
(:func:`~prefopt.online.completions.render_prompt`). ``greedy=True`` decodes deterministically
(evaluation). :func:`make_sampler` picks the engine: ``auto`` = vLLM if CUDA is available and
``vllm`` imports, else HF.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefopt.online.hf_sampler import HFSampler
from prefopt.online.vllm_sampler import VLLMSampler
from prefopt.sampling import Sampler

Engine = Literal["auto", "hf", "vllm"]

__all__ = ["Engine", "HFSampler", "VLLMSampler", "make_sampler", "resolve_engine"]


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
    progress: bool = True,
    **vllm_kwargs: Any,
) -> Sampler:
    """Build the sampler for ``engine``: HF needs ``model``; vLLM needs ``model_path`` (merged weights) and
    ``dtype``, and takes ``trust_remote_code``, ``lora_path``, ``max_lora_rank`` and engine arguments."""
    if resolve_engine(engine) == "vllm":
        if model_path is None:
            raise ValueError("the vLLM sampler loads weights from disk: pass model_path (a directory of weights)")
        if "dtype" not in vllm_kwargs:
            raise ValueError("the vLLM sampler needs an explicit dtype (the recipe's model.dtype)")
        return VLLMSampler(model_path, tokenizer, **vllm_kwargs)
    if model is None:
        raise ValueError("the HF sampler runs an in-memory model: pass model")
    return HFSampler(model, tokenizer, progress=progress)
