"""``bench/gpu/smoke.py --cpu``: the GPU smoke script's checks run end to end on a toy model on the CPU (a dry
run of the script; on the GPU machine it runs the same checks on the GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_script_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFOPT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO / "bench/gpu/smoke.py"), str(tmp_path / "out"), "--cpu"],
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checks = json.loads((tmp_path / "out" / "smoke.json").read_text())["checks"]
    assert {name: c["status"] for name, c in checks.items()} == {
        "chunked_head": "ok", "train_full_precomputed": "ok", "train_full_live": "ok", "train_lora_precomputed": "ok",
        "train_lora_adapter_disabled_checkpointed": "ok", "qlora": "skipped", "hf_engine": "ok", "rounds": "ok"}
    assert checks["rounds"]["pairs"] == [8, 8]


def test_smoke_script_refuses_to_run_without_a_gpu_unless_told(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench/gpu/smoke.py"), str(tmp_path / "out")],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--cpu" in result.stderr
