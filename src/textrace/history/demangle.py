"""C++ names as perf report prints them: demangled by the system libstdc++'s
__cxa_demangle, then cut to what perf shows by default (libiberty without DMGL_PARAMS):
the qualified name only, without the parameter list, the function's cv/ref qualifiers,
a template function's return type or a clone suffix ([clone .cold]).  Names that do not
demangle are returned as they are."""

from __future__ import annotations

import re
from functools import lru_cache

_lib = None


def _demangler():
    """(__cxa_demangle, free), loaded on the first C++ name (ctypes is imported then: a
    report of C code never pays for it); False where libstdc++ is missing."""
    global _lib
    if _lib is None:
        import ctypes
        import ctypes.util
        try:
            cxx = ctypes.CDLL("libstdc++.so.6")
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
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


def _depth_map(s: str) -> list[int]:
    """Nesting depth of each character of `s` (the brackets of operator names such as
    operator<< or operator() not counted); the text between brackets is taken a run at
    a time (names run to thousands of characters)."""
    out: list[int] = []
    depth = pos = 0
    while (m := _TOKEN.search(s, pos)) is not None:
        i = m.start()
        out.extend([depth] * (i - pos))
        if s[i] == "o":                          # operator<<, operator(), ...
            k = i + 8
            for tok in _OPERATORS:
                if s.startswith(tok, k):
                    k += len(tok)
                    break
            out.extend([depth] * (k - i))
            pos = k
            continue
        if s[i] in _OPEN:
            out.append(depth)
            depth += 1
        else:
            depth = max(depth - 1, 0)
            out.append(depth)
        pos = i + 1
    out.extend([depth] * (len(s) - pos))
    return out


def perf_name(full: str) -> str:
    """perf's default (no parameters) form of a __cxa_demangle text."""
    s = full
    while s.endswith("]"):                       # [clone .cold], [clone .isra.0] ...
        at = s.rfind(" [clone ")
        if at < 0:
            break
        s = s[:at]
    d = _depth_map(s)
    # the top-level parameter list: the last ")" at depth 0 and its "("
    end = len(s)
    close = -1
    for i in range(end - 1, -1, -1):
        if s[i] == ")" and d[i] == 0:
            close = i
            break
        if d[i] == 0 and s[i] in "(<>[]{}":
            break
    if close >= 0:
        depth = 0
        for i in range(close, -1, -1):
            if d[i] == 0 and s[i] == "(":
                s = s[:i]
                break
    d = _depth_map(s)
    # a return type (template functions): everything up to the last space at depth 0
    # that does not belong to an operator name
    op = -1
    i = s.find("operator")
    while i >= 0:
        if d[i] == 0 and (i == 0 or s[i - 1] in ": "):
            op = i
        i = s.find("operator", i + 1)
    limit = op if op >= 0 else len(s)
    cut = -1
    for i in range(limit - 1, -1, -1):
        if s[i] == " " and d[i] == 0:
            cut = i
            break
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
