#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine: installs what it needs (see
# setup.sh --dev), runs the linters and the type checker, then every test, including the
# end-to-end ones against a real Asterisk 22 with SIPp calls. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --dev
venv=${CALLCATCH_VENV:-.venv}

"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/mypy"

status=0
"$venv/bin/pytest" "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
