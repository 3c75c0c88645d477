"""The ``prefopt`` command (also ``python -m prefopt``).

Each command group is a module in ``prefopt/commands/`` exposing ``register(subparsers)``; adding
a command is one module plus one line in :data:`COMMANDS`. A user error
(:class:`prefopt.errors.UserError`: a recipe key, a data row, a file; or a missing or existing file) prints one
message naming it, without a traceback, and exits with its status (2 for a recipe, 1 otherwise);
``--debug``, anywhere on the command line, shows the traceback instead.

Start-up imports only the standard library and the command modules, which import torch,
transformers and datasets inside their ``run_*`` functions, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from prefopt import __version__
from prefopt.errors import UserError

COMMANDS: tuple[str, ...] = (
    "prefopt.commands.train",
    "prefopt.commands.rounds",
    "prefopt.commands.data",
    "prefopt.commands.eval",
    "prefopt.commands.export",
    "prefopt.commands.annotate",
)

DEBUG_FLAG = "--debug"


def build_parser() -> argparse.ArgumentParser:
    """The ``prefopt`` parser with every command in :data:`COMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog="prefopt",
        description="Length-aware preference optimization of language models. "
        "Run 'prefopt COMMAND --help' for a command's options; docs/getting-started.md has a walkthrough.",
    )
    parser.add_argument("--version", action="version", version=f"prefopt {__version__}")
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help="show the full traceback of user errors (allowed anywhere on the line)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv  # accepted after the command too: prefopt train r.yaml --debug
    parser = build_parser()
    args, extra = parser.parse_known_args([item for item in argv if item != DEBUG_FLAG])
    # argparse stops filling a nargs="*" positional at the first option: RECIPE --dry-run key=value
    options = [item for item in extra if item.startswith("-")]
    if options or (extra and not isinstance(getattr(args, "overrides", None), list)):
        parser.error(f"unrecognized arguments: {' '.join(options or extra)}")
    if extra:
        args.overrides += extra
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, FileExistsError) as err:
        if debug:
            raise
        print(f"prefopt {args.command}: error: {err}", file=sys.stderr)
        return err.exit_status if isinstance(err, UserError) else 1
    except KeyboardInterrupt:
        print(f"prefopt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
