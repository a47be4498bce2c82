"""The kernel's static symbols (/proc/kallsyms text, read by sources/kallsyms.py or kept
in a recording), sorted for bulk lookup.

A symbol's extent is taken to the next symbol's address, as perf does for kallsyms (which
carries no sizes).  Only text symbols (t/T/w/W) count: code, not data.

/proc/kallsyms has 100k+ lines (122k on 6.18 with a few modules) and a report needs the
names of a few thousand of them, so the text is split into addresses and name spans
(kallsyms_text) and names are decoded only when asked for (`name(i)`); `names` and
`modules` are the full lists, decoded once on first use.
"""

from __future__ import annotations

import numpy as np

from .kallsyms_text import symbol_lines


class KernelSymbols:
    """Text symbols by ascending address: `addrs` (uint64), with `name(i)` and `module(i)`
    (the "[module]" suffix of kallsyms; None for vmlinux) for each."""

    def __init__(self, addrs: np.ndarray, names: list[str] | None = None,
                 modules: list[str | None] | None = None, *, _blob=b"",
                 _spans: np.ndarray | None = None):
        self.addrs = addrs
        self._names = names
        self._modules = modules if modules is not None or names is None else \
            [None] * len(names)
        # lazily decoded form: (name_start, name_end, module_start, module_end) rows into
        # _blob (bytes, or a view of the kallsyms child's memfd) per symbol, module_start
        # -1 for vmlinux
        self._blob = _blob
        self._spans = _spans

    def __len__(self) -> int:
        return len(self.addrs)

    @classmethod
    def parse(cls, text: str | bytes) -> "KernelSymbols":
        """Lines "ffffffff81000000 T _text" or "ffffffffc0a01000 t fn\\t[module]"; others
        are skipped, and so are addresses hidden as zeros (kptr_restrict)."""
        raw = text.encode() if isinstance(text, str) else bytes(text)
        return cls.from_lines(raw, *symbol_lines(raw)[1:])

    @classmethod
    def from_lines(cls, text, addrs, spans) -> "KernelSymbols":
        """The symbols of kallsyms_text.symbol_lines(text) (its text, addresses and spans,
        as buffers, kept as they are), sorted by address (stably: aliases keep the file's
        order).  /proc/kallsyms is in address order already: then nothing is moved, and
        only the names asked for are ever read (a child's memfd: its pages mapped in
        only there)."""
        addrs = np.frombuffer(addrs, dtype="<u8")
        spans = np.frombuffer(spans, dtype="<i8").reshape(-1, 4)
        if len(addrs) > 1 and not (addrs[1:] >= addrs[:-1]).all():
            order = np.argsort(addrs, kind="stable")
            addrs, spans = addrs[order], spans[order]
        return cls(addrs, _blob=text, _spans=spans)

    # --- names, decoded when asked for ---------------------------------------------------
    def name(self, i: int) -> str:
        """Symbol i's name, decoded alone (a report names a few hundred of 100k+)."""
        if self._names is not None:
            return self._names[i]
        s, e = int(self._spans[i, 0]), int(self._spans[i, 1])
        return str(self._blob[s:e], "utf-8", "surrogateescape")

    def module(self, i: int) -> str | None:
        """Symbol i's module, None for the kernel image's own symbols."""
        if self._modules is not None:
            return self._modules[i]
        s, e = int(self._spans[i, 2]), int(self._spans[i, 3])
        return None if s < 0 else str(self._blob[s:e], "utf-8", "surrogateescape")

    @property
    def names(self) -> list[str]:
        """Every symbol's name, decoded once on first use."""
        if self._names is None:
            blob = self._blob
            self._names = [str(blob[s:e], "utf-8", "surrogateescape")
                           for s, e in self._spans[:, :2].tolist()]
        return self._names

    @property
    def modules(self) -> list[str | None]:
        """Every symbol's module (None for the kernel's own), decoded once on first use."""
        if self._modules is None:
            blob, cache = self._blob, {}
            self._modules = [None if s < 0 else cache.setdefault(bytes(blob[s:e]), str(
                blob[s:e], "utf-8", "surrogateescape")) for s, e in self._spans[:, 2:].tolist()]
        return self._modules

    # --- lookup ---------------------------------------------------------------------------
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
        return self.name(i), addr - int(self.addrs[i])

    def address_of(self, name: str) -> int | None:
        """Address of the lowest text symbol called `name`, or None."""
        if self._names is not None:
            try:
                return int(self.addrs[self._names.index(name)])
            except ValueError:
                return None
        want = name.encode("utf-8", "surrogateescape")
        blob = np.frombuffer(self._blob, dtype=np.uint8)
        first = self._spans[:, 0]
        # names of that length, then narrowed byte by byte
        idx = np.flatnonzero(self._spans[:, 1] - first == len(want))
        for k, byte in enumerate(want):
            if not len(idx):
                break
            idx = idx[blob[first[idx] + k] == byte]
        return int(self.addrs[idx[0]]) if len(idx) else None
