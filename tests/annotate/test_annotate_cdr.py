"""CDR: SPEC §4 vector, parity with two independently scored models, pair building and relabelling."""

from __future__ import annotations

import json

import pytest
from conftest import make_tiny_model, make_tiny_tokenizer
from test_annotate_scoring import direct_score

from prefopt.annotate import (
    CDRAnnotator,
    Criteria,
    Exemplar,
    ResponseScore,
    Scorer,
    best_worst,
    density_ratio,
    load_criteria,
    pairs_from_candidates,
    read_candidates,
    relabel_pairs,
)
from prefopt.data import DataValidationError


def test_spec_vector():
    """SPEC §4: strong [-.5,-.7,-.2,-.6] (sum -2), weak [-1,-.9,-.8,-1.3] (sum -4) -> 2.0 and 2.0/4."""
    strong = ResponseScore(sum([-0.5, -0.7, -0.2, -0.6]), 4)
    weak = ResponseScore(sum([-1.0, -0.9, -0.8, -1.3]), 4)
    assert density_ratio(strong, weak, "sum") == pytest.approx(2.0)
    assert density_ratio(strong, weak, "mean") == pytest.approx(0.5)
    assert best_worst([0.3, 1.2, -0.4, 0.9]) == (1, 2)


def test_mean_divides_by_the_strong_token_count_and_margin_filters():
    assert density_ratio(ResponseScore(-2.0, 4), ResponseScore(-4.0, 10), "mean") == pytest.approx(0.5)
    assert best_worst([0.3, 1.2, -0.4, 0.9], min_margin=2.0) is None
    assert best_worst([0.5, 0.5]) is None
    with pytest.raises(ValueError, match="normalize"):
        density_ratio(ResponseScore(0, 1), ResponseScore(0, 1), "max")


@pytest.fixture(scope="module")
def annotator() -> CDRAnnotator:
    """Strong: ChatML tokenizer, seed 0. Weak: the same bytes without a chat template, seed 1."""
    strong_tok = make_tiny_tokenizer()
    weak_tok = make_tiny_tokenizer()
    weak_tok.chat_template = None
    return CDRAnnotator(
        Scorer.create(make_tiny_model(strong_tok, seed=0), strong_tok),
        Scorer.create(make_tiny_model(weak_tok, seed=1), weak_tok),
        criteria=Criteria("Prefer short answers.", (Exemplar("Hi?", "Hello.", "Go away."),)),
        batch_size=3,
        progress=False,
    )


@pytest.mark.parametrize("normalize", ["sum", "mean"])
def test_rewards_equal_direct_computation_with_each_models_own_tokenizer(annotator, normalize):
    annotator = CDRAnnotator(annotator.strong, annotator.weak, annotator.criteria, normalize, progress=False)
    prompts = ["What is 2+2?", [{"role": "user", "content": "Name a color."}]]
    responses = ["It is 4.", [{"role": "assistant", "content": "Blue."}]]
    context = annotator.criteria.render()
    for prompt, response, got in zip(prompts, responses, annotator.rewards(prompts, responses)):
        s, n_s = direct_score(annotator.strong.model, annotator.strong.tokenizer, prompt, response, context)
        w, n_w = direct_score(annotator.weak.model, annotator.weak.tokenizer, prompt, response, context)
        assert n_s != n_w  # the template adds tokens only for the strong tokenizer
        assert got == pytest.approx((s - w) / (n_s if normalize == "mean" else 1), abs=1e-4)


def test_candidates_to_best_worst_pairs(annotator):
    rows = [
        {
            "id": "a",
            "prompt": "Pick a number.",
            "candidates": ["7", "Seven, I think.", "no", "42 is the answer"],
        },
        {"prompt": [{"role": "user", "content": "Hi"}], "candidates": ["Hello!", "Hey", "..."]},
    ]
    pairs, report = pairs_from_candidates(rows, annotator)
    assert report["n_pairs"] == 2
    for row, pair in zip(rows, pairs):
        rewards = annotator.rewards(
            [row["prompt"]] * len(row["candidates"]),
            [
                c if isinstance(row["prompt"], str) else [{"role": "assistant", "content": c}]
                for c in row["candidates"]
            ],
        )
        best = max(range(len(rewards)), key=rewards.__getitem__)
        worst = min(range(len(rewards)), key=rewards.__getitem__)
        assert (pair["meta"]["chosen_index"], pair["meta"]["rejected_index"]) == (best, worst)
        assert pair["meta"]["cdr_margin"] == pytest.approx(rewards[best] - rewards[worst])
    assert (
        pairs[0]["id"] == "a"
        and pairs[0]["chosen"] == rows[0]["candidates"][pairs[0]["meta"]["chosen_index"]]
    )
    assert pairs[1]["chosen"][0]["role"] == "assistant"
    none, report = pairs_from_candidates(rows, annotator, min_margin=1e9)
    assert none == [] and report["n_skipped"] == 2


def test_relabel_reports_agreement_and_flips_or_drops(annotator):
    pairs = [
        {
            "prompt": f"Question {i}?",
            "chosen": f"Answer {i}.",
            "rejected": "I refuse " * (i + 1),
            "meta": {"k": i},
        }
        for i in range(6)
    ]
    kept, report = relabel_pairs(pairs, annotator)
    agree = [p["meta"]["cdr_chosen"] > p["meta"]["cdr_rejected"] for p in kept]
    assert report.n_agree == sum(agree) and report.n_pairs == 6
    assert report.agreement + report.agreement_reversed == pytest.approx(1 - report.n_ties / 6)
    assert kept[0]["meta"]["k"] == 0
    flipped, r_flip = relabel_pairs(pairs, annotator, on_disagree="flip")
    assert r_flip.n_flipped == 6 - sum(agree)
    assert all(p["meta"]["cdr_chosen"] > p["meta"]["cdr_rejected"] for p in flipped)
    dropped, r_drop = relabel_pairs(pairs, annotator, on_disagree="drop")
    assert len(dropped) == sum(agree) and r_drop.n_dropped == 6 - sum(agree)


def test_criteria_presets_and_files(tmp_path):
    for name in ("safety", "reasoning", "chat"):
        assert "Preferred response:" in load_criteria(name).render()
    text = tmp_path / "c.txt"
    text.write_text("Judge correctness only.\n")
    assert load_criteria(text).render() == "Judge correctness only."
    spec = tmp_path / "c.yaml"
    spec.write_text("system: Be safe.\nexemplars:\n  - {prompt: p, chosen: c, rejected: r}\n")
    assert load_criteria(spec).exemplars == (Exemplar("p", "c", "r"),)
    spec.write_text("system: Be safe.\nexemplars:\n  - {prompt: p, chosen: c}\n")
    with pytest.raises(ValueError, match=r"c.yaml: exemplars\[0\] lacks string field\(s\) \['rejected'\]"):
        load_criteria(spec)
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        load_criteria("nonexistent")


def test_read_candidates_names_row_and_field(tmp_path):
    path = tmp_path / "cands.jsonl"
    rows = [
        {"prompt": "p", "candidates": ["a", "b"]},
        {"prompt": "p", "candidates": ["only one"]},
        {"candidates": ["a", "b"]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataValidationError) as err:
        read_candidates(path)
    assert "row 2, field 'candidates'" in str(err.value) and "row 3, field 'prompt'" in str(err.value)
    path.write_text(json.dumps(rows[0]) + "\n")
    assert read_candidates(path) == [rows[0]]
