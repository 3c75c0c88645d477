"""Every length reward on one task: the same rounds recipe once per reward, one table and one Pareto plot.

Each variant is the base recipe (default: the quickstart's) with its reward (or DRPO's pair
weighting) swapped in; problems, seeds, sampler, loss, training and evaluation stay the same. Pairs
are the highest- against the lowest-reward rollout of each prompt (``best_vs_worst``), so the
reward alone decides what is preferred (ties: the shorter one is chosen). All
variants train on the same pool of problems with ``rounds.partition: epochs``, so problems recur
across rounds and HAPO's per-problem history is used (with ``disjoint`` no problem recurs and HAPO
is plain correctness; the recipe check refuses it). Each run is its own ``prefopt rounds``
process, so an interrupted benchmark resumes: finished runs are read back, unfinished ones
continue where they stopped.

    python bench/rewards_compare.py                                  # every variant, seed 0; seed 1 for the top ones
    python bench/rewards_compare.py --variants correctness kimi --seeds 0 eval.sets.test.limit=50

Writes ``bench/results/rewards_compare.json`` (every round's metrics of every run, rewritten
after each run), ``bench/results/rewards_compare.md`` (the table) and
``docs/assets/rewards_pareto.png``. Length parameters the papers give in tokens (LASER's target and
monitor thresholds, DLER's limit, TLTS's budgets) are scaled to this task's 128-token generation
limit by the ratio of the papers' own limits (see :data:`VARIANTS`); the other hyperparameters are
the papers' defaults. Nothing here was tuned on the test sets.
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
sys.path.insert(0, str(REPO))

from prefopt.io import write_json  # noqa: E402  (the checkout's package, also without an install)

# name -> overrides of the base recipe (``section.key=value`` as ``prefopt rounds`` takes them; the reward
# section is replaced whole, so no hyperparameter of the base recipe's reward carries over)
VARIANTS: dict[str, list[str]] = {
    "correctness": ["reward={name: correctness}"],
    "kimi": ["reward={name: kimi}"],
    # LASER's L_T = 4096 of a 16384-token limit -> 32 of 128; LASER-D's monitor grid 4096..16384 step 1024 -> 32..128 step 8
    "laser": ["reward={name: laser, target_length: 32}"],
    "laser_d": ["reward={name: laser_d, threshold_lower: 32, threshold_upper: 128, threshold_interval: 8}"],
    "laser_de": ["reward={name: laser_de, threshold_lower: 32, threshold_upper: 128, threshold_interval: 8}"],
    "hapo": ["reward={name: hapo}"],
    # DLER truncates at 4000 of an 8192-token limit -> 64 of 128
    "dler": ["reward={name: dler, max_length: 64}"],
    "grpo_lambda": ["reward={name: grpo_lambda}"],
    # TLTS: budget 256 -> 87 (of a 1024-token limit) -> 32 -> 11, decaying once per round
    "tlts": ["reward={name: tlts, clock: round, period: 1, initial: 32, final: 11, gamma: 0.6}"],
    "format_length": ["reward={name: format_length, max_length: 128}"],
    "drpo": ["reward={name: correctness}", "pairs.weighting=drpo", "pairs.max_length=128"],
}
# Every variant: pairs ranked by the reward itself (the quickstart's correct_short_vs_incorrect would pick
# the shortest correct answer whatever the reward says), problems revisited across rounds.
COMMON = ["pairs={strategy: best_vs_worst}", "rounds.partition=epochs", "run.output_root=" + str(RUNS)]
POOL_SIZE = 64  # default training pool: the quickstart's 3 rounds x 32 prompts revisit half of it
STEP_SECONDS = ("sampling_seconds", "verify_seconds", "training_seconds", "eval_seconds")


def training_pool(size: int) -> Path:
    """The first ``size`` problems of data/arithmetic/train.jsonl, written once for every variant."""
    path = RUNS / f"train_pool_{size}.jsonl"
    if not path.is_file():
        lines = (REPO / "data" / "arithmetic" / "train.jsonl").read_text().splitlines()[:size]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return path


def run_variant(base: Path, name: str, seed: int, extra: list[str], pool: Path) -> dict[str, Any]:
    """Run (or resume) one variant; returns its rounds' metrics and the wall time of this call."""
    overrides = [*COMMON, *VARIANTS[name], f"problems.train={pool}", *extra, f"run.name={name}-seed{seed}",
                 f"rounds.seed={seed}", f"train.seed={42 + seed}"]
    command = [sys.executable, "-m", "prefopt", "rounds", str(base), *overrides, "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"variant {name} (seed {seed}) failed:\n{done.stderr[-3000:]}")
    result = read_variant(name, seed)
    assert result is not None, f"{name}-seed{seed}: prefopt rounds exited 0 without metrics"
    return {**result, "overrides": overrides}


def read_variant(name: str, seed: int) -> dict[str, Any] | None:
    """A finished run's rounds read back from its directory (``None`` if it has not finished every round of its
    recipe); ``seconds`` sums the rounds' own step timings (sampling, verification, training, evaluation), so a
    resumed run counts each step once."""
    root = RUNS / f"{name}-seed{seed}"
    if not (root / "manifest.json").is_file():
        return None
    count = json.loads((root / "manifest.json").read_text())["recipe"]["rounds"]["count"]
    rounds = [json.loads(p.read_text()) for p in sorted(root.glob("round_*/metrics.json"))]
    if len(rounds) < count + 1:
        return None
    seconds = sum(r.get(key, 0.0) for r in rounds for key in STEP_SECONDS)
    return {"variant": name, "seed": seed, "rounds": rounds, "seconds": seconds}


def final_accuracy(result: dict[str, Any], eval_set: str) -> float:
    """Accuracy on ``eval_set`` after the last round."""
    return result["rounds"][-1]["sets"][eval_set]["accuracy"]


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: per evaluation set, one row per (variant, seed) — the last round against round 0 — and, for a
    variant run with several seeds, a row of their means (the range of the accuracies in brackets)."""
    sets = list(results[0]["rounds"][0]["sets"])
    order = list(VARIANTS)
    results = sorted(results, key=lambda r: (order.index(r["variant"]), r["seed"]))
    header = ("| reward | seed | accuracy % [95% CI] | Δ vs round 0 (pts) [95% CI], p | mean len (round 0) | Δ len | "
              "truncated % | pairs/round | minutes |")
    lines = []
    for name in sets:
        lines += [f"\n**{name}**\n", header, "|" + "---|" * (header.count("|") - 1)]
        for result in results:
            rows = result["rounds"]
            last, first = rows[-1]["sets"][name], rows[0]["sets"][name]
            lines.append(
                f"| {result['variant']} | {result['seed']} | {100 * last['accuracy']:.1f} "
                f"[{100 * last['ci_low']:.1f}, {100 * last['ci_high']:.1f}] | "
                f"{100 * last['accuracy_diff_vs_round0']:+.1f} [{100 * last['diff_ci_low']:+.1f}, "
                f"{100 * last['diff_ci_high']:+.1f}], p={last['diff_p_value']:.2g} | {last['mean_length']:.1f} "
                f"({first['mean_length']:.1f}) | {100 * last['length_change_vs_round0']:+.0f}% | "
                f"{100 * last['truncation_rate']:.1f} | {pairs_per_round(result):.1f} | {result['seconds'] / 60:.1f} |"
            )
            seeds = [r for r in results if r["variant"] == result["variant"]]
            if len(seeds) > 1 and result is seeds[-1]:
                lines.append(mean_row(seeds, name))
    return "\n".join(lines).strip()


def pairs_per_round(result: dict[str, Any]) -> float:
    return statistics.fmean(r["pairs"] for r in result["rounds"][1:])


def mean_row(seeds: list[dict[str, Any]], name: str) -> str:
    """The means over one variant's seeds on evaluation set ``name`` (no interval: the seeds share the problems)."""
    last = [r["rounds"][-1]["sets"][name] for r in seeds]
    accuracies = [100 * m["accuracy"] for m in last]

    def mean(key: str, scale: float = 1.0) -> float:
        return statistics.fmean(scale * m[key] for m in last)

    return (f"| **{seeds[0]['variant']}** | **mean of {len(seeds)}** | **{statistics.fmean(accuracies):.1f}** "
            f"({min(accuracies):.0f}–{max(accuracies):.0f}) | **{mean('accuracy_diff_vs_round0', 100):+.1f}** | "
            f"**{mean('mean_length'):.1f}** ({seeds[0]['rounds'][0]['sets'][name]['mean_length']:.1f}) | "
            f"**{mean('length_change_vs_round0', 100):+.0f}%** | {mean('truncation_rate', 100):.1f} | "
            f"{statistics.fmean(pairs_per_round(r) for r in seeds):.1f} | "
            f"{statistics.fmean(r['seconds'] for r in seeds) / 60:.1f} |")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against mean length per evaluation set: a line per reward through its rounds, a marker at the last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first_seed = [r for r in results if r["seed"] == results[0]["seed"]]
    sets = list(results[0]["rounds"][0]["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 5), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], sets):
        for k, result in enumerate(first_seed):
            xs = [r["sets"][name]["mean_length"] for r in result["rounds"]]
            ys = [100 * r["sets"][name]["accuracy"] for r in result["rounds"]]
            color, marker = f"C{k % 10}", "os"[k // 10]
            ax.plot(xs, ys, "-", alpha=0.35, color=color)
            ax.plot(xs[-1:], ys[-1:], marker, color=color, label=result["variant"])
            for other in (r for r in results if r["variant"] == result["variant"] and r is not result):
                last = other["rounds"][-1]["sets"][name]
                ax.plot([last["mean_length"]], [100 * last["accuracy"]], marker, color=color, fillstyle="none")
        ax.set_xlabel("mean completion length (tokens)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{name}: over rounds (marker: last round; hollow: other seeds)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def write(results: list[dict[str, Any]], args: argparse.Namespace, started: float | None) -> None:
    """Rewrite the raw JSON, the table and the plot with every run finished so far."""
    report = {"base": str(args.base), "overrides": args.overrides, "pool": args.pool, "results": results,
              "wall_minutes": None if started is None else (time.perf_counter() - started) / 60,
              "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    write_json(args.out, report)
    text = table(results)
    args.out.with_suffix(".md").write_text(text + "\n")
    plot(results, args.plot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO / "recipes" / "quickstart.yaml")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--second-seed-within", type=float, default=5.0,
                        help="run seed 1 too for variants whose last-round accuracy on --rank-set is within this many "
                        "points of the best (0: never)")
    parser.add_argument("--rank-set", default="test_oot", help="the evaluation set --second-seed-within ranks by")
    parser.add_argument("--pool", type=int, default=POOL_SIZE, help="problems in the shared training pool "
                        "(the first of data/arithmetic/train.jsonl); keep it below rounds x prompts_per_round so they recur")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: rebuild the outputs from the finished runs of --variants x --seeds (and seed 1)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides applied to every variant")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "rewards_compare.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "assets" / "rewards_pareto.png")
    args = parser.parse_args()

    started = time.perf_counter()
    if args.report_only:
        found = [read_variant(name, seed) for seed in sorted({*args.seeds, 1}) for name in args.variants]
        results = [r for r in found if r is not None]
        if not results:
            raise SystemExit(f"error: no finished runs under {RUNS}")
        write(results, args, None)  # the runs' own step timings are in each result's "seconds"
        print(table(results))
        return
    pool = training_pool(args.pool)
    results: list[dict[str, Any]] = []
    for seed in args.seeds:
        for name in args.variants:
            results.append(run_variant(args.base, name, seed, args.overrides, pool))
            last = results[-1]["rounds"][-1]["sets"]
            print(f"{name} seed {seed}: " + ", ".join(
                f"{s} {100 * m['accuracy']:.1f}% / {m['mean_length']:.1f} tok" for s, m in last.items()) +
                f" ({results[-1]['seconds'] / 60:.1f} min)", flush=True)
            write(results, args, started)
    if args.second_seed_within > 0 and 1 not in args.seeds:
        best = max(final_accuracy(r, args.rank_set) for r in results)
        for result in [r for r in results if 100 * (best - final_accuracy(r, args.rank_set)) <= args.second_seed_within]:
            results.append(run_variant(args.base, result["variant"], 1, args.overrides, pool))
            write(results, args, started)
    print(table(results))


if __name__ == "__main__":
    main()
