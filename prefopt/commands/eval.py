"""``prefopt eval ...``: evaluation commands (``lc-winrate``: the length-controlled win rate)."""

from __future__ import annotations

import argparse
import json



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command group to the ``prefopt`` parser."""
    group = subparsers.add_parser("eval", help="evaluate models and annotations")
    commands = group.add_subparsers(dest="eval_command", required=True)
    lc = commands.add_parser(
        "lc-winrate",
        help="raw and length-controlled (LC-AlpacaEval) win rate from pairwise annotations",
        description="Fit AlpacaEval's length-controlled GLM to pairwise judgments and print the raw and "
        "length-controlled win rates of the model (output_2) against the baseline (output_1).",
    )
    lc.add_argument(
        "annotations", help="AlpacaEval annotations.json (a JSON list) or JSON Lines with the same fields"
    )
    lc.add_argument("--model", help="generator_2 to evaluate (required when the file holds several models)")
    lc.add_argument("--baseline", help="generator_1 to compare with (required when there are several)")
    lc.add_argument(
        "--instruction-difficulty",
        metavar="CSV",
        help="CSV with columns instruction,instruction_difficulty: adds AlpacaEval's difficulty term",
    )
    lc.add_argument("--json", action="store_true", help="print the result as JSON")
    lc.set_defaults(func=run_lc_winrate)


def run_lc_winrate(args: argparse.Namespace) -> int:
    """Compute and print the win rates for ``prefopt eval lc-winrate``."""
    from prefopt.evaluate.lc_winrate import (  # imported here: scikit-learn is slow to import
        length_controlled_winrate,
        read_annotations,
        read_instruction_difficulty,
    )

    difficulty = (
        read_instruction_difficulty(args.instruction_difficulty) if args.instruction_difficulty else None
    )
    result = length_controlled_winrate(
        read_annotations(args.annotations),
        model=args.model,
        baseline=args.baseline,
        instruction_difficulty=difficulty,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"model {result['model']} vs baseline {result['baseline']}: {result['n']} annotations", end="")
    print(f" ({result['n_dropped']} without a preference dropped)" if result["n_dropped"] else "")
    print(f"win rate                    {result['win_rate']:6.2f} ± {result['standard_error']:.2f} (SEM)")
    print(
        f"length-controlled win rate  {result['length_controlled_winrate']:6.2f}"
        f" ± {result['lc_standard_error']:.2f} (SEM of per-row predictions),"
        f" ± {result['lc_delta_method_se']:.2f} (delta method)"
    )
    coefficients = ", ".join(f"{name}={value:+.3f}" for name, value in result["coefficients"].items())
    chosen_c = "" if result["C"] is None else f" (L1 C={result['C']:.3g})"
    print(f"GLM coefficients: {coefficients}{chosen_c}")
    return 0
