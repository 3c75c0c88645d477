#!/usr/bin/env bash
# The training tests, and the HF sampler's (its KV cache subclasses transformers' cache layer), under
# the lowest supported transformers/peft/accelerate and under the transformers release vLLM 0.33 pins
# (5.20.x: no `activation_checkpointing` argument yet). Each set goes into a throwaway venv layered on
# the current interpreter's site-packages (its CPU torch wheel and the rest are reused; only the pinned
# packages are downloaded), runs the tests with this checkout first on the path, and is deleted. Usage:
# .ci/version_matrix.sh  (from any venv holding prefopt's dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."
TESTS=(tests/train tests/test_logps.py tests/test_logps_sharded_head.py tests/test_reference.py tests/test_placement.py
       tests/online/test_sampler.py tests/online/test_sampler_invariance.py tests/online/test_sampler_prefill.py)
BASE_SITE=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

run_set() {  # NAME REQUIREMENT...
    local name=$1; shift
    local venv="$WORK/$name"
    python -m venv "$venv"
    local site
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "import site; site.addsitedir('$BASE_SITE')" > "$site/zz-prefopt-base.pth"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
    echo "== training and sampler tests with $* ($name)"
    "$venv/bin/python" -c 'import transformers, peft, accelerate, torch; print("transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__, "torch", torch.__version__)'
    PYTHONPATH="$PWD" "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
}

run_set floor "transformers==5.0.0" "peft==0.18.0" "accelerate==1.14.0"
run_set vllm-0.33-pin "transformers==5.20.2"
