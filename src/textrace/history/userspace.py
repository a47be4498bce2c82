"""User-space code: per-process executable mappings over time, and ELF symbols.

A process's maps come from its MMAP2 (and MMAP) records; a forked child starts with its
parent's maps, as the kernel copies them and sends no MMAP2 for the child.  An address
resolves to the newest mapping covering it that was made at or before the sample's time.
"""

from __future__ import annotations

import io
import mmap
import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

PROT_EXEC = 4


@dataclass(frozen=True)
class Mapping:
    time: int
    start: int
    end: int
    pgoff: int
    filename: str


@dataclass
class ProcessMaps:
    maps: dict[int, list[Mapping]] = field(default_factory=dict)  # pid -> in time order

    def mmap(self, pid: int, m: Mapping) -> None:
        self.maps.setdefault(pid, []).append(m)

    def fork(self, parent: int, child: int) -> None:
        if parent != child and parent in self.maps:
            self.maps.setdefault(child, [])[:0] = self.maps[parent]

    def lookup(self, pid: int, addrs: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Index into self.maps[pid] per address, -1 where unmapped."""
        out = np.full(len(addrs), -1, dtype=np.int64)
        for i, m in enumerate(self.maps.get(pid, ())):
            hit = (addrs >= m.start) & (addrs < m.end) & (times >= m.time)
            out[hit] = i
        return out


@dataclass
class ElfSymbols:
    """FUNC symbols of one ELF file by virtual address, with its PT_LOAD segments to turn a
    file offset into an address.  Names are decoded from the string table when asked."""

    addrs: np.ndarray
    ends: np.ndarray
    name_offs: np.ndarray
    strtab: bytes
    segments: list[tuple[int, int, int]]  # (p_offset, p_vaddr, p_filesz)

    def name(self, i: int) -> str:
        off = int(self.name_offs[i])
        end = self.strtab.find(b"\0", off)
        return self.strtab[off:end if end >= 0 else len(self.strtab)].decode("utf-8",
                                                                              "replace")

    def offset_to_vaddr(self, offs: np.ndarray) -> np.ndarray:
        out = offs.copy()
        for p_offset, p_vaddr, p_filesz in self.segments:
            inside = (offs >= p_offset) & (offs < p_offset + p_filesz)
            out[inside] = offs[inside] - p_offset + p_vaddr
        return out

    def lookup(self, vaddrs: np.ndarray) -> np.ndarray:
        if not len(self.addrs):
            return np.full(len(vaddrs), -1, dtype=np.int64)
        i = np.searchsorted(self.addrs, vaddrs, side="right") - 1
        ok = i >= 0
        i = np.where(ok, i, 0)
        ok &= vaddrs < self.ends[i]
        return np.where(ok, i, -1)


ELF64_SYM = np.dtype([("st_name", "<u4"), ("st_info", "u1"), ("st_other", "u1"),
                      ("st_shndx", "<u2"), ("st_value", "<u8"), ("st_size", "<u8")])
STT_FUNC = 2
STB_GLOBAL = 1


@lru_cache(maxsize=256)
def elf_symbols(path: str) -> ElfSymbols | None:
    """FUNC symbols of the file at `path` as it is now (a rebuilt binary gives other names;
    build ids would tell, which perf records in HEADER_BUILD_ID).  pyelftools finds the
    sections; the symbol tables are read whole as numpy records, names only when asked."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        if path == "[vdso]":
            raw = _own_vdso()
        else:
            with open(path, "rb") as f:
                raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    try:
        elf = ELFFile(io.BytesIO(raw) if isinstance(raw, bytes) else _MmapStream(raw))
        if elf.elfclass != 64 or not elf.little_endian:
            return None
        segments = [(s["p_offset"], s["p_vaddr"], s["p_filesz"]) for s in elf.iter_segments()
                    if s["p_type"] == "PT_LOAD"]
        tables = []
        for secname in (".dynsym", ".symtab"):
            sec = elf.get_section_by_name(secname)
            if sec is None or sec["sh_entsize"] != ELF64_SYM.itemsize:
                continue
            syms = np.frombuffer(raw, ELF64_SYM, count=sec["sh_size"] // ELF64_SYM.itemsize,
                                 offset=sec["sh_offset"])
            syms = syms[((syms["st_info"] & 0xF) == STT_FUNC) & (syms["st_value"] != 0)]
            # aliases share an address: a GLOBAL name beats a WEAK or LOCAL one, as in perf
            syms = syms[np.argsort((syms["st_info"] >> 4) != STB_GLOBAL, kind="stable")]
            strtab = elf.get_section(sec["sh_link"])
            tables.append((syms, raw[strtab["sh_offset"]:strtab["sh_offset"] +
                                     strtab["sh_size"]]))
        plt = _plt_symbols(elf, raw)
    except (ELFError, ValueError, OSError, IndexError):
        return None
    if plt is not None:
        tables.append(plt)
    if not tables:
        return ElfSymbols(np.zeros(0, np.uint64), np.zeros(0, np.uint64),
                          np.zeros(0, np.int64), b"", segments)
    # one string table for all: each table's name offsets are rebased into the join
    strtab, rebased, base = [], [], 0
    for syms, names_blob in tables:
        strtab.append(bytes(names_blob))
        rebased.append(np.where(syms["st_name"] < len(names_blob), syms["st_name"], 0) + base)
        base += len(names_blob)
    values = np.concatenate([t[0]["st_value"] for t in tables])
    sizes = np.concatenate([t[0]["st_size"] for t in tables])
    names = np.concatenate(rebased).astype(np.int64)
    # first occurrence of each address wins (.dynsym, GLOBAL first); then sort by address
    _, first = np.unique(values, return_index=True)
    first.sort()
    order = first[np.argsort(values[first], kind="stable")]
    return ElfSymbols(values[order], values[order] + np.maximum(sizes[order], 1),
                      names[order], b"".join(strtab), segments)


ELF64_RELA = np.dtype([("r_offset", "<u8"), ("r_info", "<u8"), ("r_addend", "<i8")])
PLT_ENTRY = 16


def _plt_symbols(elf, raw):
    """`name@plt` symbols, one per .rela.plt relocation, as perf synthesizes them: entry i
    sits in .plt.sec, or in .plt after its first (resolver) entry."""
    rela = elf.get_section_by_name(".rela.plt")
    dynsym = elf.get_section_by_name(".dynsym")
    plt = elf.get_section_by_name(".plt.sec") or elf.get_section_by_name(".plt")
    if rela is None or dynsym is None or plt is None:
        return None
    relocs = np.frombuffer(raw, ELF64_RELA, count=rela["sh_size"] // ELF64_RELA.itemsize,
                           offset=rela["sh_offset"])
    syms = np.frombuffer(raw, ELF64_SYM, count=dynsym["sh_size"] // ELF64_SYM.itemsize,
                         offset=dynsym["sh_offset"])
    strtab = elf.get_section(dynsym["sh_link"])
    first = plt["sh_addr"] + (0 if plt.name == ".plt.sec" else PLT_ENTRY)
    names = bytearray()
    table = np.zeros(len(relocs), dtype=ELF64_SYM)
    for i, idx in enumerate((relocs["r_info"] >> np.uint64(32)).tolist()):
        if idx >= len(syms):
            continue
        off = strtab["sh_offset"] + int(syms[idx]["st_name"])
        end = raw.find(b"\0", off, strtab["sh_offset"] + strtab["sh_size"])
        table[i] = (len(names), STT_FUNC | STB_GLOBAL << 4, 0, 0, first + PLT_ENTRY * i,
                    PLT_ENTRY)
        names += raw[off:end] + b"@plt\0"
    return table, names


class _MmapStream(io.RawIOBase):
    """A read-only stream over a mapping, for pyelftools' header parsing."""

    def __init__(self, m: mmap.mmap):
        self.m = m
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = (pos, self.pos + pos, len(self.m) + pos)[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = len(self.m) if n is None or n < 0 else self.pos + n
        data = self.m[self.pos:end]
        self.pos += len(data)
        return data


def _own_vdso() -> bytes:
    """This process's vdso image: the kernel maps the same one into every process, so the
    recording's [vdso] samples resolve against it (as perf does)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("[vdso]"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                with open("/proc/self/mem", "rb") as mem:
                    mem.seek(lo)
                    return mem.read(hi - lo)
    raise OSError("no [vdso] in /proc/self/maps")


def dso_name(filename: str) -> str:
    return os.path.basename(filename) if filename.startswith("/") else filename
