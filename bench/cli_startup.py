"""Start-up time of the ``prefopt`` command: ``--help`` of every command and the recipe ``--dry-run`` s.

Each command runs ``--repeat`` times in a fresh interpreter; prints the median wall-clock seconds and
the median CPU seconds of the child (user + system, less sensitive to other load on the machine)
and writes JSON. ``--repo`` points at the checkout to measure (default: this one).

    python bench/cli_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = (
    ["--help"],
    ["train", "--help"],
    ["rounds", "--help"],
    ["data", "inspect", "--help"],
    ["data", "debias", "--help"],
    ["eval", "accuracy", "--help"],
    ["eval", "lc-winrate", "--help"],
    ["export", "--help"],
    ["annotate", "cdr", "--help"],
    ["annotate", "treg", "--help"],
    ["train", "recipes/cpu/dpo.yaml", "--dry-run"],
    ["rounds", "recipes/quickstart.yaml", "--dry-run"],
)


def measure(argv: list[str], repo: Path) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one ``python -m prefopt ARGV`` run in ``repo``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prefopt", *argv], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(repo)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cli_startup.json")
    args = parser.parse_args()
    results = []
    for argv in COMMANDS:
        runs = [measure(argv, args.repo) for _ in range(args.repeat)]
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        results.append({"command": " ".join(argv), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
        print(f"prefopt {' '.join(argv):45} wall {wall:6.2f} s   cpu {cpu:6.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"repo": str(args.repo), "python": platform.python_version(),
                                    "load_average": os.getloadavg(), "repeat": args.repeat,
                                    "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
