"""``prefopt`` subcommands: one module per command group, each exposing ``register(subparsers)``.

``register`` adds its parser(s) and sets ``func`` (``args -> exit status``) as the parser default.
The command list lives in :data:`prefopt.cli.COMMANDS`.
"""

from __future__ import annotations

import argparse


def add_recipe_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """The arguments every recipe command takes: ``RECIPE``, ``key=value`` overrides and ``--dry-run``."""
    parser.add_argument("recipe", help="YAML recipe file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"override recipe values, e.g. {example}")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the recipe and print it with every default filled in; do not run it")
