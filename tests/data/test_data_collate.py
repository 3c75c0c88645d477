"""PairCollator: shapes, padding, completion alignment, optional completion-aligned fields."""

from __future__ import annotations

import pytest
import torch

from prefopt.data import PairCollator, load_pairs, tokenize_pairs
from prefopt.logps import pair_logps

PAD = 0
ROWS = [
    {
        "prompt_ids": [11, 12, 13],
        "chosen_ids": [21, 22],
        "rejected_ids": [31, 32, 33, 34],
        "chosen_token_rewards": [0.5, -0.5],
        "rejected_token_rewards": [1.0, 2.0, 3.0, 4.0],
        "ref_chosen_logps": [-1.0, -2.0],
        "ref_rejected_logps": [-3.0, -4.0, -5.0, -6.0],
        "weight": 2.0,
        "id": "a",
    },
    {
        "prompt_ids": [14],
        "chosen_ids": [23, 24, 25],
        "rejected_ids": [35],
        "chosen_token_rewards": [0.1, 0.2, 0.3],
        "rejected_token_rewards": [9.0],
        "ref_chosen_logps": [-7.0, -8.0, -9.0],
        "ref_rejected_logps": [-10.0],
        "weight": None,
        "id": "b",
    },
]


def test_layout_and_masks():
    batch = PairCollator(PAD)(ROWS)
    assert batch["input_ids"].tolist() == [
        [11, 12, 13, 21, 22, PAD, PAD],
        [14, 23, 24, 25, PAD, PAD, PAD],
        [11, 12, 13, 31, 32, 33, 34],
        [14, 35, PAD, PAD, PAD, PAD, PAD],
    ]
    assert batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].tolist() == [
        [1] * 5 + [0] * 2,
        [1] * 4 + [0] * 3,
        [1] * 7,
        [1] * 2 + [0] * 5,
    ]
    assert batch["completion_mask"].dtype == torch.bool
    assert batch["completion_mask"].int().tolist() == [
        [0, 0, 0, 1, 1, 0, 0],
        [0, 1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 1, 1],
        [0, 1, 0, 0, 0, 0, 0],
    ]
    # The completion tokens sit exactly under the completion mask, chosen rows first.
    completions = [r["chosen_ids"] for r in ROWS] + [r["rejected_ids"] for r in ROWS]
    for row, ids in enumerate(completions):
        assert batch["input_ids"][row][batch["completion_mask"][row]].tolist() == ids


def test_completion_aligned_fields():
    batch = PairCollator(PAD)(ROWS)
    expected_chosen = torch.tensor([[0.5, -0.5, 0.0], [0.1, 0.2, 0.3]])
    torch.testing.assert_close(batch["chosen_token_rewards"], expected_chosen)
    assert batch["rejected_token_rewards"].tolist() == [[1.0, 2.0, 3.0, 4.0], [9.0, 0.0, 0.0, 0.0]]
    assert batch["ref_chosen"].tolist() == [[-1.0, -2.0, 0.0], [-7.0, -8.0, -9.0]]
    assert batch["ref_rejected"].shape == (2, 4) and batch["ref_rejected"].dtype == torch.float32
    assert batch["weights"].tolist() == [2.0, 1.0]  # a missing weight counts 1
    assert batch["id"] == ["a", "b"]


def test_plain_rows_have_only_the_required_keys():
    rows = [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in ROWS]
    batch = PairCollator(PAD, pad_to_multiple_of=8)(rows)
    assert sorted(batch) == ["attention_mask", "completion_mask", "input_ids"]
    assert batch["input_ids"].shape == (4, 8)


def test_misaligned_rewards_are_rejected():
    rows = [dict(ROWS[0], chosen_token_rewards=[0.5]), ROWS[1]]
    with pytest.raises(ValueError, match="batch row 0 has 1 values in 'chosen_token_rewards' but 2 chosen"):
        PairCollator(PAD)(rows)
    with pytest.raises(ValueError, match="pad_token_id is None"):
        PairCollator(None)


def test_logits_positions_match_unpadded_forward(tiny_tokenizer, tiny_model):
    """pair_logps on the collated batch == log-probs of each completion from its own unpadded forward."""
    pairs = load_pairs(
        [
            {
                "prompt": [{"role": "user", "content": "Hi"}],
                "chosen": [{"role": "assistant", "content": "Hello."}],
                "rejected": [{"role": "assistant", "content": "No way, go."}],
            },
            {
                "prompt": [{"role": "user", "content": "2+2?"}],
                "chosen": [{"role": "assistant", "content": "4"}],
                "rejected": [{"role": "assistant", "content": "5!"}],
            },
        ]
    )
    rows = list(tokenize_pairs(pairs, tiny_tokenizer)[0])
    batch = PairCollator(tiny_tokenizer.pad_token_id)(rows)
    with torch.no_grad():
        out = pair_logps(tiny_model, batch)
        for side, logps, mask in (
            ("chosen", out.chosen, out.chosen_mask),
            ("rejected", out.rejected, out.rejected_mask),
        ):
            for b, row in enumerate(rows):
                prompt, completion = row["prompt_ids"], row[f"{side}_ids"]
                logits = tiny_model(torch.tensor([prompt + completion])).logits[0].float()
                expected = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)[
                    torch.arange(len(completion)), completion
                ]
                assert mask[b].sum() == len(completion)
                torch.testing.assert_close(logps[b, : len(completion)], expected, atol=1e-5, rtol=1e-5)


def test_sequence_batch_pads_right_and_marks_the_completion():
    from prefopt.data.collate import sequence_batch

    input_ids, attention, completion = sequence_batch([[1, 2], [3]], [[4], [5, 6, 7]], pad_token_id=0)
    assert input_ids.tolist() == [[1, 2, 4, 0], [3, 5, 6, 7]]
    assert attention.dtype == torch.long and attention.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert completion.dtype == torch.bool
    assert completion.tolist() == [[False, False, True, False], [False, True, True, True]]
    wide, _, _ = sequence_batch([[1]], [[2]], pad_token_id=9, width=4)
    assert wide.tolist() == [[1, 2, 9, 9]]
