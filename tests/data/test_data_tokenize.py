"""Tokenization: chat templates, EOS, truncation policy, token-reward alignment, determinism.

The tiny tokenizer is byte-level (one token per byte, ChatML specials), so token counts below are
byte counts: "Q?" is 2 tokens, "yes" + EOS is 4.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import CHATML, make_tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from prefopt.data import DataValidationError, load_pairs, tokenize_pairs
from prefopt.models import load_tokenizer

HH_PATH = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "hh_rlhf_harmless" / "test.jsonl.gz"
)

SHORT = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}
LONG = {"prompt": "Q?", "chosen": "a long answer", "rejected": "no"}
CHAT = {
    "prompt": [{"role": "user", "content": "Hi"}],
    "chosen": [{"role": "assistant", "content": "Hello."}],
    "rejected": [{"role": "assistant", "content": "Go away."}],
}


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_standard_is_prompt_then_completion_plus_eos(tiny_tokenizer):
    tokenized, stats = tokenize_pairs(load_pairs([SHORT]), tiny_tokenizer)
    row = tokenized[0]
    eos = tiny_tokenizer.eos_token_id
    assert row["prompt_ids"] == ids(tiny_tokenizer, "Q?")
    assert row["chosen_ids"] == ids(tiny_tokenizer, "yes") + [eos]
    assert row["rejected_ids"] == ids(tiny_tokenizer, "no") + [eos]
    assert (stats.n_rows, stats.n_kept, stats.n_truncated, stats.dropped) == (1, 1, 0, {})
    assert row["prompt"] == "Q?"  # the text columns are kept


def test_conversational_uses_chat_template(tiny_tokenizer):
    row = tokenize_pairs(load_pairs([CHAT]), tiny_tokenizer)[0][0]
    prompt_text = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_tokenizer.decode(row["prompt_ids"]) == prompt_text
    assert len(row["prompt_ids"]) == 21  # 3 specials + "user\nHi" (7) + "\n" + "assistant\n" (10)
    # The template's "\n" after <|im_end|> is cut: the completion ends at EOS, like generation.
    assert tiny_tokenizer.decode(row["chosen_ids"]) == "Hello.<|im_end|>"
    assert tiny_tokenizer.decode(row["rejected_ids"]) == "Go away.<|im_end|>"
    full = tiny_tokenizer.apply_chat_template(CHAT["prompt"] + CHAT["chosen"], tokenize=False)
    assert ids(tiny_tokenizer, full)[: 21 + 7] == row["prompt_ids"] + row["chosen_ids"]


def test_template_without_eos_gets_one_appended():
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = CHATML.replace("'<|im_end|>' + '\n'", "'\n'")
    row = tokenize_pairs(load_pairs([CHAT]), tokenizer)[0][0]
    assert tokenizer.decode(row["chosen_ids"]) == "Hello.\n<|im_end|>"


def test_truncation_error_lists_rows(tiny_tokenizer):
    with pytest.raises(DataValidationError) as info:
        tokenize_pairs(load_pairs([SHORT, LONG]), tiny_tokenizer, max_length=8)
    [problem] = info.value.problems
    assert (problem.source, problem.row, problem.field, problem.reason) == ("<rows>", 2, "chosen", "too_long")
    assert "prompt (2) + chosen (14) = 16 tokens > max_length=8" in str(info.value)


def test_truncation_drop_counts(tiny_tokenizer):
    tokenized, stats = tokenize_pairs(
        load_pairs([SHORT, LONG, SHORT]), tiny_tokenizer, max_length=8, truncation="drop"
    )
    assert tokenized.num_rows == 2 and tokenized["source_row"] == [1, 3]
    assert (stats.n_kept, stats.n_truncated, stats.dropped) == (2, 0, {"too_long": 1})


def test_truncation_keep_start_keeps_prompt(tiny_tokenizer, caplog):
    tokenized, stats = tokenize_pairs(
        load_pairs([SHORT, LONG]), tiny_tokenizer, max_length=8, truncation="keep_start"
    )
    assert (stats.n_kept, stats.n_truncated, stats.dropped) == (2, 1, {})
    short, long = tokenized[0], tokenized[1]
    assert short["chosen_ids"][-1] == tiny_tokenizer.eos_token_id
    assert long["prompt_ids"] == ids(tiny_tokenizer, "Q?")
    assert long["chosen_ids"] == ids(tiny_tokenizer, "a long")  # 8 - 2 prompt tokens, no EOS
    assert long["rejected_ids"] == ids(tiny_tokenizer, "no") + [tiny_tokenizer.eos_token_id]
    assert "truncated 1" in caplog.text


def test_prompt_budget(tiny_tokenizer):
    pairs = load_pairs([SHORT, {**SHORT, "prompt": "a long prompt"}])
    for mode in ("error", "keep_start"):
        with pytest.raises(DataValidationError, match="row 2, field 'prompt': the prompt has 13 tokens"):
            tokenize_pairs(pairs, tiny_tokenizer, max_prompt_length=4, truncation=mode)
    tokenized, stats = tokenize_pairs(pairs, tiny_tokenizer, max_prompt_length=4, truncation="drop")
    assert tokenized.num_rows == 1 and stats.dropped == {"prompt_too_long": 1}


def test_keep_start_needs_room_for_the_completion(tiny_tokenizer):
    with pytest.raises(DataValidationError, match="too_long"):
        tokenize_pairs(load_pairs([SHORT]), tiny_tokenizer, max_length=2, truncation="keep_start")


def test_token_rewards_checked_and_truncated(tiny_tokenizer):
    good = {**SHORT, "chosen_token_rewards": [0.1, 0.2, 0.3, 0.4], "rejected_token_rewards": [1.0, 2.0, 3.0]}
    tokenized, _ = tokenize_pairs(load_pairs([good]), tiny_tokenizer, max_length=4, truncation="keep_start")
    assert tokenized[0]["chosen_token_rewards"] == pytest.approx([0.1, 0.2])
    assert tokenized[0]["rejected_token_rewards"] == pytest.approx([1.0, 2.0])
    bad = {**SHORT, "chosen_token_rewards": [0.1]}
    with pytest.raises(
        DataValidationError, match="field 'chosen_token_rewards': has 1 values but the chosen"
    ):
        tokenize_pairs(load_pairs([bad]), tiny_tokenizer)


def merging_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level ChatML tokenizer with one merge, "\\n" + "H", across the prompt/completion boundary."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)} | {"ĊH": len(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ċ", "H")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML
    return fast


def test_boundary_merge_is_an_error_even_in_drop_mode():
    with pytest.raises(DataValidationError, match="merges tokens across the prompt/completion boundary"):
        tokenize_pairs(load_pairs([CHAT]), merging_tokenizer(), truncation="drop")


def test_template_rendering_the_prompt_differently_is_an_error():
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = CHATML.replace("message['role'] + '\n'", "message['role'] + ':'")
    with pytest.raises(DataValidationError, match="renders the prompt differently"):
        tokenize_pairs(load_pairs([CHAT]), tokenizer)


def test_bad_arguments(tiny_tokenizer):
    pairs = load_pairs([SHORT])
    with pytest.raises(ValueError, match="truncation must be one of"):
        tokenize_pairs(pairs, tiny_tokenizer, truncation="left")
    with pytest.raises(ValueError, match="max_length must be a positive"):
        tokenize_pairs(pairs, tiny_tokenizer, max_length=0)


@pytest.mark.slow
def test_num_proc_is_deterministic(tiny_tokenizer):
    pairs = load_pairs([SHORT, LONG, {**SHORT, "prompt": "Why?"}] * 20)
    one, _ = tokenize_pairs(pairs, tiny_tokenizer, max_length=8, truncation="keep_start")
    two, _ = tokenize_pairs(
        pairs, tiny_tokenizer, max_length=8, truncation="keep_start", num_proc=2, batch_size=7
    )
    assert one.to_list() == two.to_list()


@pytest.mark.slow
def test_smollm2_template_on_real_hh_rows():
    """The real SmolLM2 chat template: prompt tokens prefix the conversation, completions end at EOS."""
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    with gzip.open(HH_PATH, "rt", encoding="utf-8") as f:
        rows = [json.loads(next(f)) for _ in range(50)]
    tokenized, stats = tokenize_pairs(load_pairs(rows), tokenizer)
    assert stats.n_kept == 50
    for row in tokenized:
        for side in ("chosen", "rejected"):
            completion = row[f"{side}_ids"]
            assert completion[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(completion[:-1]) == row[side][0]["content"]
        assert tokenizer.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n")
