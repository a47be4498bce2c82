#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for textrace: system tools, then the package.
# Idempotent and quick when everything is there already.
set -euo pipefail
cd "$(dirname "$0")/.."

# perf and bpftool are test oracles and workloads, never runtime dependencies; clang and
# libbpf build and load BPF objects; qemu and busybox run the real-kernel testbed.
PACKAGES=(linux-perf bpftool clang llvm libbpf-dev libbpf1 zstd qemu-system-x86 busybox-static
          util-linux)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "setup: system packages present"
fi

if python3 -c 'import textrace, numpy, zstandard, capstone, elftools, rich, pytest, hypothesis' \
        2>/dev/null && [ "$(python3 -c 'import textrace, os; print(os.path.dirname(textrace.__file__))')" = "$PWD/src/textrace" ]; then
    echo "setup: python packages present"
else
    echo "setup: pip install -e .[test]"
    python3 -m pip install -q -e '.[test]' 2>&1 | grep -v -E "^WARNING: (Running pip as|Location)" || true
    python3 -c 'import textrace' # fail here, not later, if the install did not take
fi
# the in-kernel capture program: a CO-RE object built once with clang (cached)
echo "setup: capture program $(python3 -m textrace.bpf.capture.build)"
# pyenv puts console scripts on PATH through shims, made by a rehash
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
echo "setup: done ($(perf --version 2>/dev/null | head -1), $(bpftool version 2>/dev/null | head -1))"
