"""Every length reward on one task: the same rounds recipe once per reward, one table and one Pareto plot.

Each variant is the base recipe (default: the quickstart's) with its reward (and, where the reward
needs it, a partition or pair weighting) swapped in; problems, seeds, sampler, loss and training
settings stay the same. Each run is a separate ``prefopt rounds`` process, so runs are resumable
(rerunning this command continues unfinished runs and reuses finished ones) and isolated.

    python bench/rewards_compare.py                       # every variant, seed 0, then a 2nd seed for the top ones
    python bench/rewards_compare.py --variants correctness kimi --seeds 0

Writes ``bench/results/rewards_compare.json`` (every round's metrics of every run),
``bench/results/rewards_compare.md`` (the table) and ``docs/assets/rewards_pareto.png``.
Length parameters given in tokens by the papers (LASER's target, DLER's limit, TLTS's budgets) are
scaled to this task's generation limit: the papers' values assume 4k-16k token budgets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs" / "rewards_compare"

# name -> overrides of the base recipe (``section.key=value``, as ``prefopt rounds`` takes them)
VARIANTS: dict[str, list[str]] = {
    "correctness": ["reward.name=correctness"],
    "kimi": ["reward.name=kimi"],
    "laser": ["reward.name=laser", "reward.target_length=32"],
    "laser_d": ["reward.name=laser_d"],
    "laser_de": ["reward.name=laser_de"],
    "hapo": ["reward.name=hapo", "rounds.partition=epochs"],
    "dler": ["reward.name=dler", "reward.max_length=64"],
    "grpo_lambda": ["reward.name=grpo_lambda"],
    "tlts": ["reward.name=tlts", "reward.clock=round", "reward.period=1", "reward.initial=64", "reward.final=22"],
    "format_length": ["reward.name=format_length"],
    "drpo": ["reward.name=correctness", "pairs.weighting=drpo", "pairs.max_length=128"],
}


def run_variant(base: Path, name: str, seed: int, extra: list[str]) -> tuple[list[dict[str, Any]], float]:
    """Run (or resume) one variant; returns its rounds' metrics and the wall time of this call."""
    overrides = [*VARIANTS[name], *extra, f"run.name={name}-seed{seed}", f"run.output_root={RUNS}",
                 f"rounds.seed={seed}", f"train.seed={42 + seed}"]
    command = [sys.executable, "-m", "prefopt", "rounds", str(base), *overrides, "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"variant {name} (seed {seed}) failed:\n{done.stderr[-3000:]}")
    root = RUNS / f"{name}-seed{seed}"
    rounds = sorted(root.glob("round_*/metrics.json"))
    return [json.loads(p.read_text()) for p in rounds], time.perf_counter() - start


def final_accuracy(rows: list[dict[str, Any]]) -> float:
    """Accuracy after the last round (the reported evaluation set)."""
    return rows[-1]["accuracy"]


def table(results: list[dict[str, Any]]) -> str:
    """One Markdown row per (variant, seed): the last round against round 0."""
    header = ("| reward | seed | accuracy % [95% CI] | Δ vs round 0 (pts) [95% CI], p | mean len | Δ len | "
              "truncated % | pairs/round | minutes |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for result in results:
        rows = result["rounds"]
        last, first = rows[-1], rows[0]
        pairs = statistics.fmean(r["pairs"] for r in rows[1:])
        lines.append(
            f"| {result['variant']} | {result['seed']} | {100 * last['accuracy']:.1f} "
            f"[{100 * last['ci_low']:.1f}, {100 * last['ci_high']:.1f}] | "
            f"{100 * last['accuracy_diff_vs_round0']:+.1f} [{100 * last['diff_ci_low']:+.1f}, "
            f"{100 * last['diff_ci_high']:+.1f}], p={last['diff_p_value']:.2g} | {last['mean_length']:.1f} "
            f"(from {first['mean_length']:.1f}) | {100 * last['length_change_vs_round0']:+.0f}% | "
            f"{100 * last['truncation_rate']:.1f} | {pairs:.1f} | {result['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against mean length: a marker per reward at its last round, a line through its rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for k, result in enumerate(r for r in results if r["seed"] == results[0]["seed"]):
        rows = result["rounds"]
        xs, ys = [r["mean_length"] for r in rows], [100 * r["accuracy"] for r in rows]
        line, = ax.plot(xs, ys, "-", alpha=0.35, color=f"C{k % 10}")
        ax.plot(xs[-1:], ys[-1:], "o" if k < 10 else "s", color=line.get_color(), label=result["variant"])
    ax.set_xlabel("mean completion length (tokens)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("length rewards: accuracy vs length over rounds (marker: last round)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO / "recipes" / "quickstart.yaml")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--second-seed-within", type=float, default=5.0,
                        help="also run seed 1 for variants whose accuracy ends within this many points of the best")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides applied to every variant")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "rewards_compare.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "assets" / "rewards_pareto.png")
    args = parser.parse_args()

    results = []
    for seed in args.seeds:
        for name in args.variants:
            rows, seconds = run_variant(args.base, name, seed, args.overrides)
            results.append({"variant": name, "seed": seed, "rounds": rows, "seconds": seconds})
            print(f"{name} seed {seed}: accuracy {100 * final_accuracy(rows):.1f}%, "
                  f"mean length {rows[-1]['mean_length']:.1f} ({seconds / 60:.1f} min)", flush=True)
    if args.second_seed_within > 0 and 1 not in args.seeds:
        best = max(final_accuracy(r["rounds"]) for r in results)
        for result in list(results):
            if 100 * (best - final_accuracy(result["rounds"])) <= args.second_seed_within:
                rows, seconds = run_variant(args.base, result["variant"], 1, args.overrides)
                results.append({"variant": result["variant"], "seed": 1, "rounds": rows, "seconds": seconds})
    report = {"base": str(args.base.relative_to(REPO)), "overrides": args.overrides, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    text = table(results)
    args.out.with_suffix(".md").write_text(text + "\n")
    plot(results, args.plot)
    print(text)


if __name__ == "__main__":
    main()
