#!/usr/bin/env bash
# See callcatch catch a missed call on a fresh machine, as root: installs what it needs,
# starts a local Asterisk 22 with the shipped configuration, runs the daemon, places a real
# SIP call with SIPp that rings a phone nobody answers, and lists what callcatch recorded.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --dev
venv=${CALLCATCH_VENV:-.venv}
exec "$venv/bin/python" scripts/try_it.py "$@"
