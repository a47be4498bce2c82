"""`textrace report`: samples attributed to symbols as of each sample's own time.

Kernel samples resolve against the code history (BPF programs and out-of-line code alive at
that instant, including programs unloaded before the recording ended, over kallsyms); user
samples against the process's mappings at that instant and the ELF symbols of the file.
Overhead is by period, as perf report computes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..history.build import build_history
from ..history.kallsyms import KernelSymbols
from ..history.userspace import Mapping, PROT_EXEC, ProcessMaps, dso_name, elf_symbols
from ..perf.abi import MISC_CPUMODE_MASK, MISC_GUEST_KERNEL, MISC_KERNEL, RecordType
from ..perf.bulk import sample_arrays
from ..perf.reader import PerfData

SIDEBAND = frozenset({RecordType.KSYMBOL, RecordType.BPF_EVENT, RecordType.TEXT_POKE,
                      RecordType.MMAP, RecordType.MMAP2, RecordType.FORK})
UNKNOWN = "[unknown]"


@dataclass
class ReportRow:
    symbol: str
    dso: str
    kind: str          # kernel, module, bpf, ool, user, unknown
    samples: int
    period: int
    percent: float

    def to_dict(self) -> dict:
        return asdict(self)


def kernel_symbols_for(data: PerfData) -> KernelSymbols | None:
    """kallsyms for the recording: the live one when the recording's kernel map starts
    where the running kernel's _text is (same boot, same KASLR slide)."""
    try:
        live = KernelSymbols.from_proc()
    except OSError:
        return None
    text = live.address_of("_text")
    for rec in data.records(frozenset({RecordType.MMAP})):
        if rec.filename.startswith("[kernel.kallsyms]"):
            return live if rec.pgoff == text else None
    return live


def attribute(data: PerfData, kernel: KernelSymbols | None = None):
    """Per-sample (symbol name, dso, kind) ids: returns (names, dsos, kinds, ids, samples)."""
    maps = ProcessMaps()

    def sideband():
        for r in data.records_by_time(SIDEBAND):
            if r.type == RecordType.MMAP2 or r.type == RecordType.MMAP:
                if r.type == RecordType.MMAP or r.prot & PROT_EXEC:
                    maps.mmap(r.pid, Mapping(r.time or 0, r.addr, r.addr + r.len, r.pgoff,
                                             r.filename))
            elif r.type == RecordType.FORK:
                maps.fork(r.ppid, r.pid)
            yield r

    history, _ = build_history(sideband(), kernel=kernel)
    s = sample_arrays(data)
    n = len(s)
    table: dict[tuple[str, str, str], int] = {}
    ids = np.full(n, -1, dtype=np.int64)

    def intern(key) -> int:
        return table.setdefault(key, len(table))

    mode = s.misc & MISC_CPUMODE_MASK
    is_kernel = (mode == MISC_KERNEL) | (mode == MISC_GUEST_KERNEL)
    times = s.time.astype(np.int64)
    kidx = np.flatnonzero(is_kernel)
    if len(kidx):
        sym, names = history.symbolize(s.ip[kidx], times[kidx])
        nreg = len(history.table.regions)
        uniq, inv = np.unique(sym, return_inverse=True)
        keys = []
        for u in uniq:
            if u < 0:
                keys.append(intern((UNKNOWN, "[kernel.kallsyms]", "unknown")))
            elif u < nreg:
                reg = history.table.regions[u]
                keys.append(intern((reg.name, reg.name, reg.kind)))
            else:
                mod = kernel.modules[u - nreg]
                keys.append(intern((names[u], f"[{mod}]" if mod else "[kernel.kallsyms]",
                                    "module" if mod else "kernel")))
        ids[kidx] = np.array(keys, dtype=np.int64)[inv]
    uidx = np.flatnonzero(~is_kernel)
    pids = s.pid[uidx]
    for pid in np.unique(pids):
        sel = uidx[pids == pid]
        mi = maps.lookup(int(pid), s.ip[sel], times[sel])
        plist = maps.maps.get(int(pid), [])
        for m in np.unique(mi):
            group = sel[mi == m]
            if m < 0:
                ids[group] = intern((UNKNOWN, UNKNOWN, "unknown"))
                continue
            mp = plist[m]
            dso = dso_name(mp.filename)
            elf = elf_symbols(mp.filename)
            if elf is None:
                ids[group] = intern((UNKNOWN, dso, "user"))
                continue
            offs = s.ip[group] - np.uint64(mp.start) + np.uint64(mp.pgoff)
            si = elf.lookup(elf.offset_to_vaddr(offs))
            for u in np.unique(si):
                name = elf.name(u) if u >= 0 else UNKNOWN
                ids[group[si == u]] = intern((name, dso, "user"))
    keys = [None] * len(table)
    for k, v in table.items():
        keys[v] = k
    return keys, ids, s


def report_rows(data: PerfData, *, sort: str = "symbol",
                kernel: KernelSymbols | None = None) -> list[ReportRow]:
    kernel = kernel if kernel is not None else kernel_symbols_for(data)
    keys, ids, s = attribute(data, kernel)
    if not len(ids):
        return []
    group_of = {"symbol": lambda k: k, "dso": lambda k: (k[1], k[1], k[2]),
                "program": lambda k: (k[0] if k[2] == "bpf" else "-", k[1] if k[2] == "bpf"
                                      else "-", k[2] if k[2] == "bpf" else "other")}[sort]
    gkeys: dict = {}
    gid = np.array([gkeys.setdefault(group_of(k), len(gkeys)) for k in keys], dtype=np.int64)
    per = gid[ids]
    counts = np.bincount(per, minlength=len(gkeys))
    periods = np.bincount(per, weights=s.period.astype(np.float64), minlength=len(gkeys))
    total = periods.sum() or 1.0
    rows = [ReportRow(k[0], k[1], k[2], int(counts[i]), int(periods[i]),
                      round(100.0 * periods[i] / total, 2))
            for k, i in gkeys.items() if counts[i]]
    rows.sort(key=lambda r: (-r.period, r.symbol))
    return rows
