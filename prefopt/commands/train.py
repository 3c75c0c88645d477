"""``prefopt train RECIPE.yaml [key=value ...]``: train from a recipe (see docs/recipes.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from prefopt.commands import add_recipe_arguments

if TYPE_CHECKING:
    from prefopt.config import Recipe


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command to the ``prefopt`` parser."""
    parser = subparsers.add_parser(
        "train",
        help="preference-optimize a model from a YAML recipe",
        description="Train a policy with a preference loss as described by a YAML recipe "
        "(sections model, data, loss, optim, train, logging; see docs/recipes.md). "
        "Multi-GPU / multi-process: accelerate launch [--config_file recipes/accelerate/ddp.yaml] -m prefopt train ...",
        epilog="example: prefopt train recipes/cpu/dpo.yaml train.max_steps=10 loss.beta=0.2",
    )
    add_recipe_arguments(parser, "train.max_steps=10 loss.beta=0.2 model.lora=null")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Validate the recipe, then train (or, with ``--dry-run``, print the resolved recipe)."""
    from prefopt.config import load_recipe  # imported here: --help stays fast

    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        print(recipe.to_yaml(), end="")
        return 0
    _check_data(recipe)
    from accelerate import PartialState  # imported here: --dry-run and --help stay fast

    from prefopt.train import train

    result = train(recipe)
    if PartialState().is_main_process:  # once, not once per process under accelerate launch
        print(f"prefopt train: {result.global_step} steps; model, tokenizer and recipe saved to {result.output_dir}")
    return 0


def _check_data(recipe: Recipe) -> None:
    """Read and validate ``data.train`` / ``data.eval`` exactly as training will, before any model loads.

    A bad row or an empty file is reported in seconds instead of after a (for a 7B model, minutes
    long) model load. Token-level checks (prompt budget, chat template) need the tokenizer and
    come during training.
    """
    from prefopt.data import load_pairs

    data = recipe.data
    for source, split in ((data.train, data.split), (data.eval, data.eval_split)):
        if source is not None:
            load_pairs(source, split=split, format=data.format, drop_invalid=data.drop_invalid)
