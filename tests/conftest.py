"""Shared fixtures: a tiny byte-level tokenizer with a ChatML template and a tiny random Llama.

Everything is built in-process (no hub), so the default suite stays fast; ``tiny_model_dir`` saves
one copy to a temporary directory for code that loads models by path (recipes, commands).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Tiny models: one intra-op thread beats several threads contending for shared cores (measured on
# the 2-core CPU under load: 35 ms vs 1 s for a forward+backward of the tiny Llama on [8, 100] ids).
torch.set_num_threads(1)

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: one token per byte plus ChatML specials (vocab 260)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML
    return fast


def make_tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return make_tiny_tokenizer()


@pytest.fixture()
def tiny_model(tiny_tokenizer) -> LlamaForCausalLM:
    return make_tiny_model(tiny_tokenizer)


def save_tiny_model(path: str | Path, seed: int = 0) -> str:
    """Save the tiny model and its tokenizer to ``path`` (so recipes and commands can load it by path)."""
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(tokenizer, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A saved tiny model + tokenizer directory, shared by the tests of one session (treat as read-only)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture()
def raise_at(monkeypatch):
    """``raise_at(point)``: make :func:`prefopt.io.fault_point` raise :class:`~prefopt.io.InjectedFault` at ``point``."""
    from prefopt.io import FAULT_ENV

    monkeypatch.setenv(f"{FAULT_ENV}_MODE", "raise")
    return lambda point: monkeypatch.setenv(FAULT_ENV, point)


def temporaries(root: Path) -> list[Path]:
    """The ``.tmp-*`` files and directories under ``root`` (what an atomic write leaves if killed)."""
    return sorted(root.rglob(".tmp-*"))


@pytest.fixture()
def lively_model(tiny_model):
    """The tiny model with its matrices redrawn at std 0.3: continuations vary token by token and depend on
    the whole prompt (the std-0.02 init greedily repeats its last token, hiding padding and batching bugs),
    and its logit gaps are far above the floating-point differences of batched matmuls."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in tiny_model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return tiny_model
