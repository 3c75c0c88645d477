"""``prefopt rounds`` SIGKILLed from outside at random moments, rerun each time, ends as an uninterrupted run.

The run is started as a real process (the CLI), and killed with ``SIGKILL`` (no cleanup, no
``finally``) at a random moment inside a chosen step: the test waits for the step's log line
(``round r/N: step``), then sleeps a random fraction of that step's duration in an uninterrupted
reference run. The kills cover sampling, training (including, with luck, a checkpoint being
written) and evaluation; after each one the same command is run again. The finished run must hold
the same rollouts, pairs, policy weights and per-round metrics (timings aside) as the reference.
Set ``PREFOPT_KILL_SEED`` to replay a sequence of kill moments.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from test_rounds import REWARD_MODULE, assert_same_run, recipe_file, run_in_process, without_timings  # noqa: F401

import prefopt
from prefopt.online.config import load_rounds_recipe
from prefopt.online.rounds import STEPS

pytestmark = pytest.mark.slow

REPO = Path(prefopt.__file__).resolve().parents[1]
TARGETS = [(1, "sample"), (1, "train"), (1, "train"), (1, "eval"), (2, "sample"), (2, "train"), (2, "eval")]


def step_in_progress(root: Path, count: int) -> str:
    """The first step the manifest does not record yet (``"done"`` when the run is complete)."""
    manifest = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").is_file() else {}
    rounds = manifest.get("rounds", {})
    if "eval" not in rounds.get("0", {}):
        return "0:eval"
    for index in range(1, count + 1):
        for step in STEPS:
            if step not in rounds.get(str(index), {}):
                return f"{index}:{step}"
    return "done"


class Run:
    """The CLI as a child process, its stderr read line by line (``\\r`` progress updates included)."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path):
        self.process = subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        buffer = b""
        for chunk in iter(lambda: self.process.stderr.read1(4096), b""):
            buffer += chunk
            *complete, buffer = buffer.replace(b"\r", b"\n").split(b"\n")
            self.lines += [line.decode(errors="replace") for line in complete]

    def wait_for(self, text: str, timeout: float = 600) -> bool:
        """Wait until a stderr line contains ``text``; ``False`` if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            if self.process.poll() is not None:
                return any(text in line for line in self.lines)
            time.sleep(0.005)
        raise TimeoutError(f"no {text!r} within {timeout} s; stderr tail: {self.lines[-20:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.reader.join(timeout=10)


def test_random_sigkills_resume_to_the_uninterrupted_result(recipe_file, tmp_path):  # noqa: F811
    raw = yaml.safe_load(recipe_file.read_text())
    raw["sampler"].update(n=4, max_new_tokens=24, batch_size=3)
    raw["eval"].update(max_new_tokens=24)
    raw["train"].update(max_steps=4, save_steps=1)
    recipe_path = tmp_path / "kill.yaml"
    recipe_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    count = raw["rounds"]["count"]

    reference = load_rounds_recipe(recipe_path, [f"run.output_root={tmp_path / 'reference'}"])
    reference_rows = run_in_process(reference)
    durations = json.loads((reference.run.directory / "manifest.json").read_text())["rounds"]

    (tmp_path / "register_reward.py").write_text(REWARD_MODULE)
    driver = "import sys, register_reward; from prefopt.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    command = [sys.executable, "-c", driver, "rounds", str(recipe_path)]
    root = tmp_path / "runs" / "tiny"
    seed = int(os.environ.get("PREFOPT_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)

    order = ["0:eval", *[f"{i}:{s}" for i in range(1, count + 1) for s in STEPS], "done"]
    killed_in: list[str] = []
    for index, step in TARGETS:
        if order.index(step_in_progress(root, count)) > order.index(f"{index}:{step}"):
            continue  # an earlier kill landed later than aimed
        run = Run(command, env, tmp_path)
        reached = run.wait_for(f"round {index}/{count}: {step}")
        delay = rng.uniform(0.0, 0.8 * durations[str(index)][step]["seconds"]) if reached else 0.0
        time.sleep(delay)
        run.kill()
        assert run.process.returncode in (-signal.SIGKILL, 0), run.lines[-30:]
        if run.process.returncode == -signal.SIGKILL:
            killed_in.append(step_in_progress(root, count))
            print(f"seed {seed}: SIGKILL {delay:.2f} s into {index}:{step}, in step {killed_in[-1]}")

    steps = {name.split(":")[1] for name in killed_in}
    assert len(killed_in) >= 5 and {"sample", "train", "eval"} <= steps, f"seed {seed}: kills landed in {killed_in}"
    final = subprocess.run([*command, "--quiet"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert final.returncode == 0, f"seed {seed}: {final.stderr[-3000:]}"
    rows = [json.loads((root / f"round_{r:03d}" / "metrics.json").read_text()) for r in range(count + 1)]
    assert [without_timings(r) for r in rows] == [without_timings(r) for r in reference_rows], f"seed {seed}"
    assert_same_run(reference.run.directory, root, rounds=count)
