"""``RoundsRecipe`` validation (errors name the key and list the valid choices), overrides, shipped recipes.

The GSM8K / MATH-500 recipes name Hub datasets; here they load with ``problems.*`` pointed at the
shared local copies (read in place, skipped where absent), with the recipes' own field settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prefopt.config import RecipeError
from prefopt.online.config import load_rounds_recipe
from prefopt.online.pairs import available_pair_strategies
from prefopt.online.problems import load_problems
from prefopt.online.rewards import available_rewards

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
MINIMAL = {
    "run": {"name": "cfg-test"},
    "model": {"name_or_path": "smollm2-135m-instruct", "lora": {"r": 4}},
    "problems": {"train": "train.jsonl", "heldout": "heldout.jsonl"},
    "loss": {"name": "dpo", "beta": 0.1},
}


@pytest.fixture()
def recipe_file(tmp_path) -> Path:
    path = tmp_path / "rounds.yaml"
    path.write_text(yaml.safe_dump(MINIMAL, sort_keys=False))
    return path


def error(path: Path, *overrides: str) -> str:
    with pytest.raises(RecipeError) as info:
        load_rounds_recipe(path, list(overrides))
    message = str(info.value)
    assert message.startswith(f"{path}: invalid rounds recipe:")
    return message


def test_minimal_recipe_defaults(recipe_file):
    recipe = load_rounds_recipe(recipe_file)
    assert recipe.run.directory == Path("runs/cfg-test")
    assert (recipe.rounds.count, recipe.sampler.engine, recipe.verifier.name) == (3, "auto", "math")
    assert (recipe.reward.name, recipe.pairs.strategy, recipe.loss.reference) == (
        "correctness",
        "best_vs_worst",
        "precomputed",
    )


def test_unknown_key_lists_the_valid_keys(recipe_file):
    message = error(recipe_file, "sampler.temprature=0.7")
    assert "sampler.temprature: unknown key; valid keys here: engine, n, temperature, top_p" in message
    assert "rounds.partitions: unknown key; valid keys here: count, prompts_per_round, partition" in error(
        recipe_file, "rounds.partitions=disjoint"
    )
    assert "valid keys here: run, model, problems, rounds" in error(recipe_file, "round.count=2")


def test_unknown_names_are_rejected_with_the_registered_ones(recipe_file):
    message = error(recipe_file, "reward.name=lazer")
    assert "unknown reward 'lazer'" in message and ", ".join(available_rewards()) in message
    assert "unknown verifier 'maths'; registered: exact, math" in error(recipe_file, "verifier.name=maths")
    message = error(recipe_file, "pairs.strategy=best")
    assert "unknown pair strategy 'best'; registered: " + ", ".join(available_pair_strategies()) in message
    assert "rounds.partition: must be one of 'disjoint', 'epochs' or 'resample'" in error(
        recipe_file, "rounds.partition=x"
    )
    assert "sampler.engine: must be one of 'auto', 'hf' or 'vllm'" in error(
        recipe_file, "sampler.engine=sglang"
    )


def test_bad_reward_and_pair_hyperparameters(recipe_file):
    message = error(recipe_file, "reward.name=laser", "reward.target_lenght=256")
    assert "reward 'laser' got unknown hyperparameter(s) ['target_lenght']" in message
    assert "target_length" in message  # the valid names are listed
    message = error(recipe_file, "pairs.strategy=correct_short_vs_incorrect", "pairs.rejectd=incorrect")
    assert "pair strategy 'correct_short_vs_incorrect' takes no option(s) ['rejectd']; valid: rejected, max_pairs" in message
    assert "needs max_length" in error(recipe_file, "pairs.weighting=drpo")  # cross-option check at load
    # verifier options are checked at load too, without starting a worker
    assert "fallback='last_number'|'none'" in error(recipe_file, "verifier.fallback=sometimes")
    assert "{'bogus': 1}" in error(recipe_file, "verifier.bogus=1")
    assert "ignore_cas" in error(recipe_file, "verifier.name=exact", "verifier.ignore_cas=true")
    assert load_rounds_recipe(
        recipe_file, ["reward.name=laser", "reward.target_length=128"]
    ).reward.hparams == {"target_length": 128}


def test_reference_and_length_combinations(recipe_file):
    message = error(recipe_file, "loss.reference=adapter_disabled", "rounds.reference=initial")
    assert "set rounds.reference=previous or loss.reference=precomputed" in message
    recipe = load_rounds_recipe(recipe_file, ["loss.reference=adapter_disabled", "rounds.reference=previous"])
    assert recipe.loss.reference == "adapter_disabled"
    assert "train.max_prompt_length must be smaller than train.max_length" in error(
        recipe_file, "train.max_length=256", "train.max_prompt_length=256"
    )
    assert "loss.reference_model is not used by rounds" in error(recipe_file, "loss.reference_model=other")
    assert "model.lora is not set" in error(recipe_file, "model.lora=null", "loss.reference=adapter_disabled")


def test_out_of_range_values(recipe_file):
    assert "rounds.count: Input should be greater than 0" in error(recipe_file, "rounds.count=0")
    assert "sampler.top_p" in error(recipe_file, "sampler.top_p=1.5")
    assert "problems.heldout_limit" in error(recipe_file, "problems.heldout_limit=0")


def test_overrides(recipe_file):
    recipe = load_rounds_recipe(
        recipe_file,
        [
            "rounds.count=6",
            "sampler.n=2",
            "sampler.temperature=0.7",
            "reward.name=kimi",
            "reward.weight=0.2",
            "problems.id_field=null",
        ],
    )
    assert (recipe.rounds.count, recipe.sampler.n, recipe.problems.id_field) == (6, 2, None)
    params = recipe.sampler.params(seed=5)
    assert (params.n, params.temperature, params.seed, params.greedy) == (2, 0.7, 5, False)
    assert recipe.eval.params().greedy and recipe.eval.params().n == 1
    assert recipe.reward.hparams == {"weight": 0.2}
    with pytest.raises(RecipeError, match="not of the form section.key=value"):
        load_rounds_recipe(recipe_file, ["rounds.count"])


def test_quickstart_loads():
    recipe = load_rounds_recipe(REPO / "recipes" / "quickstart.yaml")
    assert recipe.sampler.engine == "hf" and recipe.model.name_or_path == "smollm2-135m-instruct"
    assert (REPO / recipe.problems.train).is_file() and (REPO / recipe.problems.heldout).is_file()


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not available")
@pytest.mark.parametrize(
    ("name", "train", "heldout", "marker"),
    [
        ("gsm8k", "gsm8k/train.jsonl", "gsm8k/test.jsonl", "####"),
        ("math500", "math500/test.jsonl", "math500/test.jsonl", "\\boxed{}"),
    ],
)
def test_online_recipes_read_the_local_copies(name, train, heldout, marker):
    path = REPO / "recipes" / "online" / f"{name}.yaml"
    hub = load_rounds_recipe(path)
    assert hub.sampler.engine == "vllm" and hub.sampler.n == 8 and hub.model.dtype == "bfloat16"
    assert hub.loss.reference == "precomputed" and hub.reward.name in ("laser", "hapo")
    recipe = load_rounds_recipe(
        path, [f"problems.train={SHARED / train}", f"problems.heldout={SHARED / heldout}"]
    )
    cfg = recipe.problems
    fields = {  # as RoundsRunner passes them
        "question_field": cfg.question_field,
        "answer_field": cfg.answer_field,
        "id_field": cfg.id_field,
        "config_name": cfg.config_name,
    }
    train_problems = load_problems(cfg.train, split=cfg.train_split, **fields)
    heldout_problems = load_problems(cfg.heldout, split=cfg.heldout_split, limit=cfg.heldout_limit, **fields)
    assert len(heldout_problems) in (1319, 500)
    if name == "gsm8k":  # the full local training set covers every round's disjoint slice
        assert len(train_problems) == 7473 >= recipe.rounds.count * recipe.rounds.prompts_per_round
        assert heldout_problems[0].id == "0" and "\n#### " in heldout_problems[0].gold
    else:  # MATH-500's own ids; the gold is the worked solution ending in \boxed{}
        assert heldout_problems[0].id == "test/precalculus/807.json" == train_problems[0].id
        assert "\\boxed{" in heldout_problems[0].gold
    prompt = heldout_problems[0].prompt_item(cfg.instruction).prompt
    # The whole instruction arrives (an unquoted "after ####." would be cut at the YAML comment sign).
    assert prompt[0]["content"].startswith(heldout_problems[0].question)
    assert prompt[0]["content"].endswith(f"{marker}.")
