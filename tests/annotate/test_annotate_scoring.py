"""Response scoring: parity with a direct transformers computation, the token boundary, the cache."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model, make_tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from prefopt.annotate import scoring
from prefopt.annotate.cache import ScoreCache
from prefopt.annotate.scoring import Scorer, format_conversation, score_responses
from prefopt.data.tokenize import TemplateMismatch

PROMPTS = ["What is 2+2?", [{"role": "user", "content": "Name a color."}], "Say hi."]
RESPONSES = ["It is 4.", [{"role": "assistant", "content": "Blue, like the sky."}], "Hi there!"]


def direct_score(model, tokenizer, prompt, response, context=None) -> tuple[float, int]:
    """Plain full-logits log_softmax, summed over the response tokens (found independently)."""
    prompt_text, full_text = format_conversation(tokenizer, prompt, response, context)
    specials = not tokenizer.chat_template
    n_prompt = len(tokenizer(prompt_text, add_special_tokens=specials)["input_ids"])
    ids = tokenizer(full_text, add_special_tokens=specials)["input_ids"]
    eos = tokenizer.eos_token_id
    ids = ids[: max(i for i, t in enumerate(ids) if t == eos) + 1] if eos in ids[n_prompt:] else ids + [eos]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    total = sum(logp[t - 1, ids[t]].item() for t in range(n_prompt, len(ids)))
    return total, len(ids) - n_prompt


@pytest.mark.parametrize("templated", [True, False])
def test_scores_equal_direct_transformers_computation(templated):
    tokenizer = make_tiny_tokenizer()
    if not templated:
        tokenizer.chat_template = None
    for seed in (0, 1):
        model = make_tiny_model(tokenizer, seed=seed)
        scorer = Scorer.create(model, tokenizer)
        got = score_responses(scorer, PROMPTS, RESPONSES, context="Be brief.", batch_size=2, progress=False)
        for prompt, response, score in zip(PROMPTS, RESPONSES, got):
            logp, n = direct_score(model, tokenizer, prompt, response, "Be brief.")
            assert score.n_tokens == n
            assert score.logp == pytest.approx(logp, abs=1e-4)


def test_plain_format_without_chat_template():
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = None
    prompt_text, full_text = format_conversation(tokenizer, "Hello?", "Hi.", "Criteria.")
    assert prompt_text == "Criteria.\n\nUser: Hello?\nAssistant:"
    assert full_text == prompt_text + " Hi."


def test_context_is_a_system_turn_merged_with_an_existing_one(tiny_tokenizer):
    prompt = [{"role": "system", "content": "Own rules."}, {"role": "user", "content": "Q"}]
    prompt_text, _ = format_conversation(tiny_tokenizer, prompt, "A", "Criteria.")
    assert prompt_text.startswith("<|im_start|>system\nCriteria.\n\nOwn rules.<|im_end|>")


def merging_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny byte tokenizer plus one BPE merge, newline + 'H', which crosses ChatML's boundary."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["ĊH"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ċ", "H")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = make_tiny_tokenizer().chat_template
    return fast


def test_token_merged_across_boundary_is_an_error():
    tokenizer = merging_tokenizer()
    scorer = Scorer(make_tiny_model(tokenizer), tokenizer, "fp")
    with pytest.raises(
        TemplateMismatch, match=r"response 1: .*merges tokens across the prompt/completion boundary"
    ):
        score_responses(scorer, ["q", "q"], ["ok", "Hello"], progress=False)


def test_template_that_rewrites_the_prompt_is_an_error(tiny_tokenizer):
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + ':' + m['content'] + ('|' if loop.last else '\n') }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
    )
    scorer = Scorer(make_tiny_model(tokenizer), tokenizer, "fp")
    with pytest.raises(TemplateMismatch, match="renders the prompt differently"):
        score_responses(scorer, ["q"], ["a"], progress=False)


def test_fingerprint_differs_between_seeds(tiny_tokenizer):
    a = Scorer.create(make_tiny_model(tiny_tokenizer, seed=0), tiny_tokenizer)
    b = Scorer.create(make_tiny_model(tiny_tokenizer, seed=1), tiny_tokenizer)
    again = Scorer.create(make_tiny_model(tiny_tokenizer, seed=0), tiny_tokenizer)
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == again.fingerprint


def test_interrupted_scoring_resumes_computing_only_the_rest(tmp_path, tiny_tokenizer, monkeypatch):
    scorer = Scorer.create(make_tiny_model(tiny_tokenizer), tiny_tokenizer)
    prompts = [f"Question {i}?" for i in range(10)]
    responses = [f"Answer number {i}" + "!" * i for i in range(10)]
    expected = score_responses(scorer, prompts, responses, batch_size=2, progress=False)
    real = scoring.completion_logps
    calls = []

    def interrupt_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[1].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "completion_logps", interrupt_after_three)
    path = tmp_path / "scores.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_responses(scorer, prompts, responses, batch_size=2, cache=ScoreCache(path), progress=False)
    assert len(ScoreCache(path)) == 6
    with path.open("a") as handle:  # a write cut off mid-line is ignored and recomputed
        handle.write('{"key": "abc", "lo')

    def count(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real(*args, **kwargs)

    calls.clear()
    monkeypatch.setattr(scoring, "completion_logps", count)
    cache = ScoreCache(path)
    got = score_responses(scorer, prompts, responses, batch_size=2, cache=cache, progress=False)
    assert calls == [2, 2]
    assert [s.n_tokens for s in got] == [s.n_tokens for s in expected]
    assert [s.logp for s in got] == pytest.approx([s.logp for s in expected], abs=1e-5)
    cache.finalize()
    assert len(path.read_text().splitlines()) == 10
    calls.clear()
    score_responses(scorer, prompts, responses, batch_size=2, cache=ScoreCache(path), progress=False)
    assert calls == []


def test_scoring_uses_the_training_boundary_and_eos_rule(tiny_tokenizer):
    """The response tokens a scorer sees are exactly the completion ids training uses for the same pair."""
    from prefopt.annotate.scoring import split_tokens
    from prefopt.data.tokenize import encode_pairs

    prompt = [{"role": "user", "content": "What is 2 + 2?"}]
    response = [{"role": "assistant", "content": "4, of course."}]
    prompt_ids, chosen, _ = encode_pairs([prompt], [response], [response], tiny_tokenizer)
    prompt_text, full_text = format_conversation(tiny_tokenizer, prompt, response)
    assert split_tokens(tiny_tokenizer, prompt_text, full_text) == (prompt_ids[0], chosen[0])
