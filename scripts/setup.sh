#!/usr/bin/env bash
# Install what callcatch needs on a fresh Debian 12+ or Ubuntu 22.04+ machine, as root:
# system packages, a virtual environment in .venv with callcatch in it, and, with --dev,
# the test tools and the cached Asterisk 22 root the test suite runs against.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=no
[ "${1:-}" = "--dev" ] && dev=yes
venv=${CALLCATCH_VENV:-.venv}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (apt-get, and the test Asterisk runs in a chroot)" >&2
    exit 1
  fi
}

packages=(python3 python3-venv python3-pip ca-certificates)
[ "$dev" = yes ] && packages+=(debootstrap debian-archive-keyring sip-tester socat sqlite3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  python3 -m venv "$venv"
fi
extras=""
[ "$dev" = yes ] && extras="[dev]"
"$venv/bin/pip" install -q --disable-pip-version-check -e ".$extras"

if [ "$dev" = yes ]; then
  need_root
  scripts/asterisk.sh build
fi
echo "setup: done ($venv)"
