"""The kernel's static symbols (/proc/kallsyms text, read by sources/kallsyms.py or kept
in a recording), sorted for bulk lookup.

A symbol's extent is taken to the next symbol's address, as perf does for kallsyms (which
carries no sizes).  Only text symbols (t/T/w/W) count: code, not data.

/proc/kallsyms has 100k+ lines (122k on 6.18 with a few modules) and a report needs the
names of a few thousand of them, so the text is parsed with numpy on its raw bytes and
names are decoded only when asked for (`name(i)`); `names` and `modules` are the full
lists, decoded once on first use.
"""

from __future__ import annotations

import numpy as np

_IS_TEXT = np.zeros(256, dtype=bool)
_IS_TEXT[np.frombuffer(b"tTwW", np.uint8)] = True
_NL, _TAB, _SPACE = 10, 9, 32

# Eight ASCII hex digits in a little-endian u64, each byte on its own (SWAR): a digit's
# value is its low nibble, plus 9 for the letters (bit 6 set).
_LOW = np.uint64(0x0F0F0F0F0F0F0F0F)
_HIGH = np.uint64(0xF0F0F0F0F0F0F0F0)
_BIT6 = np.uint64(0x0101010101010101)


def _u64(v: int) -> np.uint64:
    return np.uint64(v)


def _hex8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u64 words each holding 8 ASCII characters to (value, whether all 8 were lowercase
    hex digits)."""
    nib = (x & _LOW) + _u64(9) * ((x >> _u64(6)) & _BIT6)
    # valid iff every byte is a nibble that spells the character back
    letter = ((nib + _u64(0x0606060606060606)) & _u64(0x1010101010101010)) >> _u64(4)
    ok = ((nib & _HIGH) == 0) & (nib + _u64(0x3030303030303030) + _u64(0x27) * letter == x)
    # pairs of nibbles to bytes, bytes to halves, halves to the value (first digit first)
    v = ((nib << _u64(4)) | (nib >> _u64(8))) & _u64(0x00FF00FF00FF00FF)
    v = ((v << _u64(8)) | (v >> _u64(16))) & _u64(0x0000FFFF0000FFFF)
    v = ((v << _u64(16)) | (v >> _u64(32))) & _u64(0xFFFFFFFF)
    return v, ok


def _hex16_at(raw: bytes, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 16 hex digits at each byte offset in `at` as uint64, and which were valid."""
    if len(raw) < 16:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool)
    # every byte offset as the start of a u64 (unaligned): two loads per address
    words = np.ndarray(shape=(len(raw) - 7,), dtype="<u8", buffer=raw, strides=(1,))
    hi, ok_hi = _hex8(words[at])
    lo, ok_lo = _hex8(words[at + 8])
    return (hi << _u64(32)) | lo, ok_hi & ok_lo


class KernelSymbols:
    """Text symbols by ascending address: `addrs` (uint64), with `name(i)` and `module(i)`
    (the "[module]" suffix of kallsyms; None for vmlinux) for each."""

    def __init__(self, addrs: np.ndarray, names: list[str] | None = None,
                 modules: list[str | None] | None = None, *, _blob: bytes = b"",
                 _spans: np.ndarray | None = None):
        self.addrs = addrs
        self._names = names
        self._modules = modules if modules is not None or names is None else \
            [None] * len(names)
        # lazily decoded form: (name_start, name_end, module_start, module_end) rows into
        # _blob per symbol, module_start -1 for vmlinux
        self._blob = _blob
        self._spans = _spans

    def __len__(self) -> int:
        return len(self.addrs)

    @classmethod
    def parse(cls, text: str | bytes) -> "KernelSymbols":
        """Lines "ffffffff81000000 T _text" or "ffffffffc0a01000 t fn\\t[module]"; others
        are skipped, and so are addresses hidden as zeros (kptr_restrict)."""
        raw = text.encode() if isinstance(text, str) else text
        if len(raw) and raw[-1:] != b"\n":
            raw = bytes(raw) + b"\n"
        buf = np.frombuffer(raw, dtype=np.uint8)
        hits = np.empty(len(buf), dtype=bool)   # one scratch mask for the three scans
        ends = np.flatnonzero(np.equal(buf, _NL, out=hits))
        starts = np.zeros_like(ends)
        starts[1:] = ends[:-1] + 1
        # "<16 hex> <type> <name>[\t[<module>]]": fixed columns up to the name
        lines = np.flatnonzero(ends - starts >= 20)
        at = starts[lines]
        fixed = (buf[at + 16] == _SPACE) & (buf[at + 18] == _SPACE)
        # a name has no blanks: a line holds two spaces, around the type (counted per line
        # only when the file as a whole has more than that)
        if len(lines) < len(ends) or not fixed.all() or \
                np.count_nonzero(np.equal(buf, _SPACE, out=hits)) != 2 * len(ends):
            spaces = np.flatnonzero(np.equal(buf, _SPACE, out=hits))
            blanks = np.bincount(np.searchsorted(ends, spaces), minlength=len(ends) + 1)
            fixed &= blanks[lines] == 2
        keep = fixed & _IS_TEXT[buf[at + 17]]
        lines, at = lines[keep], at[keep]
        addrs, ok = _hex16_at(raw, at)
        # kptr_restrict shows every address as zeros: nothing to resolve against
        ok &= addrs != 0
        # a tab, if any, opens "[module]", which runs to the end of the line
        name_end = ends[lines]
        mod_start = np.full(len(lines), -1, dtype=np.int64)
        mod_end = np.full(len(lines), -1, dtype=np.int64)
        tabs = np.flatnonzero(np.equal(buf, _TAB, out=hits))
        del hits
        if len(tabs):
            tab_line = np.searchsorted(ends, tabs)
            first = np.full(len(ends), -1, dtype=np.int64)
            first[tab_line[::-1]] = tabs[::-1]
            several = np.zeros(len(ends), dtype=bool)
            several[tab_line[1:][tab_line[1:] == tab_line[:-1]]] = True
            t = first[lines]
            has = np.flatnonzero(t >= 0)
            th, eh = t[has], name_end[has]
            ok[has] &= ~several[lines[has]] & (eh - th >= 4) & (buf[th + 1] == ord("[")) \
                & (buf[eh - 1] == ord("]"))
            mod_start[has] = th + 2
            mod_end[has] = eh - 1
            name_end[has] = th
        ok &= name_end > at + 19
        keep = np.flatnonzero(ok)
        order = keep[np.argsort(addrs[keep], kind="stable")]
        spans = np.stack([at[order] + 19, name_end[order], mod_start[order], mod_end[order]],
                         axis=1)
        return cls(addrs[order], _blob=raw, _spans=spans)

    # --- names, decoded when asked for ---------------------------------------------------
    def name(self, i: int) -> str:
        """Symbol i's name, decoded alone (a report names a few hundred of 100k+)."""
        if self._names is not None:
            return self._names[i]
        s, e = int(self._spans[i, 0]), int(self._spans[i, 1])
        return self._blob[s:e].decode("utf-8", "surrogateescape")

    def module(self, i: int) -> str | None:
        """Symbol i's module, None for the kernel image's own symbols."""
        if self._modules is not None:
            return self._modules[i]
        s, e = int(self._spans[i, 2]), int(self._spans[i, 3])
        return None if s < 0 else self._blob[s:e].decode("utf-8", "surrogateescape")

    @property
    def names(self) -> list[str]:
        """Every symbol's name, decoded once on first use."""
        if self._names is None:
            blob = self._blob
            self._names = [blob[s:e].decode("utf-8", "surrogateescape")
                           for s, e in self._spans[:, :2].tolist()]
        return self._names

    @property
    def modules(self) -> list[str | None]:
        """Every symbol's module (None for the kernel's own), decoded once on first use."""
        if self._modules is None:
            blob, cache = self._blob, {}
            self._modules = [None if s < 0 else cache.setdefault(blob[s:e], blob[s:e].decode(
                "utf-8", "surrogateescape")) for s, e in self._spans[:, 2:].tolist()]
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
