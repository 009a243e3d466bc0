#!/usr/bin/env bash
# The whole product on this machine, in one command: installs what it needs (the local
# model runtime and a small model, see setup.sh --demo), then `callcatch demo`: a missed
# call, the text the caller gets, and you play the caller until the job is booked.
# Arguments go to `callcatch demo` (--script FILE, --json, --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --demo
venv=${CALLCATCH_VENV:-.venv}
exec "$venv/bin/callcatch" demo "$@"
