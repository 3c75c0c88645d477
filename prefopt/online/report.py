"""The end-of-run summary of ``prefopt rounds``: a per-round table and the accuracy-vs-length plot.

Both are built from the rounds' ``metrics.json`` files, so ``prefopt rounds`` on a finished run
(which has nothing left to do) prints the same table again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefopt.io import atomic_path, atomic_write_text

PLOT = "accuracy_vs_length.png"
TABLE = "summary.md"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: accuracy with its 95% CI, the paired difference to round 0, lengths, pairs, times."""
    header = ("| round | accuracy % [95% CI] | Δ vs round 0 (pts) [95% CI], p | mean len | median len | "
              "Δ len | truncated % | pairs | sample s | train s | eval s |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        acc = f"{_pct(row['accuracy'])} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"
        if row["round"] == 0:
            diff, dlen, pairs, times = "—", "—", "—", ("—", "—", f"{row['seconds']:.0f}")
        else:
            diff = (f"{100 * row['accuracy_diff_vs_round0']:+.1f} [{100 * row['diff_ci_low']:+.1f}, "
                    f"{100 * row['diff_ci_high']:+.1f}], p={row['diff_p_value']:.2g}")
            dlen = f"{100 * row['length_change_vs_round0']:+.0f}%"
            pairs = str(row["pairs"])
            times = (f"{row['sampling_seconds']:.0f}", f"{row['training_seconds']:.0f}", f"{row['eval_seconds']:.0f}")
        lines.append(f"| {row['round']} | {acc} | {diff} | {row['mean_length']:.1f} | {row['median_length']:.0f} | "
                     f"{dlen} | {_pct(row['truncation_rate'])} | {pairs} | {' | '.join(times)} |")
    return "\n".join(lines)


def plot_tradeoff(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Held-out accuracy (95% CI bars) against mean completion length, one labelled point per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = [r["mean_length"] for r in rows]
    accuracy = [100 * r["accuracy"] for r in rows]
    errors = [[100 * (r["accuracy"] - r["ci_low"]) for r in rows], [100 * (r["ci_high"] - r["accuracy"]) for r in rows]]
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    ax.errorbar(lengths, accuracy, yerr=errors, fmt="o-", capsize=4, color="tab:blue", ecolor="tab:gray")
    for row, x, y in zip(rows, lengths, accuracy):
        ax.annotate(f"round {row['round']}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xlabel("mean completion length on held-out problems (tokens)")
    ax.set_ylabel("held-out accuracy (%), 95% CI")
    ax.set_title(title or "accuracy vs length over rounds")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_summary(root: Path, rows: list[dict[str, Any]], title: str = "") -> tuple[str, Path]:
    """Write ``summary.md`` and the plot into the run directory; returns ``(table, plot path)``."""
    table = format_table(rows)
    atomic_write_text(root / TABLE, table + "\n")
    plot_tradeoff(rows, root / PLOT, title)
    return table, root / PLOT
