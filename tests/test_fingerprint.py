"""One fingerprint for every cache: it moves with weights, dtype, config and tokenizer, and only then."""

from __future__ import annotations

import torch
from conftest import make_tiny_model, make_tiny_tokenizer

from prefopt.annotate.scoring import Scorer
from prefopt.fingerprint import model_fingerprint, tokenizer_fingerprint


def test_model_fingerprint_tracks_weights_dtype_and_config():
    tokenizer = make_tiny_tokenizer()
    model, same = make_tiny_model(tokenizer, seed=0), make_tiny_model(tokenizer, seed=0)
    base = model_fingerprint(model)
    assert base == model_fingerprint(same) and len(base) == 32
    assert model_fingerprint(make_tiny_model(tokenizer, seed=1)) != base
    with torch.no_grad():
        next(same.parameters())[0, 0] += 1e-3
    assert model_fingerprint(same) != base
    assert model_fingerprint(make_tiny_model(tokenizer, seed=0).to(torch.bfloat16)) != base
    other = make_tiny_model(tokenizer, seed=0)
    other.config.rope_theta = 1234.0
    assert model_fingerprint(other) != base


def test_tokenizer_fingerprint_tracks_the_chat_template():
    tokenizer = make_tiny_tokenizer()
    base = tokenizer_fingerprint(tokenizer)
    assert base == tokenizer_fingerprint(make_tiny_tokenizer())
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    assert tokenizer_fingerprint(tokenizer) != base


def test_scorer_fingerprint_is_the_shared_model_fingerprint_plus_the_tokenizer():
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(tokenizer)
    scorer = Scorer.create(model, tokenizer)
    assert scorer.fingerprint == f"{model_fingerprint(model)}-{tokenizer_fingerprint(tokenizer)}"


def test_a_score_cached_under_another_fingerprint_is_not_reused(tmp_path):
    """A cache written under an earlier fingerprint (e.g. before this digest) holds keys that never match."""
    from prefopt.annotate.cache import ScoreCache
    from prefopt.annotate.scoring import _encode, score_responses

    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(tokenizer)
    stale = Scorer(model, tokenizer, "sha256-of-the-old-fingerprint")
    cache = ScoreCache(tmp_path / "scores.jsonl")
    cache.append({_encode(stale, "q", "a", None).key: (123.0, 1)})  # a bogus score under the old key
    assert score_responses(stale, ["q"], ["a"], cache=cache, progress=False)[0].logp == 123.0
    fresh = score_responses(Scorer.create(model, tokenizer), ["q"], ["a"], cache=ScoreCache(cache.path),
                            progress=False)[0]
    assert fresh.logp < 0 and fresh.logp != 123.0
