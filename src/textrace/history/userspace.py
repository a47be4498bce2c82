"""User-space code: per-process executable mappings over time, and ELF symbols.

A process's maps come from its MMAP2 (and MMAP) records; a forked child starts with its
parent's maps, as the kernel copies them and sends no MMAP2 for the child.  An address
resolves to the newest mapping covering it that was made at or before the sample's time.

ELF symbols are parsed from images a source hands in (bytes, or a file's mmap): the files,
the vdso and the separate debug files are opened by sources/elf_files.py, not here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from ..compiled import best_of_aliases
from .regions import sorted_unique

PROT_EXEC = 4


class Mapping(NamedTuple):
    """An executable mapping of a process from `time` on (ns): [start, end) of `filename`
    from file offset pgoff.  (A named tuple: a system-wide recording makes thousands, and
    a frozen dataclass sets each field through object.__setattr__.)"""

    time: int
    start: int
    end: int
    pgoff: int
    filename: str


@dataclass
class ProcessMaps:
    """Every process's executable mappings over time, from MMAP/MMAP2 and FORK records.

    Each mapping is kept once, numbered in the order made; a process holds the numbers of
    its mappings (a fork copies numbers): a system-wide recording's processes hold 50k
    mappings, forks' copies included, of some 6k made."""

    made: list[Mapping] = field(default_factory=list)
    numbers: dict[int, list[int]] = field(default_factory=dict)  # pid -> in time order

    @property
    def maps(self) -> dict[int, list[Mapping]]:
        """pid -> its mappings, in time order."""
        made = self.made
        return {pid: [made[i] for i in nums] for pid, nums in self.numbers.items()}

    def mmap(self, pid: int, m: Mapping) -> None:
        """A mapping of `pid` (records come in time order)."""
        self.numbers.setdefault(pid, []).append(len(self.made))
        self.made.append(m)

    def fork(self, parent: int, child: int) -> None:
        """A child starts with its parent's mappings (fork copies the address space)."""
        if parent != child and parent in self.numbers:
            self.numbers.setdefault(child, [])[:0] = self.numbers[parent]

    def lookup(self, pid: int, addrs: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Index into self.maps[pid] per address, -1 where unmapped: the last mapping in
        the list that covers the address and was made at or before the time."""
        nums = self.numbers.get(pid, ())
        if not nums or not len(addrs):
            return np.full(len(addrs), -1, dtype=np.int64)
        start, end, made = (a[nums] for a in _extents(self.made))
        return _last_covering(start, end, made, np.asarray(addrs, dtype=np.uint64),
                              np.asarray(times, dtype=np.int64))

    def lookup_all(self, pids: np.ndarray, addrs: np.ndarray,
                   times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`lookup` for samples of every process at once: an index per sample into the
        mappings of the processes sampled end to end (by pid, each process's in its
        order), -1 where unmapped; and the number in self.made of each of those mappings.
        A process's addresses are keyed by its rank among the pids in the top 16 bits, so
        that one search serves all: user addresses have 47 bits.  Mappings and samples
        above 2**48 ([vsyscall]; 5-level paging's upper user range) are looked up process
        by process."""
        n = len(addrs)
        out = np.full(n, -1, dtype=np.int64)
        # the processes that have mappings and samples, by pid
        owner = np.array(sorted(pid for pid, nums in self.numbers.items() if nums),
                         dtype=np.int64)
        rank = _index_in(owner, pids)
        known = rank >= 0
        used = np.flatnonzero(np.bincount(rank[known], minlength=len(owner)))
        renumber = np.zeros(len(owner), dtype=np.int64)
        renumber[used] = np.arange(len(used))
        owner, rank = owner[used], renumber[np.where(known, rank, 0)]
        lists = [self.numbers[pid] for pid in owner.tolist()]
        counts = list(map(len, lists))
        which = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=sum(counts))
        if not len(which) or not n:
            return out, which
        addrs = np.asarray(addrs, dtype=np.uint64)
        times = np.asarray(times, dtype=np.int64)
        start, end, made = (a[which] for a in _extents(self.made))
        first = np.concatenate([[0], np.cumsum(counts)])
        limit = np.uint64(1 << 48)
        low = end <= limit
        if len(owner) <= 1 << 16 and not (~low & (start < limit)).any():
            # mappings below 2**48 (all but [vsyscall]) with the samples there, in one go
            shift = np.uint64(48)
            lows = np.flatnonzero(low)
            map_rank = np.repeat(np.arange(len(owner), dtype=np.uint64), counts)[lows]
            sel = np.flatnonzero(known & (addrs < limit))
            keys = (rank[sel].astype(np.uint64) << shift) | addrs[sel]
            got = _last_covering((map_rank << shift) | start[lows],
                                 (map_rank << shift) | end[lows], made[lows], keys,
                                 times[sel])
            out[sel] = np.where(got >= 0, lows[np.maximum(got, 0)], -1)
            known &= addrs >= limit
        for r in np.flatnonzero(np.bincount(rank[known], minlength=len(owner))).tolist():
            sel = np.flatnonzero(known & (rank == r))
            lo, hi = int(first[r]), int(first[r + 1])
            got = _last_covering(start[lo:hi], end[lo:hi], made[lo:hi], addrs[sel],
                                 times[sel])
            out[sel] = np.where(got >= 0, got + lo, -1)
        return out, which


def _index_in(owner: np.ndarray, pids: np.ndarray) -> np.ndarray:
    """Each pid's index among the ascending `owner` pids, -1 where it is none of them:
    read from a table over their range (pids run to a few million at most), not searched
    (270k searches among a thousand pids took 3 ms)."""
    if not len(owner):
        return np.full(len(pids), -1, dtype=np.int64)
    lo, span = int(owner[0]), int(owner[-1]) - int(owner[0]) + 1
    table = np.full(span, -1, dtype=np.int32)
    table[owner - lo] = np.arange(len(owner), dtype=np.int32)
    at = np.asarray(pids, dtype=np.int64) - lo
    inside = (at >= 0) & (at < span)
    return np.where(inside, table[np.where(inside, at, 0)], -1).astype(np.int64)


_U64_MAX = (1 << 64) - 1


def _extents(maps: list[Mapping]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starts, ends (clipped to 64 bits) and times of mappings, as arrays (iterated in
    C)."""
    n = len(maps)
    return (np.fromiter(map(_START, maps), dtype=np.uint64, count=n),
            np.fromiter(map(min, map(_END, maps), repeat(_U64_MAX)), dtype=np.uint64,
                        count=n),
            np.fromiter(map(_TIME, maps), dtype=np.int64, count=n))


_START, _END, _TIME = attrgetter("start"), attrgetter("end"), attrgetter("time")


def _last_covering(start: np.ndarray, end: np.ndarray, made: np.ndarray, keys: np.ndarray,
                   times: np.ndarray) -> np.ndarray:
    """Per (key, time): the last interval [start, end) that holds the key and was made at
    or before the time, -1 if none.

    The starts and ends cut the keys into pieces each covered by the same intervals
    throughout; a piece most often has one, and then a sample needs only its time
    compared.  Where several overlap (a process re-mapping a range, a child's own mappings
    over those it inherited), the last one made by the sample's time is found by a binary
    search over the suffix minima of their times."""
    out = np.full(len(keys), -1, dtype=np.int64)
    bounds = sorted_unique(np.concatenate([start, end]))
    pieces = len(bounds) - 1
    if pieces < 1 or not len(keys):
        return out
    first = np.searchsorted(bounds, start)
    last = np.searchsorted(bounds, end)
    # how many intervals cover each piece, and (where one does) which: running sums of
    # +1/-1 (and +i/-i) at each interval's first and past its last piece
    index = np.arange(len(start), dtype=np.float64)
    cover = np.cumsum(np.bincount(first, minlength=pieces + 1)
                      - np.bincount(last, minlength=pieces + 1))[:pieces]
    only = np.rint(np.cumsum(np.bincount(first, weights=index, minlength=pieces + 1)
                             - np.bincount(last, weights=index, minlength=pieces + 1))
                   [:pieces]).astype(np.int64)
    piece = np.searchsorted(bounds, keys, side="right") - 1
    inside = (piece >= 0) & (piece < pieces)
    piece = np.where(inside, piece, 0)
    count = np.where(inside, cover[piece], 0)
    m = np.where(count == 1, only[piece], 0)
    ok = (count == 1) & (times >= made[m])
    out[ok] = m[ok]
    several = np.flatnonzero(count > 1)
    if len(several):
        for j in sorted_unique(piece[several]).tolist():
            sel = several[piece[several] == j]
            idx = np.flatnonzero((start <= bounds[j]) & (end >= bounds[j + 1]))
            suffix_min = np.minimum.accumulate(made[idx][::-1])[::-1]
            k = np.searchsorted(suffix_min, times[sel], side="right") - 1
            out[sel] = np.where(k >= 0, idx[np.maximum(k, 0)], -1)
    return out


@dataclass
class ElfSymbols:
    """FUNC symbols of one ELF file by virtual address, with its PT_LOAD segments to turn a
    file offset into an address.  Names are decoded from the string tables when asked:
    the symbol table's, and .dynstr for the name@plt entries (one object when they are
    one table: a C++ library's runs to megabytes, copied once)."""

    addrs: np.ndarray
    ends: np.ndarray
    name_offs: np.ndarray                 # into strtab, or plt_strtab for a PLT entry
    strtab: bytes
    segments: list[tuple[int, int, int]]  # (p_offset, p_vaddr, p_filesz)
    plt: np.ndarray | None = None         # True for the synthesized name@plt entries
    plt_strtab: bytes = b""

    def name(self, i: int) -> str:
        """Symbol i's name, @plt appended for a PLT entry."""
        return self.names([i])[0]

    def names(self, indexes) -> list[str]:
        """The names of the symbols `indexes` (a report names thousands: their offsets
        and kinds read as lists once, not an array element at a time)."""
        idx = np.asarray(indexes, dtype=np.int64)
        plts = self.plt[idx].tolist() if self.plt is not None else repeat(False)
        out = []
        for off, plt in zip(self.name_offs[idx].tolist(), plts):
            table = self.plt_strtab if plt else self.strtab
            end = table.find(b"\0", off)
            name = table[off:end if end >= 0 else len(table)].decode("utf-8", "replace")
            out.append(name + "@plt" if plt else name)
        return out

    def offset_to_vaddr(self, offs: np.ndarray) -> np.ndarray:
        """File offsets to the virtual addresses the program headers map them at."""
        out = offs.copy()
        for p_offset, p_vaddr, p_filesz in self.segments:
            inside = (offs >= p_offset) & (offs < p_offset + p_filesz)
            out[inside] = offs[inside] - p_offset + p_vaddr
        return out

    def lookup(self, vaddrs: np.ndarray) -> np.ndarray:
        """The symbol holding each virtual address, -1 where none does."""
        if not len(self.addrs):
            return np.full(len(vaddrs), -1, dtype=np.int64)
        i = np.searchsorted(self.addrs, vaddrs, side="right") - 1
        ok = i >= 0
        i = np.where(ok, i, 0)
        ok &= vaddrs < self.ends[i]
        return np.where(ok, i, -1)


ELF64_SYM = np.dtype([("st_name", "<u4"), ("st_info", "u1"), ("st_other", "u1"),
                      ("st_shndx", "<u2"), ("st_value", "<u8"), ("st_size", "<u8")])
ELF64_RELA = np.dtype([("r_offset", "<u8"), ("r_info", "<u8"), ("r_addend", "<i8")])
# Elf64_Ehdr after e_ident, Elf64_Shdr and Elf64_Phdr (include/uapi/linux/elf.h)
ELF64_EHDR = struct.Struct("<HHIQQQIHHHHHH")
ELF64_SHDR = np.dtype([("sh_name", "<u4"), ("sh_type", "<u4"), ("sh_flags", "<u8"),
                       ("sh_addr", "<u8"), ("sh_offset", "<u8"), ("sh_size", "<u8"),
                       ("sh_link", "<u4"), ("sh_info", "<u4"), ("sh_addralign", "<u8"),
                       ("sh_entsize", "<u8")])
ELF64_PHDR = np.dtype([("p_type", "<u4"), ("p_flags", "<u4"), ("p_offset", "<u8"),
                       ("p_vaddr", "<u8"), ("p_paddr", "<u8"), ("p_filesz", "<u8"),
                       ("p_memsz", "<u8"), ("p_align", "<u8")])
PT_LOAD = 1
SHT_NOBITS = 8
SHN_XINDEX = 0xFFFF
STT_FUNC = 2
STB_GLOBAL = 1
STB_WEAK = 2
STT_GNU_IFUNC = 10
PLT_ENTRY = 16


class _BadElf(Exception):
    pass


class _Elf:
    """The section and program headers of a little-endian ELF64 file, read as numpy
    records straight from its bytes (pyelftools parses each header through construct,
    which costs more than the symbol tables themselves)."""

    def __init__(self, raw):
        if len(raw) < 64 or raw[:4] != b"\x7fELF":
            raise _BadElf("not ELF")
        if raw[4] != 2 or raw[5] != 1:   # ELFCLASS64, ELFDATA2LSB
            raise _BadElf("not little-endian ELF64")
        self.raw = raw
        (_type, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
         shentsize, shnum, shstrndx) = ELF64_EHDR.unpack_from(raw, 16)
        self.phdrs = self._table(phoff, phnum, phentsize, ELF64_PHDR)
        self.shdrs = np.zeros(0, dtype=ELF64_SHDR)
        if shoff:
            first = self._table(shoff, 1, shentsize, ELF64_SHDR)
            if shnum == 0:          # SHN_LORESERVE sections or more: the count is here
                shnum = int(first["sh_size"][0])
            if shstrndx == SHN_XINDEX:
                shstrndx = int(first["sh_link"][0])
            self.shdrs = self._table(shoff, shnum, shentsize, ELF64_SHDR)
        self.names: dict[str, int] = {}
        self.strings: dict[int, bytes] = {}
        if len(self.shdrs) and shstrndx < len(self.shdrs):
            # decoded whole, each name a slice of it (latin-1: a character per byte)
            strtab = self.data(shstrndx).decode("latin-1")
            find, names = strtab.find, self.names
            for i, off in enumerate(self.shdrs["sh_name"].tolist()):
                end = find("\0", off)
                names.setdefault(strtab[off:end if end >= 0 else len(strtab)], i)

    def _table(self, offset: int, count: int, entsize: int, dtype) -> np.ndarray:
        if not count:
            return np.zeros(0, dtype=dtype)
        if entsize != dtype.itemsize or offset + count * entsize > len(self.raw):
            raise _BadElf("header table outside the file")
        return np.frombuffer(self.raw, dtype, count=count, offset=offset)

    def section(self, name: str) -> int | None:
        return self.names.get(name)

    def _extent(self, i: int) -> tuple[int, int]:
        _name, sh_type, _flags, _addr, off, size = self.shdrs.item(i)[:6]
        if sh_type == SHT_NOBITS:
            return 0, 0
        if off + size > len(self.raw):
            raise _BadElf("section outside the file")
        return off, size

    def data(self, i: int):
        """Section i's bytes (empty for NOBITS)."""
        off, size = self._extent(i)
        return self.raw[off:off + size]

    def string_table(self, i: int) -> bytes:
        """Section i's bytes, copied once however often asked for (.dynstr serves .dynsym
        and the PLT entries)."""
        if i not in self.strings:
            self.strings[i] = bytes(self.data(i))
        return self.strings[i]

    def array(self, i: int, dtype) -> np.ndarray:
        """Section i as records of `dtype` (a trailing partial record left out)."""
        off, size = self._extent(i)
        return np.frombuffer(self.raw, dtype, count=size // dtype.itemsize, offset=off)


def parse_elf(raw) -> _Elf | None:
    """The headers of the ELF image `raw` (bytes, or the mmap of a file a source opened);
    None if it is not a little-endian ELF64 or its header tables fall outside it."""
    try:
        return _Elf(raw)
    except (ValueError, _BadElf, struct.error):
        return None


def build_id(elf: _Elf) -> str | None:
    """The file's GNU build-id (.note.gnu.build-id) in hex, None without one."""
    sec = elf.section(".note.gnu.build-id")
    if sec is None:
        return None
    note = bytes(elf.data(sec))
    pos = 0
    while pos + 12 <= len(note):
        namesz, descsz, kind = struct.unpack_from("<III", note, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        if kind == 3 and note[name_at:name_at + namesz].rstrip(b"\0") == b"GNU":
            desc = note[desc_at:desc_at + descsz]
            return desc.hex() if len(desc) == descsz and descsz else None
        pos = desc_at + ((descsz + 3) & ~3)
    return None


def _symbol_source(elf: _Elf, debug_files: Callable[[str], Iterable]) -> _Elf:
    """The ELF whose .symtab perf reads for the file: the first separate debug file
    `debug_files(build_id)` gives that has a .symtab, if the file has a build-id; else the
    file itself."""
    bid = build_id(elf)
    if bid:
        for raw in debug_files(bid):
            dbg = parse_elf(raw)
            if dbg is not None and dbg.section(".symtab") is not None:
                return dbg
    return elf


def _no_debug_files(_build_id: str) -> tuple:
    return ()


def elf_symbols_of(raw, debug_files: Callable[[str], Iterable] = _no_debug_files
                   ) -> ElfSymbols | None:
    """FUNC symbols of the ELF image `raw` (bytes or a file's mmap), as perf loads them:
    the .symtab of the separate debug file (by build-id) or of the file, else its .dynsym;
    plus name@plt entries; None if `raw` is no ELF64 file.  `debug_files(build_id)` gives
    the images of the debug files for a build-id, in the order perf looks for them (the
    history opens no file: sources/elf_files.py does).  The symbol tables are read whole
    as numpy records, names only when asked."""
    elf = parse_elf(raw)
    if elf is None:
        return None
    try:
        load = elf.phdrs[elf.phdrs["p_type"] == PT_LOAD]
        segments = list(zip(load["p_offset"].tolist(), load["p_vaddr"].tolist(),
                            load["p_filesz"].tolist()))
        tables = []
        src = _symbol_source(elf, debug_files)
        strtab = b""
        for secname in (".symtab", ".dynsym"):
            sec = src.section(secname)
            if sec is None or int(src.shdrs["sh_entsize"][sec]) != ELF64_SYM.itemsize:
                continue
            syms = src.array(sec, ELF64_SYM)
            kind = syms["st_info"] & 0xF
            syms = syms[((kind == STT_FUNC) | (kind == STT_GNU_IFUNC))
                        & (syms["st_value"] != 0) & (syms["st_shndx"] != 0)
                        & (syms["st_name"] != 0)]
            strtab = src.string_table(_link(src, sec))
            tables.append((syms["st_value"], syms["st_size"], syms["st_name"],
                           syms["st_info"] >> 4, strtab))
            break
        plt = _plt_symbols(elf)
    except (_BadElf, ValueError, IndexError, struct.error):
        return None
    n_plt = 0
    plt_strtab = b""
    if plt is not None:
        values, sizes, name_offs, plt_strtab = plt
        tables.append((values, sizes, name_offs,
                       np.full(len(values), STB_GLOBAL, dtype=np.uint8), plt_strtab))
        n_plt = len(values)
    if not tables:
        return ElfSymbols(np.zeros(0, np.uint64), np.zeros(0, np.uint64),
                          np.zeros(0, np.int64), b"", segments)
    values = np.concatenate([t[0] for t in tables])
    sizes = np.concatenate([t[1] for t in tables])
    binds = np.concatenate([t[3] for t in tables])
    # each name offset into its own string table (one past its end: offset 0)
    names = np.concatenate([np.where(name_offs < len(blob), name_offs, 0)
                            for _v, _s, name_offs, _b, blob in tables]).astype(np.int64)
    in_plt = np.arange(len(values)) >= len(values) - n_plt
    order = _best_of_aliases(values, sizes, binds, names, in_plt.view(np.uint8),
                             (strtab, plt_strtab))
    addrs, sized = values[order], sizes[order]
    # a symbol without a size reaches the next one, as perf's symbols__fixup_end has it
    # (the last one to the end of the page after its own)
    after = np.append(addrs[1:], (addrs[-1:] | np.uint64(0xFFF)) + np.uint64(1))
    ends = np.where(sized == 0, np.maximum(after, addrs + np.uint64(1)), addrs + sized)
    return ElfSymbols(addrs, ends, names[order], strtab, segments,
                      plt=in_plt[order] if n_plt else None, plt_strtab=plt_strtab)


def _best_of_aliases(values, sizes, binds, names, table, strtabs) -> np.ndarray:
    """Indices of the symbols kept, one per address, by ascending address: among aliases
    the one perf's choose_best_symbol keeps (a sized one, then not WEAK, then GLOBAL, then
    fewer leading underscores, then the longer name, then the first: compiled, a
    tournament per address).  Symbol i's name is at names[i] in strtabs[table[i]]."""
    order = _stable_order(values)
    by_addr = values[order]
    if not (by_addr[1:] == by_addr[:-1]).any():
        return order
    kept = np.empty(len(order), dtype=np.int64)
    count = best_of_aliases(order, np.ascontiguousarray(values, dtype=np.uint64),
                            np.ascontiguousarray(sizes, dtype=np.uint64),
                            np.ascontiguousarray(binds, dtype=np.uint8),
                            np.ascontiguousarray(names, dtype=np.int64),
                            np.ascontiguousarray(table, dtype=np.uint8), *strtabs, kept)
    return kept[:count]


def _stable_order(values: np.ndarray) -> np.ndarray:
    """np.argsort(values, kind="stable") of unsigned values: where each value has room
    for its index in the low bits, one plain sort of those keys (numpy's stable sort of
    64-bit keys, a merge sort, takes half as long again)."""
    n = len(values)
    bits = max(n - 1, 1).bit_length()
    if not n or int(values.max()) >> (64 - bits):
        return np.argsort(values, kind="stable")
    keys = np.asarray(values, dtype=np.uint64) << np.uint64(bits)
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64((1 << bits) - 1)).astype(np.int64)


def _link(elf: _Elf, sec: int) -> int:
    link = int(elf.shdrs["sh_link"][sec])
    if link >= len(elf.shdrs):
        raise _BadElf("sh_link names no section")
    return link


def _plt_symbols(elf: _Elf):
    """`name@plt` symbols, one per .rela.plt relocation, as perf synthesizes them: entry i
    sits in .plt.sec, or in .plt after its first (resolver) entry.  As (values, sizes,
    name offsets into .dynstr, .dynstr); the names get "@plt" when asked for."""
    rela, dynsym = elf.section(".rela.plt"), elf.section(".dynsym")
    plt = elf.section(".plt.sec")
    in_sec = plt is not None
    if plt is None:
        plt = elf.section(".plt")
    if rela is None or dynsym is None or plt is None:
        return None
    relocs = elf.array(rela, ELF64_RELA)
    syms = elf.array(dynsym, ELF64_SYM)
    first = int(elf.shdrs["sh_addr"][plt]) + (0 if in_sec else PLT_ENTRY)
    idx = (relocs["r_info"] >> np.uint64(32)).astype(np.int64)
    entry = np.flatnonzero(idx < len(syms))
    values = (first + PLT_ENTRY * entry).astype(np.uint64)
    sizes = np.full(len(entry), PLT_ENTRY, dtype=np.uint64)
    return values, sizes, syms["st_name"][idx[entry]], elf.string_table(_link(elf, dynsym))


def dso_name(filename: str) -> str:
    """The name perf's report shows for a mapping: a file's basename, [vdso] and the like as they
    are."""
    return os.path.basename(filename) if filename.startswith("/") else filename
