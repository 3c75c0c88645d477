"""Statistics and outputs of ``bench/losses_compare.py``: per-config metrics, the markdown table, the plot.

Pure functions on the benchmark's result dicts (no model, no training), so the report can be rebuilt
from the files of a finished or interrupted run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from prefopt.evaluate.accuracy import Z95, paired_difference, wilson_interval


def mean_interval(values: list[float]) -> dict[str, float]:
    """Mean with a normal-approximation 95% interval."""
    mean = statistics.fmean(values)
    half = Z95 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def proportion(hits: int, n: int) -> dict[str, float]:
    low, high = wilson_interval(hits, n)
    return {"rate": hits / n if n else float("nan"), "ci_low": low, "ci_high": high, "k": hits, "n": n}


def preference_metrics(rewards: dict[str, list]) -> dict[str, Any]:
    """Accuracy, margin and length exploitation (vs the labels' own rate) from per-pair rewards."""
    c, r, lc, lr = rewards["chosen"], rewards["rejected"], rewards["chosen_len"], rewards["rejected_len"]
    unequal = [i for i in range(len(c)) if lc[i] != lr[i]]
    labels_longer = {str(i): lc[i] > lr[i] for i in unequal}
    model_longer = {str(i): (c[i] > r[i]) if lc[i] > lr[i] else (r[i] > c[i]) for i in unequal}
    diff = paired_difference(labels_longer, model_longer)
    return {
        "accuracy": proportion(sum(a > b for a, b in zip(c, r)), len(c)),
        "margin": mean_interval([a - b for a, b in zip(c, r)]),
        "prefers_longer": proportion(sum(model_longer.values()), len(unequal)),
        "labels_prefer_longer": proportion(sum(labels_longer.values()), len(unequal)),
        "prefers_longer_minus_labels": {"diff": diff.diff, "ci_low": diff.ci_low, "ci_high": diff.ci_high,
                                        "p_value": diff.p_value},
    }


def generation_metrics(gen: dict[str, Any], start: dict[str, Any]) -> dict[str, Any]:
    """Length (mean, median, paired change from the start) and verified accuracy with its paired difference."""
    ids = sorted(gen["lengths"])
    lengths = [gen["lengths"][i] for i in ids]
    metrics = {
        "length": mean_interval(lengths),
        "median_length": statistics.median(lengths),
        "length_change": mean_interval([gen["lengths"][i] - start["lengths"][i] for i in ids]),
        "relative_length_change": statistics.fmean(lengths) / statistics.fmean(start["lengths"].values()) - 1,
        "truncation_rate": gen["truncation_rate"],
    }
    if "outcomes" in gen:
        diff = paired_difference(start["outcomes"], gen["outcomes"])
        metrics["verified"] = proportion(sum(gen["outcomes"].values()), len(gen["outcomes"]))
        metrics["verified_change"] = {"diff": diff.diff, "ci_low": diff.ci_low, "ci_high": diff.ci_high,
                                      "p_value": diff.p_value}
    return metrics


def _ci(m: dict[str, float], key: str = "rate", scale: float = 1.0, fmt: str = ".2f") -> str:
    return f"{m[key] * scale:{fmt}} [{m['ci_low'] * scale:{fmt}}, {m['ci_high'] * scale:{fmt}}]"


def table(rows: list[dict[str, Any]], starts: dict[str, Any], missing: list[str]) -> str:
    """The results as one markdown table (a block of rows per dataset)."""
    lines = ["| data | loss | seed | lr | pref. acc. [95%] | margin | prefers longer [95%] (labels, McNemar p) | "
             "gen. length mean / median | Δ length vs start [95%] | verified acc. [95%] | Δ verified [95%], p |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, start in starts.items():
        lengths = list(start["lengths"].values())
        verified = _ci(proportion(sum(start["outcomes"].values()), len(start["outcomes"]))) if "outcomes" in start else "—"
        lines.append(f"| {name} | starting model | | | — | — | — | {statistics.fmean(lengths):.1f} / "
                     f"{statistics.median(lengths):g} | — | {verified} | — |")
        for r in (r for r in rows if r["data"] == name):
            t, g = r["test"], r["generation"]
            verified = _ci(g["verified"]) if "verified" in g else "—"
            change = (f"{_ci(g['verified_change'], 'diff', 100, '+.0f')} pts, p={g['verified_change']['p_value']:.2g}"
                      if "verified_change" in g else "—")
            lines.append(
                f"| {name} | {r['loss']} | {r['seed']} | {r['lr']:g} | {_ci(t['accuracy'])} | {t['margin']['mean']:.3g} | "
                f"{_ci(t['prefers_longer'])} ({t['labels_prefer_longer']['rate']:.2f}, "
                f"p={t['prefers_longer_minus_labels']['p_value']:.2g}) | "
                f"{g['length']['mean']:.1f} / {g['median_length']:g} | {_ci(g['length_change'], 'mean', fmt='+.1f')} | "
                f"{verified} | {change} |")
    lines += [f"\nNot run (yet): {', '.join(missing)}."] if missing else []
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], starts: dict[str, Any], path: Path, first_seed: int) -> None:
    """Preference accuracy (hh) / verified accuracy (arithmetic) against mean generated length, a marker per loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^v<>pPX*h"
    index = {loss: i for i, loss in enumerate(dict.fromkeys(r["loss"] for r in rows))}  # same marker and colour per loss
    colour = {loss: plt.cm.tab20((2 * i + i // 10) % 20) for loss, i in index.items()}  # dark shades first, then light
    fig, axes = plt.subplots(1, len(starts), figsize=(6.5 * len(starts), 4.8), squeeze=False)
    for ax, (name, start) in zip(axes[0], starts.items()):
        verified = "outcomes" in start
        for r in (r for r in rows if r["data"] == name):
            g = r["generation"]
            y = g["verified"] if verified else r["test"]["accuracy"]
            ax.errorbar(g["length"]["mean"], y["rate"], yerr=[[y["rate"] - y["ci_low"]], [y["ci_high"] - y["rate"]]],
                        xerr=[[g["length"]["mean"] - g["length"]["ci_low"]], [g["length"]["ci_high"] - g["length"]["mean"]]],
                        fmt=markers[index[r["loss"]] % len(markers)], color=colour[r["loss"]], capsize=3,
                        alpha=1.0 if r["seed"] == first_seed else 0.4, label=r["loss"] if r["seed"] == first_seed else None)
        ax.axvline(statistics.fmean(start["lengths"].values()), color="grey", ls="--", label="starting model length")
        if verified:
            ax.axhline(statistics.fmean(start["outcomes"].values()), color="grey", ls=":", label="starting model accuracy")
        ax.set_xlabel("mean generated length (tokens, greedy)")
        ax.set_ylabel("verified accuracy (test prompts)" if verified else "implicit-reward preference accuracy (test)")
        ax.set_title(f"{name}: {'verified accuracy' if verified else 'preference accuracy'} vs generated length")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        handles |= dict(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="lower center", ncol=4, title="faded: second seed")
    fig.tight_layout(rect=(0, 0.05 + 0.035 * ((len(handles) + 3) // 4), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def read_test(workdir: Path, data: str, slug: str, seed: int) -> dict[str, Any] | None:
    """The test result of loss ``slug`` on ``data`` at training ``seed``, or ``None`` if not run yet."""
    path = workdir / data / slug / f"seed{seed}.test.json"
    return json.loads(path.read_text()) if path.is_file() else None


def report(args: argparse.Namespace, specs: list, wall_s: float | None) -> str:
    """Collect every finished result into ``--out``, ``--table`` and ``--plot``; return the table."""
    from prefopt.io import atomic_write_text, write_json

    bench = [d for d in args.datasets if (args.workdir / d / "start.json").is_file()]
    starts = {d: json.loads((args.workdir / d / "start.json").read_text()) for d in bench}
    rows, grid, missing = [], [], []
    for data in bench:
        for spec in specs:
            grid += [json.loads(p.read_text()) | {"data": data}
                     for p in sorted((args.workdir / data / spec.slug).glob("lr*-seed*/val.json"))]
            for seed in (args.seed, args.second_seed):
                result = read_test(args.workdir, data, spec.slug, seed)
                if result is not None:
                    rows.append({"data": data, **result})  # raw: per-pair rewards and per-prompt answers too
                elif seed == args.seed:
                    missing.append(f"{data}/{spec.text}")
    text = table(rows, starts, missing)
    import torch
    import transformers

    write_json(args.out, {
        "command": " ".join(sys.argv), "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "transformers": transformers.__version__},
        "wall_s": wall_s, "wall_span_s": wall_span(args, bench),
        "stage_seconds": stage_seconds(args, bench, grid, rows),
        "data": {d: json.loads((args.workdir / d / "splits.json").read_text()) for d in bench},
        "starting_model": starts,
        "grid": grid, "results": rows, "not_run": missing,
    })
    atomic_write_text(args.table, text + "\n")
    if rows:
        plot(rows, starts, args.plot, args.seed)
    return text


def stage_seconds(args: argparse.Namespace, bench: list[str], grid: list[dict], rows: list[dict]) -> dict[str, float]:
    """Seconds spent per stage, summed over every finished result (all invocations of a resumed run)."""
    setup = {stage: sum(json.loads((args.workdir / d / f"{stage}.json").read_text()).get("seconds", 0.0) for d in bench)
             for stage in ("splits", "treg", "start")}
    return {"data_and_length_bias": setup["splits"], "treg_annotation": setup["treg"], "starting_model_generation": setup["start"],
            "train": sum(g["train_s"] for g in grid), "validation": sum(g["val_s"] for g in grid),
            "test_scoring": sum(r["test_s"] for r in rows), "generation": sum(r["gen_s"] for r in rows)}


def wall_span(args: argparse.Namespace, bench: list[str]) -> float:
    """Seconds from the first split file to the last result file (the run's wall time, resumes included)."""
    first = min((args.workdir / d / "splits.json").stat().st_mtime for d in bench)
    last = max(p.stat().st_mtime for d in bench for p in (args.workdir / d).rglob("*.json"))
    return last - first
