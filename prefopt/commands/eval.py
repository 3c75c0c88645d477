"""``prefopt eval ...``: evaluation commands (``accuracy``: accuracy and length of a model on verifiable
problems; ``lc-winrate``: the length-controlled win rate)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from prefopt.commands import add_quiet_argument, add_trust_remote_code_argument

FORMAT_CHOICES = ("auto", "gsm8k", "math500")
"""``--format`` of ``eval accuracy``: ``auto`` and :data:`prefopt.online.model_eval.PROBLEM_FORMATS`
(not imported here, so ``--help`` stays fast)."""


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
    _register_accuracy(commands)


def _register_accuracy(commands: argparse._SubParsersAction) -> None:
    acc = commands.add_parser(
        "accuracy",
        help="accuracy (95%% Wilson CI) and completion length of a model on verifiable problems; --vs: paired",
        description="Answer every problem greedily (or sample --n answers: mean@n and pass@k), verify the answers "
        "and print accuracy with its 95%% Wilson interval, mean/median length and truncation rate. MODEL is a "
        "local directory, a built-in name, a Hub id or a round of a rounds run (runs/quickstart@3). PROBLEMS is a "
        "jsonl/json/parquet file or a Hub dataset in the GSM8K format (question/answer; also prefopt's arithmetic "
        "files) or the MATH-500 format (problem/solution/unique_id). With --vs, MODEL2 answers the same problems "
        "and the paired difference MODEL - MODEL2 with McNemar's exact test is printed. Every completion is "
        "written to --out. See docs/evaluate.md.",
        epilog="example: prefopt eval accuracy runs/quickstart@3 data/arithmetic/test_oot.jsonl "
        "--vs runs/quickstart@0 --limit 100",
    )
    acc.add_argument("model", help="RUN_DIR@ROUND, built-in name, local directory or Hub id")
    acc.add_argument("problems", help="problems file (jsonl/json/parquet) or Hub dataset name")
    acc.add_argument("--vs", metavar="MODEL2", help="a second model: paired difference and McNemar's test")
    acc.add_argument("--format", default="auto", choices=FORMAT_CHOICES,
                     help="problem fields: gsm8k (question/answer), math500 (problem/solution); default: detect")
    acc.add_argument("--split", default="test", help="split of a Hub dataset (default: test)")
    acc.add_argument("--config-name", help="configuration of a Hub dataset (e.g. main for openai/gsm8k)")
    acc.add_argument("--question-field", help="override the format's question field")
    acc.add_argument("--answer-field", help="override the format's answer field")
    acc.add_argument("--id-field", help="override the format's id field ('none': number the rows)")
    acc.add_argument("--limit", type=int, help="evaluate the first N problems")
    acc.add_argument("--instruction", help="appended to every question (default: the run's for RUN@ROUND, "
                     "else the format's)")
    acc.add_argument("--n", type=int, default=1, help="samples per problem: 1 = greedy (default); > 1 samples "
                     "with --temperature and reports mean@n and pass@k")
    acc.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --n > 1)")
    acc.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (with --n > 1)")
    acc.add_argument("--seed", type=int, default=0, help="sampling seed (with --n > 1)")
    acc.add_argument("--max-new-tokens", type=int, default=512, help="default 512")
    acc.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (default 16)")
    acc.add_argument("--verifier", default="math", help="answer checker: math (default), exact, or a registered one")
    acc.add_argument("--timeout", type=float, default=5.0, help="verifier seconds per answer (default 5)")
    acc.add_argument("--truncated", default="incorrect", choices=("incorrect", "verify"),
                     help="an answer cut at --max-new-tokens: incorrect (default, as in rounds) or verified as is")
    acc.add_argument("--engine", default="hf", choices=("auto", "hf", "vllm"), help="default: hf")
    acc.add_argument("--dtype", choices=("float32", "bfloat16", "float16", "auto"),
                     help="weights dtype (default: the run's model.dtype for RUN@ROUND, else float32)")
    add_trust_remote_code_argument(acc)
    acc.add_argument("--out", help="write the reports and every completion here (JSON; default: "
                     "eval-<model>-<problems>.json)")
    add_quiet_argument(acc)
    acc.add_argument("--json", action="store_true", help="print the summary as JSON")
    acc.set_defaults(func=run_accuracy)


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text.strip("/")).strip("_")[-60:]


def _describe(label: str, summary: dict) -> str:
    line = (f"{label}: accuracy {100 * summary['accuracy']:.1f}% [95% CI {100 * summary['ci_low']:.1f}, "
            f"{100 * summary['ci_high']:.1f}] on {summary['n']} problems; mean length {summary['mean_length']:.1f} "
            f"tokens (median {summary['median_length']:.0f}); truncated {100 * summary['truncation_rate']:.1f}%")
    if summary["samples"] > 1:
        passes = ", ".join(f"pass@{k} {100 * v:.1f}%" for k, v in summary["pass_at_k"].items())
        line += f"\n  {summary['samples']} samples each (accuracy: sample 0): mean@{summary['samples']} " \
                f"{100 * summary['mean_at_n']:.1f}%, {passes}"
    return line


def run_accuracy(args: argparse.Namespace) -> int:
    """Evaluate MODEL (and --vs MODEL2) on PROBLEMS; print the summary, write every completion."""
    from prefopt.config import RecipeError
    from prefopt.evaluate.accuracy import paired_difference
    from prefopt.online.model_eval import evaluate_model, load_any_model, read_problems
    from prefopt.io import write_json
    from prefopt.online.verifier import available_verifiers, get_verifier
    from prefopt.sampling import SamplingParams

    if args.verifier not in available_verifiers():
        raise RecipeError(f"--verifier: unknown verifier {args.verifier!r}; registered: {', '.join(available_verifiers())}")
    for flag, value in (("--n", args.n), ("--max-new-tokens", args.max_new_tokens), ("--batch-size", args.batch_size),
                        ("--limit", 1 if args.limit is None else args.limit)):
        if value < 1:
            raise RecipeError(f"{flag} must be at least 1, got {value}")
    try:
        params = SamplingParams(n=args.n, greedy=args.n == 1, temperature=args.temperature, top_p=args.top_p,
                                max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size)
    except ValueError as err:
        raise RecipeError(f"--temperature / --top-p: {err}") from None
    fields = {k: v for k, v in (("question_field", args.question_field), ("answer_field", args.answer_field)) if v}
    if args.id_field:
        fields["id_field"] = None if args.id_field.lower() == "none" else args.id_field
    problems, fmt = read_problems(args.problems, args.format, split=args.split, config_name=args.config_name,
                                  limit=args.limit, fields=fields)
    results: dict[str, dict] = {}
    reports = {}
    with get_verifier(args.verifier, timeout=args.timeout) as verifier:
        for role, spec in (("model", args.model), ("vs", args.vs)):
            if spec is None:
                continue
            loaded = load_any_model(spec, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
            instruction = args.instruction if args.instruction is not None else (loaded.instruction or fmt.instruction)
            reports[role] = evaluate_model(loaded, problems, instruction, verifier, params, engine=args.engine,
                                           progress=not args.quiet, truncated=args.truncated,
                                           trust_remote_code=args.trust_remote_code)
            results[role] = {"model": spec, "instruction": instruction, **reports[role].to_dict()}
            del loaded
    output: dict = {"problems": args.problems, "n_problems": len(problems), "settings": {
        "n": args.n, "greedy": params.greedy, "temperature": args.temperature, "top_p": args.top_p,
        "seed": args.seed, "max_new_tokens": args.max_new_tokens, "verifier": args.verifier,
        "truncated": args.truncated}, **results}
    if "vs" in reports:
        diff = paired_difference(reports["vs"].outcomes, reports["model"].outcomes)
        output["paired_difference"] = {"model_minus_vs": diff.diff, "ci_low": diff.ci_low, "ci_high": diff.ci_high,
                                       "mcnemar_p_value": diff.p_value, "model_only": diff.b_only,
                                       "vs_only": diff.a_only, "n": diff.n}
    out = Path(args.out or f"eval-{_slug(args.model)}-{_slug(Path(args.problems).stem)}.json")
    write_json(out, output)
    if args.json:
        print(json.dumps({k: v for k, v in output.items() if k not in results} |
                         {role: {"model": r["model"], **reports[role].summary()} for role, r in results.items()},
                         indent=2))
        return 0
    for role, report in reports.items():
        print(_describe(results[role]["model"], report.summary()))
    if "paired_difference" in output:
        d = output["paired_difference"]
        print(f"paired difference {args.model} - {args.vs}: {100 * d['model_minus_vs']:+.1f} pts "
              f"[95% CI {100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}], McNemar p={d['mcnemar_p_value']:.3g} "
              f"(right only under {args.model}: {d['model_only']}, only under {args.vs}: {d['vs_only']})")
    print(f"completions and reports: {out}")
    return 0
