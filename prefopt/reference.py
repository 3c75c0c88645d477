"""Precompute reference per-token log-probs once per (model, tokenized data) and cache them on disk.

:func:`add_reference_logps` runs the reference model over a tokenized pair dataset (batched,
``no_grad``, eval mode, length-sorted to limit padding) and returns the dataset with
``ref_chosen_logps`` / ``ref_rejected_logps`` columns: one float per completion id, the alignment
:class:`prefopt.data.PairCollator` turns into ``batch["ref_chosen"]`` / ``batch["ref_rejected"]``.

The cache file ``<cache_dir>/<key>.safetensors`` holds the flat float32 log-probs and per-row
lengths. ``key`` hashes everything that changes the numbers:

- the model: its ``name_or_path``, its config (JSON) and attention implementation, and the bytes,
  dtypes and shapes of *all* parameters (a changed weight, dtype or fine-tuning step is a new key);
- the data: the ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` columns (values and row lengths);
- whether PEFT adapters are disabled (then adapter weights are left out of the hash);
- the autocast dtype the reference runs under (the policy's mixed precision; ``None``: none).

Batch size, chunk size and padding do not enter the key: they do not change the log-probs beyond
float rounding. Files are written to a temporary name and renamed, so readers never see half a file.

Precision: pass ``autocast_dtype`` = the dtype the policy's forward is autocast to (the trainer
passes its accelerator's mixed precision), so the step-0 log-ratio policy - reference is exactly 0.

Several processes (``processes``): the length-sorted batches are dealt round-robin, each process
computes its share, the shares are all-gathered (``torch.distributed``, within the process group's
timeout, ``train.ddp_timeout``) and process 0 writes the one cache file. The batches are the same as
in one process, so the cache is the same file with the same numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

import datasets
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from prefopt.data.collate import PairCollator
from prefopt.fingerprint import model_fingerprint
from prefopt.io import atomic_path
from prefopt.logps import completion_logps
from prefopt.models import cache_root
from prefopt.processes import Processes

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
_FORMAT = "prefopt-reference-v1"


def data_fingerprint(dataset: datasets.Dataset) -> str:
    """Hex digest of the token id columns (values and per-row lengths, in row order)."""
    missing = [c for c in TOKEN_COLUMNS if c not in dataset.column_names]
    if missing:
        raise KeyError(f"dataset lacks {missing}; tokenize pairs with prefopt.data.tokenize_pairs first")
    digest = hashlib.blake2b(digest_size=16)
    for table in dataset.select_columns(list(TOKEN_COLUMNS)).with_format("arrow").iter(batch_size=4096):
        for column in TOKEN_COLUMNS:
            array = table.column(column).combine_chunks()
            digest.update(column.encode())
            digest.update(array.value_lengths().to_numpy(zero_copy_only=False).astype("int64").tobytes())
            digest.update(array.flatten().to_numpy(zero_copy_only=False).astype("int64").tobytes())
    return digest.hexdigest()


def cache_key(
    model: nn.Module, dataset: datasets.Dataset, *, disable_adapter: bool = False, autocast_dtype: torch.dtype | None = None
) -> str:
    """The cache file stem for ``model`` over ``dataset`` (under autocast to ``autocast_dtype``, if any)."""
    parts = [_FORMAT, model_fingerprint(model, disable_adapter=disable_adapter), data_fingerprint(dataset)]
    if autocast_dtype is not None:
        parts.append(f"autocast={autocast_dtype}")
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


@contextlib.contextmanager
def full_parameters(model: nn.Module) -> Iterator[None]:
    """Gather DeepSpeed ZeRO-3-partitioned parameters for the duration (a no-op for ordinary ones).

    With ``zero3_init_flag`` the model is partitioned as it loads, and before ``accelerate`` wraps it
    in the DeepSpeed engine nothing gathers its parameters for a forward; the precomputation (and
    the fingerprint, which must agree across processes) therefore runs with the full weights
    gathered on every process: transiently the whole model per GPU.
    """
    partitioned = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


@contextlib.contextmanager
def _reference_mode(model: nn.Module, disable_adapter: bool) -> Iterator[None]:
    """Eval mode, no grad, adapters off if asked; restores the training flag afterwards."""
    was_training = model.training
    if disable_adapter and not hasattr(model, "disable_adapter"):
        raise TypeError(f"disable_adapter=True needs a peft.PeftModel, got {type(model).__name__}")
    adapters = model.disable_adapter() if disable_adapter else contextlib.nullcontext()
    model.eval()
    try:
        with torch.no_grad(), adapters:
            yield
    finally:
        model.train(was_training)


def _compute(
    model: nn.Module,
    dataset: datasets.Dataset,
    collator: Callable[[list[dict]], dict],
    batch_size: int,
    chunk_size: int | None,
    disable_adapter: bool,
    progress: bool,
    autocast_dtype: torch.dtype | None = None,
    processes: Processes = Processes(),
) -> dict[str, torch.Tensor]:
    """Run the reference over all rows, longest-first batches dealt across ``processes``; flat log-probs + lengths."""
    rows = dataset.select_columns(list(TOKEN_COLUMNS))
    lengths_p = [len(ids) for ids in rows["prompt_ids"]]
    lengths_c = [len(ids) for ids in rows["chosen_ids"]]
    lengths_r = [len(ids) for ids in rows["rejected_ids"]]
    order = sorted(range(len(rows)), key=lambda i: -(lengths_p[i] + max(lengths_c[i], lengths_r[i])))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    share: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with _reference_mode(model, disable_adapter), autocast:
        for index in tqdm(batches[processes.rank :: processes.world], desc="reference log-probs", disable=not progress):
            batch = collator([rows[i] for i in index])
            args = [batch[k].to(device) for k in ("input_ids", "attention_mask", "completion_mask")]
            logps, _ = completion_logps(model, *args, chunk_size=chunk_size)
            logps = logps.float().cpu()
            for j, i in enumerate(index):
                share[i] = (logps[j, : lengths_c[i]].clone(), logps[len(index) + j, : lengths_r[i]].clone())
    merged = {i: values for part in processes.all_gather(share) for i, values in part.items()}
    return {
        "chosen": torch.cat([merged[i][0] for i in range(len(rows))]) if len(rows) else torch.zeros(0),
        "rejected": torch.cat([merged[i][1] for i in range(len(rows))]) if len(rows) else torch.zeros(0),
        "chosen_lengths": torch.tensor(lengths_c, dtype=torch.int64),
        "rejected_lengths": torch.tensor(lengths_r, dtype=torch.int64),
    }


def _load_matching(path: Path, dataset: datasets.Dataset) -> dict[str, torch.Tensor] | None:
    """The cached tensors, if the file exists and its row lengths match ``dataset``."""
    if not path.is_file():
        return None
    tensors = load_file(path)
    lengths_c = torch.tensor([len(ids) for ids in dataset["chosen_ids"]], dtype=torch.int64)
    lengths_r = torch.tensor([len(ids) for ids in dataset["rejected_ids"]], dtype=torch.int64)
    if torch.equal(tensors["chosen_lengths"], lengths_c) and torch.equal(tensors["rejected_lengths"], lengths_r):
        return tensors
    return None


def add_reference_logps(
    dataset: datasets.Dataset,
    model: nn.Module,
    *,
    collator: Callable[[list[dict]], dict] | None = None,
    batch_size: int = 8,
    cache_dir: str | os.PathLike | None = None,
    disable_adapter: bool = False,
    chunk_size: int | None = None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
    processes: Processes = Processes(),
) -> datasets.Dataset:
    """Return ``dataset`` with ``ref_chosen_logps`` / ``ref_rejected_logps`` from ``model``, cached.

    Args:
        dataset: tokenized pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``).
        model: the reference model (or, with ``disable_adapter=True``, the PEFT policy whose base
            model is the reference).
        collator: builds pair batches; defaults to ``PairCollator(pad_token_id=0)`` (pad ids are
            masked out, so their value does not matter).
        batch_size: pairs per forward (each forward sees ``2 * batch_size`` sequences).
        cache_dir: where ``<key>.safetensors`` lives; default ``<PREFOPT_CACHE or
            ~/.cache/prefopt>/reference``.
        disable_adapter: compute the reference with the PEFT adapters disabled.
        chunk_size: tokens per head chunk (:func:`prefopt.logps.completion_logps`; None: automatic).
        progress: show a progress bar.
        autocast_dtype: run the reference under ``torch.autocast`` to this dtype (the policy's mixed
            precision, e.g. ``torch.bfloat16`` with ``bf16: true``); ``None``: no autocast.
        processes: share the computation across the processes of the default process group (every
            process calls this with its own rank); process 0 writes the cache.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    directory = Path(cache_dir) if cache_dir is not None else cache_root() / "reference"
    with full_parameters(model):
        key = cache_key(model, dataset, disable_adapter=disable_adapter, autocast_dtype=autocast_dtype)
        path = directory / f"{key}.safetensors"
        tensors = _load_matching(path, dataset)
        # every process must agree to compute (a file written by process 0 meanwhile must not split them)
        if not all(found for found in processes.all_gather(tensors is not None)):
            tensors = _compute(model, dataset, collator or PairCollator(0), batch_size, chunk_size, disable_adapter,
                               progress, autocast_dtype, processes)
            if processes.rank == 0:
                metadata = {"format": _FORMAT, "rows": str(len(dataset)), "model": str(getattr(model, "name_or_path", ""))}
                with atomic_path(path) as tmp:
                    save_file(tensors, tmp, metadata=metadata)
    return _with_columns(dataset, tensors)


def _with_columns(dataset: datasets.Dataset, tensors: dict[str, torch.Tensor]) -> datasets.Dataset:
    feature = datasets.List(datasets.Value("float32"))
    dataset = dataset.remove_columns([c for c in REF_COLUMNS if c in dataset.column_names])
    for column, side in zip(REF_COLUMNS, ("chosen", "rejected")):
        values = tensors[side].split(tensors[f"{side}_lengths"].tolist())
        dataset = dataset.add_column(column, [v.tolist() for v in values], feature=feature)
    return dataset
