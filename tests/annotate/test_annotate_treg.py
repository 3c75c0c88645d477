"""T-REG token rewards: SPEC §5 vector, alignment under prefixes of different lengths, storage with pairs."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

from prefopt.annotate import (
    TregTemplates,
    annotate_token_rewards,
    contrastive_token_rewards,
    token_rewards,
)
from prefopt.annotate.treg import wrap_prompt
from prefopt.data import PairCollator, load_pairs, tokenize_pairs
from prefopt.data.tokenize import encode_prompts
from prefopt.io import write_rows


def test_spec_vector():
    """SPEC §5: better [-0.2, -1.5, -0.7], worse [-0.9, -0.4, -0.7] -> σ([0.7, -1.1, 0]) - 0.5."""
    got = contrastive_token_rewards(torch.tensor([-0.2, -1.5, -0.7]), torch.tensor([-0.9, -0.4, -0.7]))
    assert got.tolist() == pytest.approx([0.168188, -0.250260, 0.0], abs=1e-6)


def test_wrap_prompt_string_and_last_user_turn():
    assert wrap_prompt("Q", "[{prompt}] be good") == "[Q] be good"
    chat = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert wrap_prompt(chat, "<{prompt}>")[2]["content"] == "<c>"
    assert wrap_prompt(chat, "<{prompt}>")[0]["content"] == "a"
    with pytest.raises(ValueError, match="exactly once"):
        TregTemplates(better="no placeholder")


def direct_rewards(
    model, prefix_better: list[int], prefix_worse: list[int], completion: list[int]
) -> list[float]:
    """Per position from full logits: token t of the completion sits at len(prefix) + t."""
    out = []
    with torch.no_grad():
        lb = torch.log_softmax(model(torch.tensor([prefix_better + completion])).logits[0].float(), -1)
        lw = torch.log_softmax(model(torch.tensor([prefix_worse + completion])).logits[0].float(), -1)
    for t, y in enumerate(completion):
        b = lb[len(prefix_better) + t - 1, y]
        w = lw[len(prefix_worse) + t - 1, y]
        out.append((torch.sigmoid(b - w) - 0.5).item())
    return out


@pytest.mark.parametrize("conversational", [False, True])
def test_rewards_align_with_policy_tokens_under_prefixes_of_different_lengths(tiny_tokenizer, conversational):
    model = make_tiny_model(tiny_tokenizer, seed=3)
    templates = TregTemplates(
        better="{prompt} Be right.", worse="Answer badly, at great length, and wrongly: {prompt}"
    )
    prompts = ["What is 3+4?", "Name a fruit."]
    completions = ["3+4 is 7.", "A pear, which is sweet."]
    others = ["Eight.", "Rocks."]
    if conversational:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
        completions, others = (
            [[{"role": "assistant", "content": c}] for c in texts] for texts in (completions, others)
        )
    pairs = load_pairs(
        [{"prompt": p, "chosen": c, "rejected": o} for p, c, o in zip(prompts, completions, others)]
    )
    tokenized, _ = tokenize_pairs(pairs, tiny_tokenizer)
    ids = list(tokenized["chosen_ids"])
    got = token_rewards(
        model, tiny_tokenizer, prompts, ids, templates=templates, batch_size=2, progress=False
    )
    better = encode_prompts([wrap_prompt(p, templates.better) for p in prompts], tiny_tokenizer)
    worse = encode_prompts([wrap_prompt(p, templates.worse) for p in prompts], tiny_tokenizer)
    for i, completion in enumerate(ids):
        assert len(worse[i]) - len(better[i]) > 10
        assert len(got[i]) == len(completion)
        assert got[i] == pytest.approx(direct_rewards(model, better[i], worse[i], completion), abs=1e-5)


def test_annotated_pairs_round_trip_into_training_batches(tmp_path, tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, seed=4)
    pairs = load_pairs(
        [
            {
                "prompt": [{"role": "user", "content": "Hi"}],
                "chosen": [{"role": "assistant", "content": "Hello!"}],
                "rejected": [{"role": "assistant", "content": "Go away, I am busy."}],
            },
            {
                "prompt": [{"role": "user", "content": "2*3?"}],
                "chosen": [{"role": "assistant", "content": "6"}],
                "rejected": [{"role": "assistant", "content": "5"}],
            },
        ]
    )
    annotated = annotate_token_rewards(pairs, model, tiny_tokenizer, progress=False)
    path = write_rows(tmp_path / "treg.jsonl", list(annotated.remove_columns(["source_file", "source_row"])))
    reloaded, _ = tokenize_pairs(load_pairs(path), tiny_tokenizer)
    for row in reloaded:
        assert len(row["chosen_token_rewards"]) == len(row["chosen_ids"])
        assert len(row["rejected_token_rewards"]) == len(row["rejected_ids"])
        assert all(-0.5 < r < 0.5 for r in row["chosen_token_rewards"] + row["rejected_token_rewards"])
    batch = PairCollator(tiny_tokenizer.pad_token_id)(list(reloaded))
    assert batch["chosen_token_rewards"].shape == (2, max(len(r["chosen_ids"]) for r in reloaded))
    assert batch["rejected_token_rewards"][0, : len(reloaded[0]["rejected_ids"])].tolist() == pytest.approx(
        reloaded[0]["rejected_token_rewards"]
    )
