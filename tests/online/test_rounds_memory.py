"""The rounds loop hands training memory back before the next engine starts: after every trained round no
trainer is left alive when :func:`release_memory` runs."""

from __future__ import annotations

import gc

from test_rounds import recipe_file, run_in_process  # noqa: F401  (fixture)

import prefopt.online.rounds as rounds_module
from prefopt.online.config import load_rounds_recipe
from prefopt.train import PreferenceTrainer


def test_memory_is_released_after_each_training(recipe_file, monkeypatch):  # noqa: F811
    real = rounds_module.release_memory
    live_trainers: list[int] = []

    def release() -> None:
        real()
        live_trainers.append(sum(isinstance(o, PreferenceTrainer) for o in gc.get_objects()))

    monkeypatch.setattr(rounds_module, "release_memory", release)
    run_in_process(load_rounds_recipe(recipe_file))
    assert live_trainers == [0, 0]  # two rounds trained, each released with its trainer gone
