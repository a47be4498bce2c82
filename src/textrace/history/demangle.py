"""Symbol names as perf report prints them: perf 6.1 demangles every user-space symbol
with libiberty's cplus_demangle() and no options (C++ names qualified, without their
parameters; static constructors as "global constructors keyed to ..."), and so does
textrace.demangler, with the same library.  A name@plt has its name part demangled; names
that do not demangle are printed as they are."""

from __future__ import annotations

from functools import lru_cache

from ..demangler import perf_demangle


@lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    """`name` as perf report shows it (demangled without parameters where it is mangled;
    a name@plt's name part)."""
    base, plt = (name[:-4], "@plt") if name.endswith("@plt") else (name, "")
    text = perf_demangle(base)
    return name if text is None else text + plt
