"""The policy of each round of ``prefopt rounds``: how it is saved and how it is rebuilt.

A round trains either LoRA adapters on the policy it starts from, or all weights. Its result is
saved atomically to ``round_NNN/policy/``: the adapter (``adapter_model.safetensors``, small) or the
full model (``model.safetensors``). The policy after round ``r`` is rebuilt from disk: the initial
model, then, round by round, each adapter merged into the weights (a full-weight round replaces
them). Rebuilding from disk — after every round, not only on resume — means an uninterrupted run
and a killed-and-resumed run use bit-identical policies.

The vLLM sampler reads weights from a directory, so for it :func:`merged_policy_dir` writes the
merged policy once per round to ``round_NNN/merged/`` (built on the CPU: the GPU is vLLM's).

Placement: policies go to ``model.device`` (``auto``: the accelerator when there is one, so the HF
engine samples and evaluates on the GPU). :func:`release_memory` returns what a dropped trainer,
optimizer, model or engine held on the GPU to the driver (``torch.cuda.empty_cache``), so the next
engine's start-up check (vLLM: ``gpu_memory_utilization`` × total must be free) sees it.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

from prefopt.config import ModelConfig
from prefopt.io import atomic_directory
from prefopt.models import load_model, resolve
from prefopt.online.run_dir import RunDir

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def policy_dir(run: RunDir, index: int) -> Path:
    """``round_NNN/policy``: what round ``index`` trained."""
    return run.round_dir(index) / "policy"


def _trained_rounds(run: RunDir, upto: int) -> list[int]:
    """Rounds ``1..upto`` whose training produced a policy (a round without pairs trains nothing)."""
    return [r for r in range(1, upto + 1) if run.done(r, "train") and run.record(r, "train").get("policy")]


def release_memory() -> None:
    """Collect dropped objects (trainer/optimizer/model cycles) and return cached GPU blocks to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def load_initial(config: ModelConfig, *, device: str | None = None) -> PreTrainedModel:
    """The starting model of the run (no adapters), on ``device`` (default ``config.device``)."""
    return load_model(config.name_or_path, dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                      attn_implementation=config.attn_implementation, device=device or config.device)


def load_policy(config: ModelConfig, run: RunDir, upto: int, *, device: str | None = None) -> PreTrainedModel:
    """The policy after round ``upto`` (``0``: the initial model), rebuilt from the saved rounds, on ``device``
    (default ``config.device``: the accelerator when there is one)."""
    rounds = _trained_rounds(run, upto)
    full = [r for r in rounds if not (policy_dir(run, r) / ADAPTER_CONFIG).is_file()]
    if full:
        start = full[-1]
        model = load_model(policy_dir(run, start), dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                           attn_implementation=config.attn_implementation, device=device or config.device)
        rounds = [r for r in rounds if r > start]
    else:
        model = load_initial(config, device=device)
    if rounds:
        import peft

        for r in rounds:
            model = peft.PeftModel.from_pretrained(model, policy_dir(run, r)).merge_and_unload()
    model.eval()
    return model


def save_policy(model: nn.Module, run: RunDir, index: int) -> str:
    """Save what round ``index`` trained (adapter or full weights, safetensors) atomically; returns the kind."""
    kind = "adapter" if hasattr(model, "peft_config") else "full"
    with atomic_directory(policy_dir(run, index)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    return kind


def merged_policy_dir(config: ModelConfig, run: RunDir, upto: int, tokenizer) -> Path:
    """A directory of full weights of the policy after round ``upto`` (for engines that load from disk)."""
    rounds = _trained_rounds(run, upto)
    if not rounds:
        path, gguf = resolve(config.name_or_path)
        if gguf is None and Path(path).is_dir():
            return Path(path)
    target = run.round_dir(upto) / "merged"
    if not (target / "config.json").is_file():
        model = load_policy(config, run, upto, device="cpu")
        with atomic_directory(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        logger.info("wrote the merged policy of round %d to %s", upto, target)
    return target
