"""Loading every supported source and format into normalized pairs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pytest

from prefopt.data import DataSourceError, load_pairs, sources, validate_pairs

HH_PATH = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "hh_rlhf_harmless" / "test.jsonl.gz"
)

STANDARD = [
    {"prompt": "2+2=", "chosen": "4", "rejected": "5", "id": 7, "weight": 0.5, "meta": {"origin": "unit"}},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome"},
]
CONVERSATIONAL = [
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
        "chosen_token_rewards": [0.1, 0.2],
    }
]
IMPLICIT = [
    {
        "chosen": [{"role": "user", "content": "Sky colour?"}, {"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "user", "content": "Sky colour?"}, {"role": "assistant", "content": "Green."}],
    }
]
HH = [
    {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Joke?\n\nAssistant: Why did the chicken cross?",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Joke?\n\nAssistant: No.",
    }
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_standard_jsonl_keeps_optional_fields(tmp_path):
    ds = load_pairs(write_jsonl(tmp_path / "pairs.jsonl", STANDARD))
    assert ds.num_rows == 2
    first, second = ds[0], ds[1]
    assert (first["prompt"], first["chosen"], first["rejected"]) == ("2+2=", "4", "5")
    assert (first["id"], first["weight"], first["meta"]) == ("7", 0.5, {"origin": "unit"})
    assert (second["id"], second["weight"]) == (None, None)
    assert (first["source_file"], first["source_row"], second["source_row"]) == (
        str(tmp_path / "pairs.jsonl"),
        1,
        2,
    )


def test_conversational_json_array(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(CONVERSATIONAL))
    report = validate_pairs(path)
    assert report.format == "conversational" and not report.problems
    ds = load_pairs(path)
    assert ds[0]["prompt"] == CONVERSATIONAL[0]["prompt"]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "Hello."}]
    assert ds[0]["chosen_token_rewards"] == [0.1, 0.2]


def test_implicit_messages_parquet_split_at_last_shared_turn(tmp_path):
    path = tmp_path / "pairs.parquet"
    datasets.Dataset.from_list(IMPLICIT).to_parquet(str(path))
    ds = load_pairs(path)
    assert ds[0]["prompt"] == [{"role": "user", "content": "Sky colour?"}]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "Blue."}]
    assert ds[0]["rejected"] == [{"role": "assistant", "content": "Green."}]


def test_prompt_string_beside_full_conversations_is_implicit(tmp_path):
    """HuggingFaceH4/ultrafeedback_binarized layout: a prompt string plus full chosen/rejected conversations."""
    rows = [{"prompt": "Sky colour?", **IMPLICIT[0]}]
    ds = load_pairs(write_jsonl(tmp_path / "h4.jsonl", rows))
    assert ds[0]["prompt"] == [{"role": "user", "content": "Sky colour?"}]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "Blue."}]


def test_hh_transcripts_become_messages(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(HH[0]) + "\n")
    ds = load_pairs(path)
    assert ds[0]["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Joke?"},
    ]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "Why did the chicken cross?"}]
    assert ds[0]["rejected"] == [{"role": "assistant", "content": "No."}]


def test_format_override_and_inconsistent_rows(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", STANDARD + HH)
    report = validate_pairs(path)
    assert report.format == "standard"  # the majority
    assert [(p.row, p.reason) for p in report.problems] == [(3, "inconsistent_format")]
    forced = validate_pairs(path, format="hh")
    assert len(forced.pairs) == 1 and forced.pairs[0]["source_row"] == 3


def test_saved_dataset_directory_with_split(tmp_path):
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(STANDARD), "test": datasets.Dataset.from_list(STANDARD[:1])}
    ).save_to_disk(str(tmp_path / "dsdict"))
    assert load_pairs(tmp_path / "dsdict", split="test").num_rows == 1
    with pytest.raises(ValueError, match="split"):
        load_pairs(tmp_path / "dsdict")


def test_hub_name_dispatches_to_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, config_name=None, split=None):
        calls.append((name, config_name, split))
        return datasets.Dataset.from_list(STANDARD)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_pairs("someone/prefs", split="train_prefs")
    assert calls == [("someone/prefs", None, "train_prefs")]
    assert ds.num_rows == 2 and ds[0]["source_file"] == "someone/prefs[train_prefs]"
    rows = sources.read_rows("openai/gsm8k", split="test", config_name="main")  # a Hub config (GSM8K "main")
    assert calls[-1] == ("openai/gsm8k", "main", "test") and rows.source == "openai/gsm8k[test]"


def test_config_name_is_only_for_hub_datasets(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(DataSourceError, match=r"p\.jsonl: config_name='main' only applies to Hub datasets"):
        sources.read_rows(path, config_name="main")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_an_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataSourceError, match=r"empty\.jsonl: contains no rows"):
        sources.read_rows(path)


def test_a_corrupt_parquet_file_is_a_data_source_error(tmp_path):
    path = tmp_path / "pairs.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataSourceError, match=r"pairs\.parquet: not a readable parquet file"):
        sources.read_rows(path)


def test_in_memory_rows():
    ds = load_pairs(STANDARD)
    assert ds.num_rows == 2 and ds[1]["source_file"] == "<rows>"


def test_missing_path_is_not_a_hub_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_pairs(tmp_path / "absent.jsonl")


def test_real_hh_rlhf_first_50_rows(tmp_path):
    with gzip.open(HH_PATH, "rt", encoding="utf-8") as f:
        head = [json.loads(next(f)) for _ in range(50)]
    ds = load_pairs(write_jsonl(tmp_path / "hh50.jsonl", head))
    assert ds.num_rows == 50
    for row, raw in zip(ds, head):
        prompt, chosen, rejected = row["prompt"], row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert prompt[0]["role"] == "user" and prompt[-1]["role"] == "user"
        assert all(m["role"] in ("user", "assistant") for m in prompt)
        assert raw["chosen"].endswith(chosen) and raw["rejected"].endswith(rejected)
        assert chosen != rejected
