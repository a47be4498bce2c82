"""Build capture.bpf.c into a CO-RE object with clang.

The object is built once per source version into a cache directory (scripts/setup.sh does
it ahead of time); being CO-RE, one object serves every kernel with BTF.  clang is needed
only to build it, bpftool not at all (the few kernel types are declared in the source).

    python3 -m textrace.bpf.capture.build      # prints the object's path
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys

from ...errors import TextraceError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "capture.bpf.c")


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "textrace")


def object_path() -> str:
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"capture-{digest}.bpf.o")


def build(force: bool = False) -> str:
    """The built object's path, building it first if needed."""
    out = object_path()
    if os.path.exists(out) and not force:
        return out
    clang = shutil.which("clang")
    if clang is None:
        raise TextraceError("clang is needed to build the capture program (run "
                            "scripts/setup.sh)", field="capture")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    arch = platform.machine()
    target_arch = {"x86_64": "x86", "aarch64": "arm64"}.get(arch, arch)
    tmp = out + f".tmp{os.getpid()}"
    cmd = [clang, "-O2", "-g", "-target", "bpf", f"-D__TARGET_ARCH_{target_arch}",
           f"-I/usr/include/{arch}-linux-gnu", "-c", SOURCE, "-o", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise TextraceError(f"building the capture program failed: {r.stderr.strip()[-800:]}",
                            file=SOURCE, field="capture")
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    print(build(force="--force" in sys.argv))
