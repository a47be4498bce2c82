"""ELF files as a source: the files samples name, mapped read-only; this process's vdso;
the separate debug files found by build-id where perf looks for them.  The history parses
what is read here (history/userspace.py: the headers, the build-id, the symbol tables).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from functools import lru_cache

from ..history.userspace import ElfSymbols, elf_symbols_of

VDSO = "[vdso]"
DEBUG_DIRS = ("/usr/lib/debug",)


@lru_cache(maxsize=256)
def elf_symbols(path: str) -> ElfSymbols | None:
    """FUNC symbols of the file at `path` as it is now (a rebuilt binary gives other names;
    build ids would tell, which perf records in HEADER_BUILD_ID), from the separate debug
    file perf would read for it if there is one; "[vdso]" is this process's.  None when
    the file cannot be read or is no ELF64 file."""
    raw = elf_image(path)
    return None if raw is None else elf_symbols_of(raw, debug_files)


def elf_image(path: str):
    """The bytes of the ELF file at `path` (mapped read-only), or of this process's vdso
    for "[vdso]"; None when it cannot be read."""
    try:
        return own_vdso() if path == VDSO else _map(path)
    except (OSError, ValueError):   # ValueError: mmap of an empty file
        return None


def _map(path: str) -> mmap.mmap:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def own_vdso() -> bytes:
    """This process's vdso image: the kernel maps the same one into every process, so the
    recording's [vdso] samples resolve against it (as perf does)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(VDSO):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                with open("/proc/self/mem", "rb") as mem:
                    mem.seek(lo)
                    return mem.read(hi - lo)
    raise OSError("no [vdso] in /proc/self/maps")


def debug_candidates(bid: str) -> list[str]:
    """Where perf looks for a separate debug file by build-id, in its order: its own
    build-id cache (~/.debug/.build-id/xx/rest/debug), then /usr/lib/debug/.build-id/
    xx/rest.debug (where Debian's -dbg and -dbgsym packages put them)."""
    home = os.path.expanduser("~")
    return [os.path.join(home, ".debug", ".build-id", bid[:2], bid[2:], "debug")] + \
        [os.path.join(d, ".build-id", bid[:2], bid[2:] + ".debug") for d in DEBUG_DIRS]


def debug_files(bid: str) -> Iterator:
    """The images of the debug files for build-id `bid` that exist and can be mapped, in
    debug_candidates' order, each mapped only when the one before it was not taken."""
    for cand in debug_candidates(bid):
        if os.path.exists(cand):
            try:
                raw = _map(cand)
            except (OSError, ValueError):
                continue
            yield raw
