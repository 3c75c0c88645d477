"""Every recipe under recipes/ parses and validates; every CPU recipe trains one step on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from prefopt.cli import main
from prefopt.config import ROUNDS_KEY, load_recipe
from prefopt.train import train

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
ACCELERATE = RECIPES / "accelerate"
ALL = sorted(p for p in RECIPES.rglob("*.yaml") if ACCELERATE not in p.parents)
CPU = sorted((RECIPES / "cpu").glob("*.yaml"))
SMOKE_ROWS = 8


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_recipes_are_found():
    assert len(CPU) >= 7 and len(ALL) > len(CPU)


@pytest.mark.parametrize("path", ALL, ids=rel)
def test_recipe_validates(path):
    header = path.read_text().splitlines()[0]
    assert header.startswith("# "), (
        f"{rel(path)}: start with a header comment saying what it is and how to launch it"
    )
    if ROUNDS_KEY in yaml.safe_load(path.read_text()):
        from prefopt.online.config import load_rounds_recipe

        load_rounds_recipe(path)
        assert "prefopt rounds" in path.read_text()
    else:
        load_recipe(path)
        assert "prefopt train" in path.read_text()


@pytest.mark.parametrize("path", sorted(ACCELERATE.glob("*.yaml")), ids=rel)
def test_accelerate_config_loads(path):
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    assert f"--config_file {rel(path)}" in path.read_text()  # the header shows the launch line


def smoke_pairs(recipe_path: Path, tmp_path: Path, model_dir: str) -> str:
    """The first rows of the recipe's pair file; for T-REG recipes, annotated here with the tiny model."""
    recipe = load_recipe(recipe_path)
    source = REPO / recipe.data.train
    needs_token_rewards = recipe.loss.name.startswith("treg")
    if not source.is_file():
        assert needs_token_rewards, f"{rel(recipe_path)}: data.train={recipe.data.train} does not exist"
        source = REPO / "data/arithmetic_pairs.jsonl"  # what the recipe's header says to annotate
    subset = tmp_path / "pairs.jsonl"
    with source.open() as rows:
        subset.write_text("".join(next(rows) for _ in range(SMOKE_ROWS)))
    if not needs_token_rewards:
        return str(subset)
    annotated = tmp_path / "pairs.treg.jsonl"
    assert (
        main(
            [
                "annotate",
                "treg",
                "--model",
                model_dir,
                "--pairs",
                str(subset),
                "--out",
                str(annotated),
                "--quiet",
            ]
        )
        == 0
    )
    return str(annotated)


@pytest.mark.parametrize("path", CPU, ids=rel)
def test_cpu_recipe_trains_one_step_on_the_tiny_model(path, tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("PREFOPT_CACHE", str(tmp_path / "cache"))  # the reference cache
    overrides = [
        f"model.name_or_path={tiny_model_dir}",
        f"data.train={smoke_pairs(path, tmp_path, tiny_model_dir)}",
        f"train.output_dir={tmp_path / 'out'}",
        "train.max_steps=1",
        # one token per byte: the tiny tokenizer needs about twice SmolLM2's budget for these prompts
        "data.max_length=512",
        "data.max_prompt_length=256",
    ]
    result = train(load_recipe(path, overrides))
    assert result.global_step == 1 and result.metrics["train_loss"] == result.metrics["train_loss"]  # not NaN
    assert (tmp_path / "out/recipe.yaml").is_file()
    assert (tmp_path / "out/adapter_model.safetensors").is_file() or (
        tmp_path / "out/model.safetensors"
    ).is_file()
