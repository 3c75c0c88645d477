"""The end-of-run summary of ``prefopt rounds``: the table and the accuracy-vs-length plot.

The table has a row group per evaluation set (``eval.sets``) and a table of the rounds' own figures;
the plot has a line per evaluation set.

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
    """Markdown: per evaluation set, a row group of accuracy (95% CI), paired difference to round 0 and
    lengths; then the rounds' own figures (pairs, training-sample accuracy and length, times)."""
    header = ("| set | round | n | accuracy % [95% CI] | Δ vs round 0 (pts) [95% CI], p | mean len | median len | "
              "Δ len | truncated % |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name in rows[0]["sets"]:
        for row in rows:
            values = row["sets"][name]
            acc = f"{_pct(values['accuracy'])} [{_pct(values['ci_low'])}, {_pct(values['ci_high'])}]"
            diff, dlen = "—", "—"
            if row["round"] > 0:
                diff = (f"{100 * values['accuracy_diff_vs_round0']:+.1f} [{100 * values['diff_ci_low']:+.1f}, "
                        f"{100 * values['diff_ci_high']:+.1f}], p={values['diff_p_value']:.2g}")
                dlen = f"{100 * values['length_change_vs_round0']:+.0f}%"
            lines.append(f"| {name} | {row['round']} | {values['n']} | {acc} | {diff} | {values['mean_length']:.1f} | "
                         f"{values['median_length']:.0f} | {dlen} | {_pct(values['truncation_rate'])} |")
    header = "| round | pairs | train acc % | train mean len | train truncated % | sample s | train s | eval s |"
    lines += ["", header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        if row["round"] == 0:
            cells = ["—"] * 6
        else:
            cells = [str(row["pairs"]), _pct(row["train_accuracy"]), f"{row['train_mean_length']:.1f}",
                     _pct(row["train_truncation_rate"]), f"{row['sampling_seconds']:.0f}", f"{row['training_seconds']:.0f}"]
        lines.append(f"| {row['round']} | {' | '.join(cells)} | {row['eval_seconds']:.0f} |")
    return "\n".join(lines)


def plot_tradeoff(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Accuracy (95% CI bars) against mean completion length: a line per evaluation set, a labelled point per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for colour, name in enumerate(rows[0]["sets"]):
        values = [row["sets"][name] for row in rows]
        lengths = [v["mean_length"] for v in values]
        accuracy = [100 * v["accuracy"] for v in values]
        errors = [[100 * (v["accuracy"] - v["ci_low"]) for v in values],
                  [100 * (v["ci_high"] - v["accuracy"]) for v in values]]
        ax.errorbar(lengths, accuracy, yerr=errors, fmt="o-", capsize=4, color=f"C{colour}", ecolor="tab:gray",
                    label=name)
        for row, x, y in zip(rows, lengths, accuracy):
            ax.annotate(f"r{row['round']}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("mean completion length (tokens)")
    ax.set_ylabel("accuracy (%), 95% CI")
    ax.set_title(title or "accuracy vs length over rounds")
    ax.legend(title="evaluation set", fontsize=8)
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
