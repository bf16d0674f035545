#!/usr/bin/env bash
# Sets up twin with the test tools and runs the whole test suite (tiny models, real vLLM on CPU).
# Extra arguments go to pytest: scripts/test.sh -k import -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export TOKENIZERS_PARALLELISM=false
exec "${TWIN_VENV:-.venv}/bin/python" -m pytest "$@"
