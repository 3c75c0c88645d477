"""``prefopt rounds RECIPE.yaml [key=value ...]``: online length-reward rounds (see docs/online.md)."""

from __future__ import annotations

import argparse
import logging

from prefopt.commands import add_quiet_argument, add_recipe_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``rounds`` command to the ``prefopt`` parser."""
    parser = subparsers.add_parser(
        "rounds",
        help="iterated semi-on-policy rounds: sample, verify, score length, build pairs, train, evaluate",
        description="Run (or resume) the rounds of a rounds recipe. Each step is written atomically to "
        "the run directory; running the same command again continues where a killed run stopped, and on "
        "a finished run prints its summary. Ends with a per-round table and an accuracy-vs-length plot.",
        epilog="example: prefopt rounds recipes/quickstart.yaml rounds.count=4 run.name=longer",
    )
    add_recipe_arguments(parser, "rounds.count=4 sampler.n=8 loss.beta=0.2")
    add_quiet_argument(parser, "no progress bars or step messages")
    parser.set_defaults(func=run_rounds)


def run_rounds(args: argparse.Namespace) -> int:
    """Validate the recipe, run every step not yet done, then print the table and write the plot."""
    from prefopt.online.config import load_rounds_recipe  # imported here: --help stays fast

    recipe = load_rounds_recipe(args.recipe, args.overrides)
    if args.dry_run:
        print(recipe.to_yaml(), end="")
        return 0
    from prefopt.online.report import write_summary
    from prefopt.online.rounds import RoundsRunner  # imported here: --dry-run and --help stay fast

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="prefopt rounds: %(message)s")
        logging.getLogger("prefopt").setLevel(logging.INFO)
    runner = RoundsRunner(recipe, progress=not args.quiet)
    rows = runner.run_all()
    if not runner.processes.is_main:  # under accelerate launch the main process reports
        return 0
    table, plot = write_summary(recipe.run.directory, rows, title=recipe.run.name)
    print(table)
    print(f"\nrun directory: {recipe.run.directory}\nplot: {plot}")
    return 0
