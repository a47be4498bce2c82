"""Build the capture program's variants into CO-RE objects with clang.

Each object is built once per source version into a cache directory (scripts/setup.sh does
it ahead of time); being CO-RE, one object serves every kernel with BTF.  There are two
variants of one source: capture.bpf.c (bpf_loop, 5.17 and later) and capture_bounded.bpf.c
(bounded loops, for 5.10's kind).  clang is needed only to build them, bpftool not at all
(the few kernel types are declared in the source).

    python3 -m textrace.bpf.capture.build      # prints the objects' paths
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys

from ...errors import TextraceError

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "capture.bpf.c")
# variant -> its source; each includes SOURCE or is it
VARIANTS = {"bpf_loop": SOURCE, "bounded": os.path.join(HERE, "capture_bounded.bpf.c")}


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "textrace")


def object_path(variant: str = "bpf_loop") -> str:
    source = VARIANTS[variant]
    digest = hashlib.sha256()
    for path in dict.fromkeys((source, SOURCE)):
        with open(path, "rb") as f:
            digest.update(f.read())
    name = os.path.basename(source).removesuffix(".bpf.c")
    return os.path.join(cache_dir(), f"{name}-{digest.hexdigest()[:16]}.bpf.o")


def build(force: bool = False, variant: str = "bpf_loop") -> str:
    """The built object's path, building it first if needed."""
    source = VARIANTS[variant]
    out = object_path(variant)
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
           f"-I/usr/include/{arch}-linux-gnu", "-c", source, "-o", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise TextraceError(f"building the capture program failed: {r.stderr.strip()[-800:]}",
                            file=source, field="capture")
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    print(" ".join(build(force="--force" in sys.argv, variant=v) for v in VARIANTS))
