#!/usr/bin/env bash
# Sets up twin (first run only) and starts the bot: `twin serve`. Settings come from .env.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f .env ] || { echo "twin: no .env yet: cp .env.example .env and fill it in (see README)" >&2; exit 1; }
exec "${TWIN_VENV:-.venv}/bin/twin" serve "$@"
