#!/usr/bin/env bash
# One call on the lent GPU machine (about 3-5 minutes; budget 8): prefopt's GPU paths on a random model,
# no network, no vLLM. Results: $OUT/smoke.json (per check: ok / failed / skipped, seconds, details).
#
# From the project root on the development machine, first:  bash ../shared/device/prepare.sh
# then the device call (run tool), with carry [".device/whl"] and this command, timeout_s 540:
#   bash bench/gpu/smoke.sh
# Not yet run: no GPU machine was lent to the task that wrote it (docs/distributed.md §6).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/results/gpu-smoke}
if [ -d .device/whl ]; then  # the device image lacks trl, datasets, pydantic, ... (../shared/device/README.md)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PREFOPT_CACHE=/tmp/prefopt-cache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
timeout 500 python3 bench/gpu/smoke.py "$OUT"
