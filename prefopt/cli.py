"""The ``prefopt`` command (also ``python -m prefopt``).

Each command group is a module in ``prefopt/commands/`` exposing ``register(subparsers)``; adding
a command is one module plus one line in :data:`COMMANDS`. Configuration and data errors print a
one-paragraph message (no traceback) and exit with status 2 (recipe) or 1 (data); ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from prefopt import __version__
from prefopt.config import RecipeError
from prefopt.data import DataSourceError, DataValidationError
from prefopt.data.tokenize import TemplateMismatch

COMMANDS: tuple[str, ...] = (
    "prefopt.commands.train",
    "prefopt.commands.rounds",
    "prefopt.commands.data",
    "prefopt.commands.eval",
    "prefopt.commands.export",
    "prefopt.commands.annotate",
)

# exception type -> exit status; these are the user's to fix, so no traceback by default
USER_ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (RecipeError, 2),
    (DataValidationError, 1),
    (DataSourceError, 1),
    (TemplateMismatch, 1),
    (FileNotFoundError, 1),
    (FileExistsError, 1),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``prefopt`` parser with every command in :data:`COMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog="prefopt",
        description="Length-aware preference optimization of language models. "
        "Run 'prefopt COMMAND --help' for a command's options; docs/getting-started.md has a walkthrough.",
    )
    parser.add_argument("--version", action="version", version=f"prefopt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of configuration and data errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command and return its exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a nargs="*" positional at the first option: RECIPE --dry-run key=value
    options = [item for item in extra if item.startswith("-")]
    if options or (extra and not isinstance(getattr(args, "overrides", None), list)):
        parser.error(f"unrecognized arguments: {' '.join(options or extra)}")
    if extra:
        args.overrides += extra
    try:
        return int(args.func(args) or 0)
    except tuple(error for error, _ in USER_ERRORS) as err:
        if args.debug:
            raise
        status = next(code for error, code in USER_ERRORS if isinstance(err, error))
        print(f"prefopt {args.command}: error: {err}", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        print(f"prefopt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
