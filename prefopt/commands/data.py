"""``prefopt data ...``: preference-data commands (``inspect``: counts, lengths, problems; ``debias``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefopt.commands import add_trust_remote_code_argument
from prefopt.data.debias import STRATEGIES
from prefopt.data.formats import FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group to the ``prefopt`` parser."""
    group = subparsers.add_parser("data", help="inspect and prepare preference data")
    commands = group.add_subparsers(dest="data_command", required=True)
    inspect = commands.add_parser(
        "inspect",
        help="counts, length statistics and problems of a preference dataset",
        description="Validate every row of a preference dataset and print row counts, character (and, with "
        "--tokenizer, token) length statistics of prompt/chosen/rejected, the fraction of pairs whose chosen "
        "response is longer, and every problem found (file, row, field). Exits with status 1 if there are problems.",
    )
    inspect.add_argument("path", help="jsonl(.gz)/json/parquet file, saved dataset directory, or Hub dataset name")
    inspect.add_argument("--tokenizer", metavar="NAME_OR_PATH",
                         help="also report token lengths (a built-in model name, a local path or a Hub id)")
    inspect.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="pair format (default: detect)")
    inspect.add_argument("--split", help="split of a dataset directory or Hub dataset")
    inspect.add_argument("--max-problems", type=int, default=20, help="problems to list (default 20)")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    add_trust_remote_code_argument(inspect)
    inspect.set_defaults(func=run_inspect)
    debias = commands.add_parser(
        "debias",
        help="measure and reduce the length bias of preference pairs",
        description="Subsample pairs to remove the chosen-is-longer bias and write them with a before/after "
        "report (<out stem>.report.json). See docs/debias.md.",
    )
    debias.add_argument("path", help="jsonl(.gz)/json/parquet file, saved dataset directory, or Hub dataset name")
    debias.add_argument("--out", required=True, help="output pairs, .jsonl or .parquet (written atomically)")
    debias.add_argument("--strategy", default="balance", choices=STRATEGIES, help="default: balance")
    debias.add_argument("--bins", type=int, default=10, help="|length difference| quantile bins (balance)")
    debias.add_argument("--max-ratio", type=float, default=2.0, help="max(len)/min(len) cap (ratio_cap)")
    debias.add_argument("--tokenizer", metavar="NAME_OR_PATH", help="measure tokens instead of characters")
    debias.add_argument("--seed", type=int, default=0, help="subsampling and label-orientation seed")
    debias.add_argument("--drop-invalid", action="store_true", help="drop invalid rows instead of failing")
    debias.add_argument("--json", action="store_true", help="print the report as JSON")
    add_trust_remote_code_argument(debias)
    debias.set_defaults(func=run_debias)


def run_inspect(args: argparse.Namespace) -> int:
    """Print the ``prefopt data inspect`` report; status 1 if any problem was found."""
    from prefopt.data.inspect import format_report, inspect_pairs  # imported here: --help stays fast

    tokenizer = _tokenizer(args)
    result = inspect_pairs(args.path, tokenizer=tokenizer, tokenizer_name=args.tokenizer, format=args.format,
                           split=args.split, max_problems=args.max_problems)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_report(result))
    return 1 if result["problems_total"] else 0


def run_debias(args: argparse.Namespace) -> int:
    """Debias the pairs, write them and their report, and print the report."""
    from prefopt.data.debias import debias_file, format_debias_report

    tokenizer = _tokenizer(args)
    report = debias_file(args.path, args.out, args.strategy, bins=args.bins, max_ratio=args.max_ratio,
                         tokenizer=tokenizer, seed=args.seed, drop_invalid=args.drop_invalid)
    print(json.dumps(report, indent=2) if args.json else format_debias_report(report))
    return 0


def _tokenizer(args: argparse.Namespace) -> Any:
    """The ``--tokenizer`` to measure tokens with, or None (characters)."""
    if not args.tokenizer:
        return None
    from prefopt.models import load_tokenizer

    return load_tokenizer(args.tokenizer, trust_remote_code=args.trust_remote_code)
