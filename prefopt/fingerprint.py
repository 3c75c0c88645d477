"""Content fingerprints of models and tokenizers, the identity part of every on-disk cache key.

One definition for the reference log-prob cache (:mod:`prefopt.reference`) and the annotation
score cache (:mod:`prefopt.annotate.scoring`): a change to a weight, a dtype, a shape, the config,
the attention implementation, or (for tokenizers) the vocabulary or chat template is a new digest,
so a stale cache is never read as current; it is recomputed under the new key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn


def _adapter_names(model: nn.Module) -> set[str]:
    return set(getattr(model, "peft_config", {}) or {})


def model_fingerprint(model: nn.Module, *, disable_adapter: bool = False) -> str:
    """BLAKE2b-128 hex digest of the model's name, config, attention implementation and parameters.

    Every parameter contributes its name, dtype, shape and bytes. With ``disable_adapter=True``
    (a PEFT model used with its adapters off) the adapter parameters are left out, so the digest
    is that of the base model the forward pass actually uses.
    """
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    digest.update(str(getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "")).encode())
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
        digest.update(str(getattr(config, "_attn_implementation", "")).encode())
    skip = _adapter_names(model) if disable_adapter else set()
    digest.update(f"disable_adapter={disable_adapter}".encode())
    for name, param in model.named_parameters():
        if skip & set(name.split(".")):
            continue
        tensor = param.detach().reshape(-1).contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(param.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """BLAKE2b-128 hex digest of a tokenizer's vocabulary (token -> id) and chat template."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode())
    return digest.hexdigest()
