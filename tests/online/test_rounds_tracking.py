"""Per-round metrics through the rounds loop to the trackers (TensorBoard event files, a fake wandb),
and the summary table / plot with several evaluation sets."""

from __future__ import annotations

import sys
import types

import pytest
from test_rounds import recipe_file, run_in_process  # noqa: F401  (the tiny-model recipe fixture)

from prefopt.online import trackers
from prefopt.online.config import load_rounds_recipe
from prefopt.online.report import format_table, write_summary


class FakeWandb(types.ModuleType):
    """Records ``wandb.init`` / ``run.log`` / ``run.finish`` calls."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.inits: list[dict] = []
        self.logged: list[tuple[dict, int]] = []
        self.finished = 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self

    def log(self, data, step):
        self.logged.append((data, step))

    def finish(self):
        self.finished += 1


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_round_metrics_reach_tensorboard_through_the_loop(recipe_file):  # noqa: F811
    recipe = load_rounds_recipe(recipe_file, ["logging.report_to=tensorboard"])
    rows = run_in_process(recipe)
    root = recipe.run.directory / "tensorboard"
    for name in ("test", "other"):  # one TensorBoard run per evaluation set, stable tags, step = round
        scalars = _scalars(root / name)
        assert [step for step, _ in scalars["round/accuracy"]] == [0, 1, 2]
        assert [v for _, v in scalars["round/mean_length"]] == [pytest.approx(r["sets"][name]["mean_length"])
                                                                for r in rows]
        assert [step for step, _ in scalars["round/accuracy_diff_vs_round0"]] == [1, 2]
        assert "round/truncation_rate" in scalars and "round/pairs" not in scalars
    per_round = _scalars(root)
    assert per_round["round/pairs"] == [(1, 3.0), (2, 3.0)]
    assert {"round/train_accuracy", "round/sampling_seconds", "round/eval_seconds"} <= set(per_round)


def test_wandb_gets_one_resumed_run_with_a_group_per_set(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    rows = [_row(0, {"test": 0.3, "test_oot": 0.2}), _row(1, {"test": 0.4, "test_oot": 0.3})]
    for row in rows:
        trackers.log_round(["wandb"], tmp_path, "demo", row)
    assert [step for _, step in fake.logged] == [0, 1] and fake.finished == 2
    assert len({init["id"] for init in fake.inits}) == 1 and fake.inits[0]["resume"] == "allow"
    assert fake.inits[0]["name"] == "demo"
    last, _ = fake.logged[-1]
    assert last["test/round/accuracy"] == 0.4 and last["test_oot/round/length_change_vs_round0"] == -0.25
    assert last["round/pairs"] == 7.0 and "round/pairs" not in fake.logged[0][0]


def _row(index: int, sets: dict[str, float]) -> dict:
    values = {name: {"n": 10, "accuracy": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1, "mean_length": 40.0 - 10 * index,
                     "median_length": 30.0, "truncation_rate": 0.0}
              for name, acc in sets.items()}
    row = {"round": index, "sets": values, "eval_seconds": 5.0}
    if index:
        for v in values.values():
            v.update(accuracy_diff_vs_round0=0.1, diff_ci_low=-0.05, diff_ci_high=0.25, diff_p_value=0.2,
                     length_change_vs_round0=-0.25)
        row.update(pairs=7, train_accuracy=0.5, train_mean_length=33.0, train_truncation_rate=0.1,
                   sampling_seconds=12.0, training_seconds=30.0)
    return row


def test_summary_has_a_row_group_and_a_plot_line_per_set(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    lines_drawn = []
    errorbar = Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, **kw: lines_drawn.append((kw["label"], list(x)))
                        or errorbar(self, x, y, **kw))
    rows = [_row(0, {"test": 0.3, "test_oot": 0.2}), _row(1, {"test": 0.4, "test_oot": 0.3})]
    table = format_table(rows)
    lines = table.splitlines()
    assert [line.split(" | ")[0:2] for line in lines[2:6]] == [["| test", "0"], ["| test", "1"], ["| test_oot", "0"],
                                                              ["| test_oot", "1"]]
    assert "| test_oot | 1 | 10 | 30.0 [20.0, 40.0] | +10.0 [-5.0, +25.0], p=0.2 | 30.0 | 30 | -25% | 0.0 |" in table
    assert "| 1 | 7 | 50.0 | 33.0 | 10.0 | 12 | 30 | 5 |" in table and "| 0 | — | — | — | — | — | — | 5 |" in table
    _, plot = write_summary(tmp_path, rows, title="t")
    assert plot.stat().st_size > 1000 and (tmp_path / "summary.md").read_text() == table + "\n"
    assert lines_drawn == [("test", [40.0, 30.0]), ("test_oot", [40.0, 30.0])]
