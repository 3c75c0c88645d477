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
- whether PEFT adapters are disabled (then adapter weights are left out of the hash).

Batch size, chunk size and padding do not enter the key: they do not change the log-probs beyond
float rounding. Files are written to a temporary name and renamed, so readers never see half a file.
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


def cache_key(model: nn.Module, dataset: datasets.Dataset, *, disable_adapter: bool = False) -> str:
    """The cache file stem for ``model`` over ``dataset``."""
    parts = [_FORMAT, model_fingerprint(model, disable_adapter=disable_adapter), data_fingerprint(dataset)]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


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
) -> dict[str, torch.Tensor]:
    """Run the reference over all rows, longest-first batches; flat log-probs plus row lengths."""
    rows = dataset.select_columns(list(TOKEN_COLUMNS))
    lengths_p = [len(ids) for ids in rows["prompt_ids"]]
    lengths_c = [len(ids) for ids in rows["chosen_ids"]]
    lengths_r = [len(ids) for ids in rows["rejected_ids"]]
    order = sorted(range(len(rows)), key=lambda i: -(lengths_p[i] + max(lengths_c[i], lengths_r[i])))
    device = next(model.parameters()).device
    chosen: list[list[float]] = [[] for _ in range(len(rows))]
    rejected: list[list[float]] = [[] for _ in range(len(rows))]
    starts = range(0, len(order), batch_size)
    with _reference_mode(model, disable_adapter):
        for start in tqdm(starts, desc="reference log-probs", disable=not progress):
            index = order[start : start + batch_size]
            batch = collator([rows[i] for i in index])
            args = [batch[k].to(device) for k in ("input_ids", "attention_mask", "completion_mask")]
            logps, _ = completion_logps(model, *args, chunk_size=chunk_size)
            logps = logps.cpu()
            for j, i in enumerate(index):
                chosen[i] = logps[j, : lengths_c[i]].tolist()
                rejected[i] = logps[len(index) + j, : lengths_r[i]].tolist()
    return {
        "chosen": torch.tensor([x for row in chosen for x in row], dtype=torch.float32),
        "rejected": torch.tensor([x for row in rejected for x in row], dtype=torch.float32),
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
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    directory = Path(cache_dir) if cache_dir is not None else cache_root() / "reference"
    key = cache_key(model, dataset, disable_adapter=disable_adapter)
    path = directory / f"{key}.safetensors"
    tensors = _load_matching(path, dataset)
    if tensors is None:
        tensors = _compute(
            model, dataset, collator or PairCollator(0), batch_size, chunk_size, disable_adapter, progress
        )
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
