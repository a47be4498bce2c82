"""Build the capture program's restricted C (every `*.bpf.c` here) into CO-RE objects.

Being CO-RE, one object serves every kernel with BTF, so the package build compiles them
(setup.py's build_py runs `compile_all` into the build tree) and the wheel ships each
object beside its source: an installed textrace needs no clang.  An object is found, in
order: shipped in the package, in the cache (~/.cache/textrace), or built there now with
clang (a checkout's editable install: scripts/setup.sh does it ahead of time).  Objects
are named by a hash of their source, so a stale one is never picked up.  Building needs
clang and the headers of libbpf-dev and linux-libc-dev; bpftool and vmlinux.h are not
needed (the few kernel types are declared in the source).

    python3 -m textrace.bpf.capture.build      # prints the objects' paths, building them

setup.py loads this file on its own (textrace is not importable while it is being built),
so at module level it imports only the standard library.
"""

from __future__ import annotations

import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "capture.bpf.c")
# the loader's variants (it picks one by probing the kernel): bpf_loop (5.17+), and bounded
# loops for kernels without it (capture_bounded.bpf.c includes SOURCE)
VARIANTS = {"bpf_loop": SOURCE, "bounded": os.path.join(HERE, "capture_bounded.bpf.c")}
BUILD_NEEDS = "clang, libbpf-dev and linux-libc-dev"  # (Debian) to build, never to run


class CompileError(Exception):
    """clang is missing or failed on a source (message says which and why)."""


def sources(directory: str = HERE) -> list[str]:
    """Every capture program source: the main one and any kernel-variant ones."""
    return sorted(glob.glob(os.path.join(directory, "*.bpf.c")))


def object_name(source: str) -> str:
    """capture.bpf.c -> capture-<16 hex of sha256>.bpf.o, hashing the source and the main
    one (a kernel variant's source includes it)."""
    digest = hashlib.sha256()
    for path in dict.fromkeys((source, os.path.join(os.path.dirname(source), "capture.bpf.c"))):
        with open(path, "rb") as f:
            digest.update(f.read())
    return f"{os.path.basename(source)[:-len('.bpf.c')]}-{digest.hexdigest()[:16]}.bpf.o"


def compile_object(source: str, out: str) -> None:
    """clang -target bpf -g -O2 (BTF and CO-RE relocations need -g), written atomically."""
    clang = shutil.which("clang")
    if clang is None:
        raise CompileError("clang is not on PATH")
    arch = platform.machine()
    target_arch = {"x86_64": "x86", "aarch64": "arm64"}.get(arch, arch)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + f".tmp{os.getpid()}"
    cmd = [clang, "-O2", "-g", "-target", "bpf", f"-D__TARGET_ARCH_{target_arch}",
           f"-I/usr/include/{arch}-linux-gnu", "-c", source, "-o", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CompileError(f"clang failed on {source}: {r.stderr.strip()[-800:]}")
    os.replace(tmp, out)


def compile_all(out_dir: str, directory: str = HERE) -> list[str]:
    """Compile every source in `directory` into `out_dir`; the objects' paths."""
    outs = []
    for source in sources(directory):
        out = os.path.join(out_dir, object_name(source))
        compile_object(source, out)
        outs.append(out)
    return outs


def cache_dir() -> str:
    """Where compiled capture objects are cached: $XDG_CACHE_HOME/textrace, else
    ~/.cache/textrace."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "textrace")


def packaged_path(source: str = SOURCE) -> str | None:
    """The object the package shipped for this source, if it did.  (A path beside the
    source, not an importlib.resources handle: libbpf opens files by name.)"""
    path = os.path.join(os.path.dirname(source), object_name(source))
    return path if os.path.exists(path) else None


def object_path(source: str = SOURCE) -> str:
    """Where the cache keeps this source's object."""
    return os.path.join(cache_dir(), object_name(source))


def build(force: bool = False, source: str = SOURCE) -> str:
    """The object's path: the packaged one, else the cached one, else built now."""
    try:
        shipped = None if force else packaged_path(source)
        if shipped:
            return shipped
        out = object_path(source)
        if os.path.exists(out) and not force:
            return out
        os.makedirs(os.path.dirname(out), mode=0o700, exist_ok=True)
        compile_object(source, out)
        return out
    except (CompileError, OSError) as e:
        from ...errors import TextraceError
        raise TextraceError(f"no capture object is installed and none could be built ({e}): "
                            f"install textrace from its wheel (it ships the object), or "
                            f"install {BUILD_NEEDS}") from None

if __name__ == "__main__":
    print(" ".join(build(force="--force" in sys.argv, source=s) for s in sources()))
