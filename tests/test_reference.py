"""Reference log-prob cache: correct values, reuse, and no stale reuse after model/data changes."""

from __future__ import annotations

import datasets
import pytest
import torch
from conftest import make_tiny_model
from peft import LoraConfig, get_peft_model

from prefopt import reference
from prefopt.data import PairCollator
from prefopt.logps import pair_logps
from prefopt.reference import add_reference_logps


def make_pairs(seed: int = 0, n: int = 5) -> datasets.Dataset:
    gen = torch.Generator().manual_seed(seed)

    def ids(length: int) -> list[int]:
        return torch.randint(3, 250, (length,), generator=gen).tolist()

    rows = [
        {"prompt_ids": ids(2 + i % 3), "chosen_ids": ids(1 + (2 * i) % 5), "rejected_ids": ids(2 + i % 4)}
        for i in range(n)
    ]
    return datasets.Dataset.from_list(rows)


@pytest.fixture()
def counted(monkeypatch):
    """Counts reference computations (cache misses)."""
    calls = []
    real = reference._compute
    monkeypatch.setattr(reference, "_compute", lambda *a: calls.append(1) or real(*a))
    return calls


def run(dataset, model, cache_dir, **kwargs):
    return add_reference_logps(dataset, model, batch_size=2, cache_dir=cache_dir, progress=False, **kwargs)


def test_columns_match_the_model_and_feed_pair_logps(tiny_tokenizer, tmp_path):
    model = make_tiny_model(tiny_tokenizer)
    pairs = make_pairs()
    out = run(pairs, model, tmp_path)
    assert [len(v) for v in out["ref_chosen_logps"]] == [len(v) for v in pairs["chosen_ids"]]
    assert [len(v) for v in out["ref_rejected_logps"]] == [len(v) for v in pairs["rejected_ids"]]
    collator = PairCollator(tiny_tokenizer.pad_token_id)
    batch = collator(list(out))
    with torch.no_grad():
        result = pair_logps(model, batch)
    torch.testing.assert_close(result.ref_chosen * result.chosen_mask, result.chosen * result.chosen_mask, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        result.ref_rejected * result.rejected_mask, result.rejected * result.rejected_mask, atol=1e-5, rtol=0
    )
    assert [p.name for p in tmp_path.iterdir()] == [f"{reference.cache_key(model, pairs)}.safetensors"]


def test_cache_is_reused_and_model_mode_restored(tiny_tokenizer, tmp_path, counted):
    model = make_tiny_model(tiny_tokenizer).train()
    pairs = make_pairs()
    first = run(pairs, model, tmp_path)
    second = run(first, model, tmp_path)  # existing ref columns are replaced, not duplicated
    assert counted == [1] and model.training
    assert list(second["ref_chosen_logps"]) == list(first["ref_chosen_logps"])


def test_changed_weights_dtype_or_config_recompute(tiny_tokenizer, tmp_path, counted):
    model = make_tiny_model(tiny_tokenizer)
    pairs = make_pairs()
    run(pairs, model, tmp_path)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3
    run(pairs, model, tmp_path)
    run(pairs, model.to(torch.float64), tmp_path)
    other = make_tiny_model(tiny_tokenizer)
    other.config.rms_norm_eps = 1e-3  # same weights, different config JSON
    run(pairs, other, tmp_path)
    assert counted == [1, 1, 1, 1]
    assert len(list(tmp_path.glob("*.safetensors"))) == 4


def test_changed_data_or_tokenization_recompute(tiny_tokenizer, tmp_path, counted):
    model = make_tiny_model(tiny_tokenizer)
    pairs = make_pairs()
    run(pairs, model, tmp_path)
    one_token = pairs.map(lambda row, i: {"chosen_ids": row["chosen_ids"][:-1] + [7]} if i == 3 else {}, with_indices=True)
    run(one_token, model, tmp_path)
    # Same token stream, different prompt/completion boundary: a different tokenization.
    moved = pairs.map(lambda row: {"prompt_ids": row["prompt_ids"][:-1], "chosen_ids": row["prompt_ids"][-1:] + row["chosen_ids"]})
    run(moved, model, tmp_path)
    run(pairs.select([1, 0, 2, 3, 4]), model, tmp_path)
    assert counted == [1, 1, 1, 1]


def test_disabled_adapter_reference_is_the_base_model_and_ignores_adapter_weights(tiny_tokenizer, tmp_path, counted):
    base = make_tiny_model(tiny_tokenizer)
    pairs = make_pairs()
    expected = run(pairs, base, tmp_path / "base")
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    got = run(pairs, policy, tmp_path, disable_adapter=True)
    for a, b in zip(got["ref_chosen_logps"], expected["ref_chosen_logps"]):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
    with torch.no_grad():
        next(p for n, p in policy.named_parameters() if "lora_B" in n).add_(1.0)
    run(pairs, policy, tmp_path, disable_adapter=True)
    assert counted == [1, 1]
    with pytest.raises(TypeError, match="needs a peft.PeftModel"):
        run(pairs, make_tiny_model(tiny_tokenizer, seed=3), tmp_path, disable_adapter=True)


def test_missing_token_columns_are_reported(tiny_tokenizer, tmp_path):
    pairs = make_pairs().remove_columns("rejected_ids")
    with pytest.raises(KeyError, match="tokenize_pairs"):
        run(pairs, make_tiny_model(tiny_tokenizer), tmp_path)
