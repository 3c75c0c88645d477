"""recipes/cpu/treg_annotated.yaml: annotate pairs, then train the ``treg`` loss on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

from conftest import make_tiny_model, make_tiny_tokenizer
from transformers import TrainerCallback

from prefopt.annotate import annotate_token_rewards
from prefopt.config import load_recipe
from prefopt.data import load_pairs
from prefopt.io import write_rows

REPO = Path(__file__).resolve().parents[2]


class KeepLogs(TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def test_treg_annotated_recipe_trains_on_tiny_model(tmp_path):
    from prefopt.train import train

    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(tokenizer, seed=5)
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    pairs = load_pairs(REPO / "data" / "arithmetic_pairs.jsonl").select(range(4))
    annotated = annotate_token_rewards(pairs, model, tokenizer, progress=False)
    pair_file = write_rows(tmp_path / "pairs.treg.jsonl", list(annotated))

    # The tiny tokenizer spends more tokens per prompt than SmolLM2's, hence the longer limits.
    recipe = load_recipe(
        REPO / "recipes" / "cpu" / "treg_annotated.yaml",
        [
            f"model.name_or_path={model_dir}",
            "model.lora=null",
            f"data.train={pair_file}",
            "data.max_prompt_length=512",
            "data.max_length=1024",
            f"train.output_dir={tmp_path / 'run'}",
            "train.max_steps=2",
            "train.batch_size=2",
            "logging.logging_steps=1",
        ],
    )
    assert recipe.loss.name == "treg"
    logs = KeepLogs()
    result = train(recipe, callbacks=[logs])
    steps = [entry for entry in logs.logs if "loss" in entry]
    assert result.global_step == 2 and len(steps) == 2
    assert all(math.isfinite(entry["loss"]) for entry in steps)
    # L_REG = -sum_t beta * r_t * log p_t is exactly 0 without token rewards; nonzero means they reached the loss.
    assert all(entry["treg/reg_chosen"] != 0 and entry["treg/reg_rejected"] != 0 for entry in steps)
