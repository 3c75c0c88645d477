"""``prefopt annotate {cdr,treg}``: label pairs with CDR density ratios, add T-REG token rewards."""

from __future__ import annotations

import argparse
from pathlib import Path

from prefopt.commands import add_quiet_argument, add_trust_remote_code_argument
from prefopt.data.formats import FORMATS


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, help="output pairs: .jsonl (default) or .parquet, written atomically"
    )
    parser.add_argument(
        "--format", default="auto", choices=("auto", *FORMATS), help="format of --pairs (default: auto)"
    )
    parser.add_argument("--limit", type=int, help="use only the first N rows of the input")
    parser.add_argument(
        "--drop-invalid",
        action="store_true",
        help="drop invalid --pairs rows (e.g. an empty completion) instead of failing",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    parser.add_argument(
        "--dtype", default="float32", help="model dtype: float32 (default), bfloat16, float16, auto"
    )
    parser.add_argument(
        "--device", default="auto", help="where the models run: auto (default: the GPU when there is one), cpu, cuda:1, ..."
    )
    add_trust_remote_code_argument(parser)
    add_quiet_argument(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``annotate`` command group to the ``prefopt`` parser."""
    group = subparsers.add_parser(
        "annotate", help="annotate preference data (CDR labels, T-REG token rewards)"
    )
    commands = group.add_subparsers(dest="annotate_command", required=True)

    cdr = commands.add_parser(
        "cdr",
        help="CDR density-ratio rewards log p_strong(y|c,x) - log p_weak(y|c,x): build or relabel pairs",
        description="Score responses with a strong and a weak model (each with its own tokenizer and chat "
        "template). With --candidates, make a best-vs-worst pair per prompt; with --pairs, report agreement "
        "with the existing labels and keep, flip or drop the pairs CDR disagrees with. Scores are cached, so "
        "an interrupted run resumes. See docs/annotate.md.",
        epilog="example: prefopt annotate cdr --strong smollm2-135m-instruct --weak gemma3-270m "
        "--pairs pairs.jsonl --criteria safety --out relabelled.jsonl",
    )
    source = cdr.add_mutually_exclusive_group(required=True)
    source.add_argument("--candidates", help="jsonl/json/parquet rows {prompt, candidates: [...], id?}")
    source.add_argument("--pairs", help="preference pairs in any format 'prefopt data' reads")
    cdr.add_argument("--strong", required=True, help="strong model: built-in name, local path or Hub id")
    cdr.add_argument("--weak", required=True, help="weak model: built-in name, local path or Hub id")
    cdr.add_argument(
        "--criteria", help="customization: a preset (safety, reasoning, chat), a text or a YAML file"
    )
    cdr.add_argument(
        "--normalize",
        default="mean",
        choices=("mean", "sum"),
        help="mean: divide by the strong model's response token count (default); sum: raw log ratio",
    )
    cdr.add_argument(
        "--min-margin",
        type=float,
        default=0.0,
        help="--candidates: skip prompts with a smaller best-worst gap",
    )
    cdr.add_argument(
        "--on-disagree",
        default="keep",
        choices=("keep", "flip", "drop"),
        help="--pairs: what to do with pairs CDR ranks the other way (default: keep)",
    )
    cdr.add_argument("--cache", help="score cache (default: OUT with suffix .scores.jsonl)")
    _common(cdr)
    cdr.set_defaults(func=run_cdr)

    treg = commands.add_parser(
        "treg",
        help="T-REG token rewards sigma(log p(y_t|x_better) - log p(y_t|x_worse)) - 0.5 stored with the pairs",
        description="Compute T-REG contrastive-prompt token rewards under the reference model, aligned to the "
        "policy tokenizer's completion tokens, and write the pairs with chosen_token_rewards / "
        "rejected_token_rewards for the 'treg' loss. See docs/annotate.md.",
        epilog="example: prefopt annotate treg --model smollm2-135m-instruct --pairs pairs.jsonl --out treg.jsonl",
    )
    treg.add_argument("--pairs", required=True, help="preference pairs in any format 'prefopt data' reads")
    treg.add_argument(
        "--model", required=True, help="reference model (the initial policy): built-in name, path or Hub id"
    )
    treg.add_argument("--tokenizer", help="the policy's tokenizer, if not the model's own")
    treg.add_argument(
        "--better-template",
        help="x_better template with {prompt} (default: ask for a helpful, correct, concise answer)",
    )
    treg.add_argument(
        "--worse-template",
        help="x_worse template with {prompt} (default: ask for an unhelpful, incorrect, verbose answer)",
    )
    _common(treg)
    treg.set_defaults(func=run_treg)


def _pairs(args: argparse.Namespace):
    from prefopt.data import load_pairs

    pairs = load_pairs(args.pairs, format=args.format, drop_invalid=args.drop_invalid)
    pairs = pairs.select(range(min(args.limit, len(pairs)))) if args.limit else pairs
    return pairs.remove_columns([c for c in ("source_file", "source_row") if c in pairs.column_names])


def _scorer(name: str, args: argparse.Namespace):
    from prefopt.annotate import Scorer
    from prefopt.models import load_model, load_tokenizer

    model = load_model(name, dtype=args.dtype, trust_remote_code=args.trust_remote_code, device=args.device)
    return Scorer.create(model, load_tokenizer(name, trust_remote_code=args.trust_remote_code))


def _write(rows: list[dict], report: dict, out: str) -> None:
    from prefopt.io import report_path, write_json, write_rows

    path = write_rows(out, rows)
    write_json(report_path(path), report, indent=2)
    print(f"wrote {len(rows)} pairs to {path}; report in {report_path(path)}")


def run_cdr(args: argparse.Namespace) -> int:
    """Build pairs from candidates or relabel pairs with CDR rewards; write pairs and a report."""
    from prefopt.annotate import (
        CDRAnnotator,
        ScoreCache,
        load_criteria,
        pairs_from_candidates,
        read_candidates,
        relabel_pairs,
    )

    criteria = load_criteria(args.criteria) if args.criteria else None
    rows = read_candidates(args.candidates)[: args.limit] if args.candidates else list(_pairs(args))
    cache = ScoreCache(args.cache or Path(args.out).with_suffix(".scores.jsonl"))
    annotator = CDRAnnotator(
        _scorer(args.strong, args),
        _scorer(args.weak, args),
        criteria,
        args.normalize,
        args.batch_size,
        cache,
        progress=not args.quiet,
    )
    if args.candidates:
        pairs, report = pairs_from_candidates(rows, annotator, min_margin=args.min_margin)
        print(
            f"{report['n_pairs']} pairs from {report['n_prompts']} prompts ({report['n_skipped']} below the margin)"
        )
    else:
        pairs, relabel = relabel_pairs(rows, annotator, on_disagree=args.on_disagree)
        report = relabel.to_dict()
        low, high = relabel.ci95
        print(
            f"CDR agrees with the labels on {relabel.n_agree}/{relabel.n_pairs} pairs: "
            f"{relabel.agreement:.3f} (95% CI {low:.3f}-{high:.3f}); reversed roles: {relabel.agreement_reversed:.3f}"
        )
    cache.finalize()
    report |= {"strong": args.strong, "weak": args.weak, "criteria": args.criteria}
    _write(pairs, report, args.out)
    return 0


def run_treg(args: argparse.Namespace) -> int:
    """Add T-REG token rewards to pairs and write them."""
    from prefopt.annotate import TregTemplates, annotate_token_rewards
    from prefopt.models import load_model, load_tokenizer

    defaults = TregTemplates()
    templates = TregTemplates(args.better_template or defaults.better, args.worse_template or defaults.worse)
    pairs = _pairs(args)
    model = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code, device=args.device)
    tokenizer = load_tokenizer(args.tokenizer or args.model, trust_remote_code=args.trust_remote_code)
    annotated = annotate_token_rewards(
        pairs,
        model,
        tokenizer,
        templates=templates,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    report = {
        "model": args.model,
        "tokenizer": args.tokenizer or args.model,
        "n_pairs": len(annotated),
        "better_template": templates.better,
        "worse_template": templates.worse,
    }
    _write(list(annotated), report, args.out)
    return 0
