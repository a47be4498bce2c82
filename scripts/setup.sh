#!/usr/bin/env bash
# Set up a Debian 12 machine (as root) for textrace: system tools, then the package.
# Idempotent, and quick when everything is there already: apt-get runs only for a package
# that is missing, pip only when this checkout is not installed or a requirement is missing.
# Usage: bash scripts/setup.sh    (from anywhere; it works on the checkout it lives in)
set -euo pipefail
cd "$(dirname "$0")/.."

# perf and bpftool are test oracles and workloads, never runtime dependencies; clang, llvm
# and libbpf build and load BPF objects; qemu and busybox run the real-kernel testbed;
# util-linux gives unshare; python3-venv and pipx install the built wheel the way users do
# (tests/test_install.py); mmdebstrap makes the roots of the other releases' perf (oracles);
# libiberty-dev is perf's demangler, linked into textrace.demangler.
PACKAGES=(linux-perf bpftool clang llvm libbpf-dev libbpf1 libiberty-dev zstd
          qemu-system-x86 busybox-static util-linux python3-venv pipx mmdebstrap)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    echo "setup: apt-get update (missing: ${missing[*]})"
    apt-get update -qq
    echo "setup: apt-get install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" \
        >/dev/null 2> >(grep -v "^debconf: delaying package configuration" >&2)
else
    echo "setup: system packages present (${#PACKAGES[@]})"
fi

# Is this checkout installed (editable) with every requirement of pyproject.toml, the test
# extra included?  Exit 0 if so; print why not otherwise.
python_ready() {
    env -u PYTHONPATH python3 - <<'EOF'
import importlib.metadata as md, importlib.util, os, re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + project.get("optional-dependencies", {}).get("test", [])
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
for line in reqs:
    req = Requirement(line)
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        sys.exit(f"{req.name} is not installed")
    if version not in req.specifier:
        sys.exit(f"{req.name} {version} does not satisfy {req}")
spec = importlib.util.find_spec("textrace")
if spec is None or not spec.origin.startswith(os.path.abspath("src") + os.sep):
    sys.exit("textrace is not this checkout's (editable) install")
EOF
}

if why=$(python_ready 2>&1); then
    echo "setup: python packages present"
else
    echo "setup: pip install -e '.[test]' (${why##*$'\n'})"
    # (this machine's pip config names local indexes that may be absent: not worth a line)
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        -e '.[test]' 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
    env -u PYTHONPATH python3 -c 'import textrace'  # fail here, not later
fi
# textrace.compiled and textrace.demangler (src/textrace/*.c) built in place, again when a
# source is newer
suffix=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
for ext in compiled demangler; do
    so=src/textrace/$ext$suffix
    if [ ! -e "$so" ] || [ "src/textrace/$ext.c" -nt "$so" ]; then
        echo "setup: building the extensions"
        python3 -W ignore setup.py -q build_ext --inplace >/dev/null
        break
    fi
done
# pyenv puts console scripts (textrace) on PATH through shims, made by a rehash
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
# the in-kernel capture program: a CO-RE object built once with clang (cached)
echo "setup: capture program $(python3 -m textrace.bpf.capture.build)"
# the qemu testbed's kernels: Debian's 5.10, 6.1 (the machine's apt), 6.12 and 7.2 (a
# private apt configuration of the same archive), downloaded and extracted once into
# ~/.cache/textrace/testbed (tests boot them; cached ones are kept), and perf 6.12 and 7.2
# in minimal roots of their releases (~/.cache/textrace/perf-roots)
python3 -m testbed --prepare --kernel all --perf all | sed 's/^/setup: /'
echo "setup: done ($(perf --version), bpftool $(bpftool version | head -1 | cut -d' ' -f2)," \
     "$(python3 --version))"
