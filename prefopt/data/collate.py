"""Tokenized pairs -> one concatenated ``[2B, T]`` batch (docs/design.md §2)."""

from __future__ import annotations

from typing import Any

import torch

_ALIGNED = {
    # batch key: (row key, side)
    "chosen_token_rewards": ("chosen_token_rewards", "chosen"),
    "rejected_token_rewards": ("rejected_token_rewards", "rejected"),
    "ref_chosen": ("ref_chosen_logps", "chosen"),
    "ref_rejected": ("ref_rejected_logps", "rejected"),
}


def _left_justified(
    values: list[list], width: int, dtype: torch.dtype, fill: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged rows -> ``[N, width]`` tensor holding row ``i`` in ``[:len(values[i])]``, plus that mask."""
    lengths = torch.tensor([len(v) for v in values], dtype=torch.long)
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    out = torch.full((len(values), width), fill, dtype=dtype)
    out[mask] = torch.tensor([x for v in values for x in v], dtype=dtype)
    return out, mask


def sequence_batch(
    prompts: list[list[int]], completions: list[list[int]], pad_token_id: int, *, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``prompt + completion`` rows: ``(input_ids, attention_mask, completion_mask)``, each ``[N, T]``.

    ``input_ids`` (long, padded with ``pad_token_id``), ``attention_mask`` (long, 1 on real tokens)
    and ``completion_mask`` (bool, True on the completion tokens), the inputs of
    :func:`prefopt.logps.completion_logps`. ``width`` defaults to the longest row. The one padded-batch
    builder: pair batches (:class:`PairCollator`), annotation scoring and T-REG token rewards use it.
    """
    sequences = [p + c for p, c in zip(prompts, completions)]
    width = max(len(s) for s in sequences) if width is None else width
    input_ids, attention = _left_justified(sequences, width, torch.long, pad_token_id)
    prompt_lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    completion_mask = attention & (torch.arange(width).unsqueeze(0) >= prompt_lengths.unsqueeze(1))
    return input_ids, attention.long(), completion_mask


class PairCollator:
    """Collate tokenized pair rows into the batch :func:`prefopt.logps.pair_logps` consumes.

    Returns ``input_ids [2B, T]`` (long; rows ``0..B-1`` are prompt+chosen, ``B..2B-1``
    prompt+rejected, right-padded with ``pad_token_id``), ``attention_mask [2B, T]`` (long),
    ``completion_mask [2B, T]`` (bool, True on completion tokens) and, when the rows have them,
    completion-aligned float32 ``chosen_token_rewards [B, Tc]``, ``rejected_token_rewards [B, Tr]``,
    ``ref_chosen [B, Tc]``, ``ref_rejected [B, Tr]`` (left-justified, zero-padded; ``Tc``/``Tr`` the
    longest chosen/rejected completion), ``weights [B]`` (a missing weight is 1), ``pair_index [B]``
    and ``id`` (a list). Other row fields (texts, ``meta``) are ignored, so it works as a HF
    ``Trainer`` ``data_collator`` with ``remove_unused_columns=False``.

    ``pad_to_multiple_of`` rounds ``T`` up (tensor-core friendly shapes on GPU).
    """

    def __init__(self, pad_token_id: int, *, pad_to_multiple_of: int | None = None) -> None:
        if pad_token_id is None:
            raise ValueError(
                "pad_token_id is None; pass tokenizer.pad_token_id, or tokenizer.eos_token_id if unset"
            )
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            raise ValueError("PairCollator got an empty list of rows")
        prompts = [row["prompt_ids"] for row in rows]
        chosen = [row["chosen_ids"] for row in rows]
        rejected = [row["rejected_ids"] for row in rows]
        width = max(len(p) + len(c) for p, c in zip(prompts * 2, chosen + rejected))
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids, attention, completion_mask = sequence_batch(
            prompts * 2, chosen + rejected, self.pad_token_id, width=width
        )
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "completion_mask": completion_mask,
        }
        completions = {"chosen": chosen, "rejected": rejected}
        for key, (row_key, side) in _ALIGNED.items():
            values = [row.get(row_key) for row in rows]
            if all(v is None for v in values):
                continue
            _check_aligned(values, completions[side], row_key, side)
            batch[key], _ = _left_justified(
                values, max(len(c) for c in completions[side]), torch.float32, 0.0
            )
        if any(row.get("weight") is not None for row in rows):
            batch["weights"] = torch.tensor(
                [1.0 if row.get("weight") is None else row["weight"] for row in rows], dtype=torch.float32
            )
        if "pair_index" in rows[0]:
            batch["pair_index"] = torch.tensor([row["pair_index"] for row in rows], dtype=torch.long)
        if "id" in rows[0]:
            batch["id"] = [row["id"] for row in rows]
        return batch


def _check_aligned(values: list, completions: list[list[int]], key: str, side: str) -> None:
    for i, (v, ids) in enumerate(zip(values, completions)):
        if v is None or len(v) != len(ids):
            got = "None" if v is None else f"{len(v)} values"
            raise ValueError(
                f"PairCollator: batch row {i} has {got} in {key!r} but {len(ids)} {side} completion tokens; "
                "completion-aligned fields need one value per completion token in every row"
            )
