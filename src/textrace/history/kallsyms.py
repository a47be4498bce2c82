"""The kernel's static symbols (/proc/kallsyms text), sorted for bulk lookup.

A symbol's extent is taken to the next symbol's address, as perf does for kallsyms (which
carries no sizes).  Only text symbols (t/T/w/W) count: code, not data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# "ffffffff81000000 T _text" or "ffffffffc0a01000 t fn\t[module]"
_TEXT_SYMBOL = re.compile(r"^([0-9a-f]{16}) [tTwW] (\S+)(?:\t\[(\S+)\])?$", re.M)
_HEX = np.full(256, 0, dtype=np.uint64)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint64)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint64)


def _parse_hex16(digits: np.ndarray) -> np.ndarray:
    """Rows of 16 ASCII hex digits to uint64, all at once."""
    out = np.zeros(len(digits), dtype=np.uint64)
    for col in range(16):
        out = (out << np.uint64(4)) | _HEX[digits[:, col]]
    return out


@dataclass
class KernelSymbols:
    addrs: np.ndarray          # uint64, ascending
    names: list[str]
    modules: list[str | None]  # "[module]" suffix of kallsyms, None for vmlinux

    @classmethod
    def parse(cls, text: str) -> "KernelSymbols":
        rows = _TEXT_SYMBOL.findall(text)
        if not rows:
            return cls(np.zeros(0, dtype=np.uint64), [], [])
        hexes = np.frombuffer("".join(r[0] for r in rows).encode(), dtype=np.uint8)
        addrs = _parse_hex16(hexes.reshape(len(rows), 16))
        keep = np.flatnonzero(addrs != 0)  # kptr_restrict hides addresses as zeros
        order = keep[np.argsort(addrs[keep], kind="stable")]
        idx = order.tolist()
        return cls(addrs[order], [rows[i][1] for i in idx], [rows[i][2] or None for i in idx])

    @classmethod
    def from_proc(cls) -> "KernelSymbols":
        with open("/proc/kallsyms") as f:
            return cls.parse(f.read())

    def lookup(self, addrs: np.ndarray) -> np.ndarray:
        """Index of the symbol each address falls in (the last one at or below it), or -1
        below the first symbol."""
        return np.searchsorted(self.addrs, np.asarray(addrs, dtype=np.uint64),
                               side="right") - 1

    def symbol(self, addr: int) -> tuple[str, int] | None:
        """(name, offset) of `addr`, or None."""
        i = int(self.lookup(np.array([addr]))[0])
        if i < 0:
            return None
        return self.names[i], addr - int(self.addrs[i])

    def address_of(self, name: str) -> int | None:
        try:
            return int(self.addrs[self.names.index(name)])
        except ValueError:
            return None
