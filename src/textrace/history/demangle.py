"""C++ names as perf report prints them: demangled by the system libstdc++'s
__cxa_demangle, then cut to what perf shows by default (libiberty without DMGL_PARAMS):
the qualified name only, without the parameter list, the function's cv/ref qualifiers,
a template function's return type or a clone suffix ([clone .cold]).  Names that do not
demangle are returned as they are."""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import lru_cache

_lib = None


def _demangler():
    """(__cxa_demangle, free), loaded on the first C++ name (ctypes is imported then: a
    report of C code never pays for it); False where libstdc++ is missing."""
    global _lib
    if _lib is None:
        import ctypes
        try:
            cxx = ctypes.CDLL("libstdc++.so.6")
            # the process's own symbols hold libc's free: no find_library (which runs
            # ldconfig -p in a child)
            libc = ctypes.CDLL(None)
            fn = cxx.__cxa_demangle
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.POINTER(ctypes.c_int)]
            libc.free.argtypes = [ctypes.c_void_p]
            libc.free.restype = None
            _lib = (fn, libc.free)
        except (OSError, AttributeError):
            _lib = False
    return _lib


def cxa_demangle(name: str) -> str | None:
    """__cxa_demangle's full text for `name`, None if it does not demangle."""
    lib = _demangler()
    if not lib:
        return None
    import ctypes
    fn, free = lib
    status = ctypes.c_int(0)
    out = fn(name.encode("utf-8", "surrogateescape"), None, None, ctypes.byref(status))
    if not out:
        return None
    try:
        if status.value != 0:
            return None
        return ctypes.string_at(out).decode("utf-8", "replace")
    finally:
        free(out)


_OPEN = {"(": ")", "<": ">", "[": "]", "{": "}"}
_CLOSE = {")": "(", ">": "<", "]": "[", "}": "{"}
_OPERATORS = sorted(["()", "[]", "<=>", "<<=", ">>=", "->*", "<<", ">>", "<=", ">=", "->",
                     "<", ">", "==", "!=", "&&", "||", "++", "--", "+=", "-=", "*=", "/=",
                     "%=", "&=", "|=", "^=", "+", "-", "*", "/", "%", "^", "&", "|", "~",
                     "!", "=", ","], key=len, reverse=True)


# a bracket, or an operator name's start ("operator" not inside a longer identifier)
_TOKEN = re.compile(r"[()<>\[\]{}]|\boperator")


def _brackets(s: str) -> tuple[list[int], list[int], list[int], list[int]]:
    """The nesting of `s`, taken at its brackets only (names run to thousands of
    characters, their brackets to a few dozen): (at, depth, cuts, after): each bracket
    character's position and depth (an opening one outside what it opens, a closing one
    outside what it closes; those of operator names such as operator<< or operator() not
    counted, at the depth around them), and from position cuts[j] on, up to the next cut,
    every other character is at depth after[j]."""
    at: list[int] = []
    depth_of: list[int] = []
    cuts, after = [0], [0]
    depth = pos = 0
    while (m := _TOKEN.search(s, pos)) is not None:
        i = m.start()
        if s[i] == "o":                          # operator<<, operator(), ...
            k = i + 8
            for tok in _OPERATORS:
                if s.startswith(tok, k):
                    k += len(tok)
                    break
            for j in range(i + 8, k):
                if s[j] in _BRACKET_CHARS:
                    at.append(j)
                    depth_of.append(depth)
            pos = k
            continue
        if s[i] in _OPEN:
            at.append(i)
            depth_of.append(depth)
            depth += 1
        else:
            depth = max(depth - 1, 0)
            at.append(i)
            depth_of.append(depth)
        cuts.append(i + 1)
        after.append(depth)
        pos = i + 1
    return at, depth_of, cuts, after


_BRACKET_CHARS = frozenset("()<>[]{}")


def perf_name(full: str) -> str:
    """perf's default (no parameters) form of a __cxa_demangle text."""
    s = full
    while s.endswith("]"):                       # [clone .cold], [clone .isra.0] ...
        at = s.rfind(" [clone ")
        if at < 0:
            break
        s = s[:at]
    at, depth_of, cuts, after = _brackets(s)
    # the top-level parameter list: the last ")" at depth 0 (no other bracket at depth 0
    # after it) and the "(" before it at depth 0
    close = -1
    for k in range(len(at) - 1, -1, -1):
        if depth_of[k] == 0:
            if s[at[k]] == ")":
                close = k
            break
    if close >= 0:
        for k in range(close, -1, -1):
            if depth_of[k] == 0 and s[at[k]] == "(":
                # the nesting of a prefix is the prefix of the nesting
                s = s[:at[k]]
                break

    def depth_at(i: int) -> int:
        """Depth of the character at i, not a bracket."""
        return after[bisect_right(cuts, i) - 1]
    # a return type (template functions): everything up to the last space at depth 0
    # that does not belong to an operator name
    op = -1
    i = s.find("operator")
    while i >= 0:
        if (i == 0 or s[i - 1] in ": ") and depth_at(i) == 0:
            op = i
        i = s.find("operator", i + 1)
    limit = op if op >= 0 else len(s)
    cut = s.rfind(" ", 0, limit)
    while cut >= 0 and depth_at(cut) != 0:
        cut = s.rfind(" ", 0, cut)
    return s[cut + 1:] if cut >= 0 else s


@lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    """`name` as perf report shows it: C++ (_Z...) names demangled without parameters,
    a name@plt's name part demangled, others as they are."""
    base, plt = (name[:-4], "@plt") if name.endswith("@plt") else (name, "")
    if not base.startswith("_Z"):
        return name
    full = cxa_demangle(base)
    if full is None:
        return name
    return perf_name(full) + plt
