"""``prefopt`` subcommands: one module per command group, each exposing ``register(subparsers)``.

``register`` adds its parser(s) and sets ``func`` (``args -> exit status``) as the parser default.
The command list lives in :data:`prefopt.cli.COMMANDS`. Flags several commands share are added by
the helpers below, so they are spelled the same everywhere (``--quiet``, ``--trust-remote-code``).
A command module imports only the standard library and light constants at import time; torch,
transformers, datasets and scikit-learn are imported inside ``run_*``.
"""

from __future__ import annotations

import argparse


def add_recipe_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """The arguments every recipe command takes: ``RECIPE``, ``key=value`` overrides and ``--dry-run``."""
    parser.add_argument("recipe", help="YAML recipe file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"override recipe values, e.g. {example}")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the recipe and print it with every default filled in; do not run it")


def add_quiet_argument(parser: argparse.ArgumentParser, what: str = "no progress bars") -> None:
    """``--quiet`` (every command that shows progress); ``--no-progress`` is kept as a deprecated alias."""
    parser.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help=f"{what} "
                        "(--no-progress: deprecated spelling)")


def add_trust_remote_code_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-remote-code`` (every command that loads a model or tokenizer by name; off by default)."""
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow model and tokenizer code from the Hub (off by default: it runs arbitrary code)")
