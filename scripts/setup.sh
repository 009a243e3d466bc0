#!/usr/bin/env bash
# Install what callcatch needs on a fresh Debian 12+ or Ubuntu 22.04+ machine, as root:
# system packages, a virtual environment in .venv with callcatch in it, and, with --dev,
# the test tools and the cached Asterisk 22 root the test suite runs against.
# --dev and --demo also install the local model runtime (llama-cpp-python, built once as a
# portable wheel and cached) and the default small model (scripts/install-models.sh).
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=no
demo=no
case "${1:-}" in
  --dev) dev=yes ;;
  --demo) demo=yes ;;
  "") ;;
  *) echo "usage: $0 [--dev | --demo]" >&2; exit 2 ;;
esac
model=no
if [ "$dev" = yes ] || [ "$demo" = yes ]; then model=yes; fi
venv=${CALLCATCH_VENV:-.venv}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (apt-get, and the test Asterisk runs in a chroot)" >&2
    exit 1
  fi
}

# llama-cpp-python is published as source only, and the default build targets the build
# machine's CPU (-march=native): on a box with AVX-512/AMX that build crashed with SIGSEGV on
# the first token, and the shop's mini PC is not the build machine anyway. So it is built
# once with portable x86-64 flags (AVX2/FMA/F16C: any x86 CPU since ~2013; no AVX-512), or
# the defaults on ARM (a Raspberry Pi 5), and the wheel is cached outside the checkout,
# keyed by version, Python and flags. A new clone or CI run installs it in seconds.
llama_version=0.3.36
if [ "$(uname -m)" = x86_64 ]; then
  llama_flags="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
else
  llama_flags="-DGGML_NATIVE=OFF"
fi
wheel_cache=${CALLCATCH_CACHE:-/var/cache/callcatch}/wheels
py=python3
[ -x "$venv/bin/python" ] && py=$venv/bin/python
pytag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
flags_key=$(printf '%s' "$llama_flags" | sha256sum | cut -c1-12)
wheel_dir=$wheel_cache/llama-cpp-python-$llama_version-$pytag-$(uname -m)-$flags_key
cached_wheel() { compgen -G "$wheel_dir/llama_cpp_python-$llama_version-*.whl" | head -n 1; }

packages=(python3 python3-venv python3-pip ca-certificates)
[ "$dev" = yes ] && packages+=(debootstrap debian-archive-keyring sip-tester socat sqlite3)
[ "$model" = yes ] && packages+=(unzip)
# The compilers are needed only to build the wheel, not when it is already cached.
[ "$model" = yes ] && [ -z "$(cached_wheel)" ] && packages+=(cmake build-essential)
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
pip=("$venv/bin/pip" install -q --disable-pip-version-check)

if [ "$model" = yes ]; then
  if [ -z "$(cached_wheel)" ]; then
    echo "setup: building llama-cpp-python $llama_version once (about 6 min on 2 cores)"
    echo "setup:   flags: $llama_flags; cache: $wheel_dir"
    mkdir -p "$wheel_cache"
    tmp=$(mktemp -d "$wheel_cache/.build.XXXXXX")
    CMAKE_ARGS="$llama_flags" CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 10 \
      "$venv/bin/pip" wheel -q --no-deps --no-cache-dir --disable-pip-version-check \
      -w "$tmp" "llama-cpp-python==$llama_version"
    chmod 755 "$tmp"
    printf '%s\n' "$llama_flags" >"$tmp/FLAGS"
    rm -rf "$wheel_dir"
    mv "$tmp" "$wheel_dir"
  fi
  # The cached wheel first: the [model] extra below then finds it installed and cannot
  # fall back to compiling a newer source release with native flags.
  installed=$("$venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || true)
  if [ "$installed" != "$llama_version" ]; then
    "${pip[@]}" "$(cached_wheel)"
  fi
fi

extras=()
[ "$dev" = yes ] && extras+=(dev)
[ "$model" = yes ] && extras+=(model)
spec="."
[ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"
"${pip[@]}" -e "$spec"

if [ "$model" = yes ]; then
  CALLCATCH_VENV=$venv scripts/install-models.sh
fi

if [ "$dev" = yes ]; then
  need_root
  scripts/asterisk.sh build
fi
echo "setup: done ($venv)"
