"""``prefopt export RUN_DIR@ROUND OUT_DIR``: a round's policy as a plain Hugging Face model directory."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` command to the ``prefopt`` parser."""
    parser = subparsers.add_parser(
        "export",
        help="write the merged policy of a round of a rounds run as a plain Hugging Face model directory",
        description="Rebuild the policy after round ROUND of the rounds run in RUN_DIR (the initial model with "
        "every round's adapters merged) and save it to OUT_DIR: model.safetensors, config.json, "
        "generation_config.json, the tokenizer and its chat template. AutoModelForCausalLM.from_pretrained(OUT_DIR) "
        "loads it without prefopt, e.g. for lighteval or lm-evaluation-harness (docs/evaluate.md).",
        epilog="example: prefopt export runs/quickstart@3 exported/quickstart-r3",
    )
    parser.add_argument("round", metavar="RUN_DIR@ROUND", help="e.g. runs/quickstart@3 (round 0: the initial model)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="new (or empty) output directory")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                        help="weights dtype (default: the run's model.dtype)")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export the round and print where it went."""
    from prefopt.config import RecipeError
    from prefopt.online.round_policy import export_round, parse_round

    if parse_round(args.round) is None:
        raise RecipeError(f"{args.round!r} is not of the form RUN_DIR@ROUND (e.g. runs/quickstart@3)")
    out = export_round(args.round, args.out_dir, dtype=args.dtype)
    print(f"exported {args.round} to {out} (load it with AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
