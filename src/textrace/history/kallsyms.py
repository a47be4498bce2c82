"""The kernel's static symbols (/proc/kallsyms text), sorted for bulk lookup.

A symbol's extent is taken to the next symbol's address, as perf does for kallsyms (which
carries no sizes).  Only text symbols (t/T/w/W) count: code, not data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXT_TYPES = set("tTwW")


@dataclass
class KernelSymbols:
    addrs: np.ndarray          # uint64, ascending
    names: list[str]
    modules: list[str | None]  # "[module]" suffix of kallsyms, None for vmlinux

    @classmethod
    def parse(cls, text: str) -> "KernelSymbols":
        rows = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in TEXT_TYPES:
                continue
            addr = int(parts[0], 16)
            if addr == 0:
                continue  # kptr_restrict hides addresses: nothing to resolve against
            module = parts[3].strip("[]") if len(parts) > 3 else None
            rows.append((addr, parts[2], module))
        rows.sort(key=lambda r: r[0])
        return cls(np.array([r[0] for r in rows], dtype=np.uint64), [r[1] for r in rows],
                   [r[2] for r in rows])

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
