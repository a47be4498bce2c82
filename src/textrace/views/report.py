"""`textrace report`: samples attributed to symbols as of each sample's own time.

Kernel samples resolve against the code history (BPF programs and out-of-line code alive at
that instant, including programs unloaded before the recording ended, over kallsyms); user
samples against the process's mappings at that instant and the ELF symbols of the file.
Overhead is by period, as perf report computes it: each sample counts for the symbol its
own ip is in (perf's "Self"; callchains are not followed, as `perf report --no-children`).

All of it is done on numpy arrays: a symbol code per distinct (ip, pid) pair (300k of a
1.5M-sample recording), the samples summed by pair with bincount, then by row; names are
decoded only for the symbols that were hit.  The records are located in bulk by one walk
that gathers the samples' fields as it goes and keeps a copy of the MMAP/MMAP2/FORK ones
(thousands in a system-wide recording) and the KSYMBOL/BPF_EVENT ones, read without the
record classes.  /proc/kallsyms is read and parsed by a child process meanwhile
(KallsymsReader).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import filterfalse, repeat
from json.encoder import encode_basestring_ascii as _json_str

import numpy as np

from ..history.code_history import CodeHistory
from ..history.demangle import demangle
from ..history.distinct import distinct_pairs
from ..history.kallsyms import KernelSymbols
from ..history.programs import programs_from_records, regions_of
from ..history.regions import RegionTable, sorted_unique
from ..history.userspace import Mapping, PROT_EXEC, ProcessMaps, dso_name
from ..perf.abi import MISC_CPUMODE_MASK, MISC_GUEST_KERNEL, MISC_KERNEL, RecordType
from ..load import KERNEL_DSO, elf_symbols, kernel_symbols_for, start_kallsyms
from ..perf.bulk import (SampleArrays, code_events, located, map_events, offsets_of,
                         release_pages, sample_arrays)
from ..perf.reader import PerfData

MAP_RECORDS = frozenset({RecordType.MMAP, RecordType.MMAP2, RecordType.FORK})
PROGRAM_RECORDS = frozenset({RecordType.KSYMBOL, RecordType.BPF_EVENT})
CODE_RECORDS = PROGRAM_RECORDS | {RecordType.TEXT_POKE}
SIDEBAND = MAP_RECORDS | CODE_RECORDS
SAMPLE_FIELDS = frozenset({"misc", "ip", "pid", "time", "period"})
UNKNOWN = "[unknown]"
_NEVER = np.iinfo(np.int64).min
_FOREVER = np.iinfo(np.int64).max


@dataclass
class ReportRow:
    """One row of the report: a symbol as of its samples' time, its DSO and kind, samples, period
    and percent."""

    symbol: str
    dso: str
    kind: str          # kernel, module, bpf, ool, user, unknown
    samples: int
    period: int
    percent: float

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"symbol": self.symbol, "dso": self.dso, "kind": self.kind,
                "samples": self.samples, "period": self.period, "percent": self.percent}

    def to_json(self) -> str:
        """json.dumps(self.to_dict(), separators=(",", ":")), at a quarter of the cost
        (a report can have thousands of rows)."""
        return (f'{{"symbol":{_json_str(self.symbol)},"dso":{_json_str(self.dso)},'
                f'"kind":{_json_str(self.kind)},"samples":{int(self.samples)},'
                f'"period":{int(self.period)},"percent":{float(self.percent)!r}}}')


def _anonymous(filename: str) -> bool:
    """perf's is_anon_memory() and is_no_dso_memory() (tools/perf/util/map.c, 6.1)."""
    return (filename == "//anon" or filename.startswith(("/dev/zero", "/anon_hugepage",
                                                         "[stack", "/SYSV"))
            or filename == "[heap]")


def _mapping(pid: int, time: int, addr: int, length: int, pgoff: int,
             filename: str) -> Mapping:
    """An executable mapping as perf's map__new() makes it: anonymous code (a JIT's: qemu
    TCG, a JVM) belongs to "[JIT] tid PID" (perf's /tmp/perf-PID.map dso) and its
    addresses are not file offsets (perf's identity map_ip): pgoff is set to its start, so
    that ip - start + pgoff is the ip itself."""
    if _anonymous(filename):
        return Mapping(min(time, _FOREVER), addr, addr + length, addr, f"[JIT] tid {pid}")
    return Mapping(min(time, _FOREVER), addr, addr + length, pgoff, filename)


def _sideband(data: PerfData) -> tuple[ProcessMaps, RegionTable]:
    """Every process's executable mappings over time, and the dynamic kernel code regions
    (BPF programs, trampolines) with their lifetimes."""
    maps = ProcessMaps()
    found = located(data)
    if found is None or data.salvage:
        # compressed or pipe-mode data, or a damaged file read up to the damage: one pass
        # over every sideband record
        from ..history.build import build_history

        def follow(records):
            for r in records:
                if r.type == RecordType.MMAP2 or r.type == RecordType.MMAP:
                    if r.type == RecordType.MMAP or r.prot & PROT_EXEC:
                        maps.mmap(r.pid, _mapping(r.pid, r.time or 0, r.addr, r.len,
                                                  r.pgoff, r.filename))
                elif r.type == RecordType.FORK:
                    maps.fork(r.ppid, r.pid)
                yield r

        history, _ = build_history(follow(data.records_by_time(SIDEBAND)))
        return maps, history.table
    # The map records (a thousand or more in a system-wide recording) and the program
    # records read straight from the file, without the record classes.
    for ev in map_events(data, offsets_of(data, MAP_RECORDS)):
        if ev.kind == "fork":
            maps.fork(ev.ppid, ev.pid)
        elif ev.kind == "mmap" or ev.prot & PROT_EXEC:
            maps.mmap(ev.pid, _mapping(ev.pid, ev.time, ev.addr, ev.len, ev.pgoff,
                                       ev.filename))
    programs, ool = programs_from_records(
        code_events(data, offsets_of(data, PROGRAM_RECORDS)))
    return maps, RegionTable(regions_of(programs, ool))


class _Symbols:
    """Symbol codes: each source of symbols (kernel regions, kallsyms, one ELF file) gets a
    block of consecutive codes, a sample one code; names are made only for codes hit.

    An address block (addressed()) holds the addresses no symbol covers, each a row of its
    own named by the address as perf names it: 100k of them in a report of qemu's TCG
    code.  Their keys stay numbers (address, dso and kind) until the rows are laid out.

    names=False: a report by dso or program needs no symbol names where every code of a
    block has one dso and kind (an ELF file's, its per-address rows): those codes all get
    the key (None, dso, kind), without demangling or formatting (a block's codes merge
    into one key, at the place of its first; the rows grouped by dso or program, and
    their order, are the same)."""

    def __init__(self, names: bool = True):
        # (first, count, namer, many, (dso, kind) of every code or None, addresses or None)
        self.blocks: list[tuple] = []
        self.size = 0
        self.named: dict[int, tuple] = {}
        self.names = names

    def block(self, count: int, namer, many=None, dso_kind: tuple | None = None,
              addrs: np.ndarray | None = None) -> int:
        """Reserve `count` codes; namer(i) gives (symbol, dso, kind[, address]) of the i-th,
        many(indexes), if given, those of many at once (a list); dso_kind, if given, the
        (dso, kind) all of them have; addrs, if given (with dso_kind), the address each is
        named by, kept as numbers when names are made (addressed())."""
        first = self.size
        self.blocks.append((first, count, namer, many,
                            None if self.names or dso_kind is None else (None, *dso_kind),
                            (addrs, *dso_kind) if self.names and addrs is not None else None))
        self.size += count
        return first

    def addressed(self, addrs: np.ndarray, dso: str, kind: str) -> int:
        """Reserve a code for each of `addrs`, each named by its address ("0x%016x")."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        return self.block(len(addrs), lambda i: (f"0x{int(addrs[i]):016x}", dso, kind),
                          dso_kind=(dso, kind), addrs=addrs)

    def _block_of(self, codes: np.ndarray) -> np.ndarray:
        firsts = np.array([b[0] for b in self.blocks], dtype=np.int64)
        return np.searchsorted(firsts, codes, side="right") - 1

    def _in_address_block(self, blocks: np.ndarray) -> np.ndarray:
        """Which of the `blocks` (_block_of's) are address blocks (keys kept as numbers)."""
        return np.array([b[5] is not None for b in self.blocks], dtype=bool)[blocks]

    def by_name(self, codes: np.ndarray) -> np.ndarray:
        """Those of `codes` whose keys are named (keys()), not addressed."""
        return codes[~self._in_address_block(self._block_of(codes))]

    def keys(self, codes: list[int]) -> list[tuple]:
        """The (symbol, dso, kind[, address]) of each code, each named once."""
        named = self.named
        todo = list(filterfalse(named.__contains__, codes))
        if todo:
            t = np.array(todo, dtype=np.int64)
            which = self._block_of(t)
            order = np.argsort(which, kind="stable")
            t, which = t[order], which[order]
            for lo, hi in _runs(which):
                first, _count, namer, many, unnamed, _addrs = self.blocks[int(which[lo])]
                these = t[lo:hi]
                if unnamed is not None:
                    named.update(zip(these.tolist(), repeat(unnamed)))
                elif many is not None:
                    named.update(zip(these.tolist(), many(these - first)))
                else:
                    for code in these.tolist():
                        named[code] = namer(code - first)
        return list(map(named.__getitem__, codes))

    def distinct(self, hit: np.ndarray) -> tuple["SymbolKeys", np.ndarray]:
        """The distinct keys of the codes `hit` (ascending), and the key number of each:
        the named keys first, in the order of their codes, then the addressed ones."""
        number = np.empty(len(hit), dtype=np.int64)
        block = self._block_of(hit)
        addressed = self._in_address_block(block)
        by_name = np.flatnonzero(~addressed)
        named = self.keys(hit[by_name].tolist())
        # (dict.fromkeys and map: no Python-level loop over the keys of a big report)
        distinct = list(dict.fromkeys(named))
        if len(distinct) == len(named):
            number[by_name] = np.arange(len(named))
            named_first = by_name
        else:
            index = dict(zip(distinct, range(len(distinct))))
            number[by_name] = np.fromiter(map(index.__getitem__, named), dtype=np.int64,
                                          count=len(named))
            named_first = by_name[np.unique(number[by_name], return_index=True)[1]]
        by_addr = np.flatnonzero(addressed)
        values = np.zeros(len(by_addr), dtype=np.uint64)
        group = np.zeros(len(by_addr), dtype=np.int64)
        groups: dict[tuple[str, str], int] = {}
        codes, blocks = hit[by_addr], block[by_addr]
        # (`hit` ascends, and so do its blocks: each block's codes are one run)
        for lo, hi in _runs(blocks):
            first, _count, _namer, _many, _unnamed, (addrs, dso, kind) = \
                self.blocks[int(blocks[lo])]
            values[lo:hi] = addrs[codes[lo:hi] - first]
            group[lo:hi] = groups.setdefault((dso, kind), len(groups))
        # one key per (address, dso, kind): two blocks can hold one address of one file
        ids, once = distinct_pairs(values, group)
        number[by_addr] = len(distinct) + ids
        # each key ranked by its first code: the order perf breaks ties in (by object,
        # then address)
        rank = np.concatenate([named_first, by_addr[once]])
        return SymbolKeys(distinct, values[once], group[once], list(groups), rank), number


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) of each run of equal `values` (none for no values)."""
    if not len(values):
        return []
    cuts = (np.flatnonzero(np.diff(values)) + 1).tolist()
    return list(zip([0, *cuts], [*cuts, len(values)]))


@dataclass
class SymbolKeys:
    """The distinct symbols samples were attributed to: `named` (symbol, dso, kind[,
    address]) tuples, then the keys of addresses no symbol covers, as columns: the address
    (the row's name, "0x%016x"), and its (dso, kind) as an index into `groups`; `rank`
    orders them all as their codes are."""

    named: list[tuple]
    addrs: np.ndarray         # uint64
    group: np.ndarray         # int64, into groups
    groups: list[tuple[str, str]]
    rank: np.ndarray          # int64: the keys' order (their codes': by object, address)

    def __len__(self) -> int:
        return len(self.named) + len(self.addrs)

    def tuples(self) -> list[tuple]:
        """Every key as a (symbol, dso, kind[, address]) tuple."""
        dso, kind = [g[0] for g in self.groups], [g[1] for g in self.groups]
        group = self.group.tolist()
        return self.named + list(zip(_hex_names(self.addrs), map(dso.__getitem__, group),
                                     map(kind.__getitem__, group)))

    def columns(self, order: np.ndarray) -> tuple["SymbolColumn", np.ndarray, list[tuple]]:
        """The symbols of the keys `order`, in that order, and their places: a number
        each, into the distinct (dso, kind) pairs (the third)."""
        n = len(self.named)
        place = np.empty(len(order), dtype=np.int64)
        places = dict(zip(self.groups, range(len(self.groups))))   # group g: place g
        is_named = order < n
        keys = list(map(self.named.__getitem__, order[is_named].tolist()))
        place[is_named] = [places.setdefault(k[1:3], len(places)) for k in keys]
        at = order[~is_named] - n
        place[~is_named] = self.group[at]
        return SymbolColumn([k[0] for k in keys], self.addrs[at], is_named), place, \
            list(places)


@dataclass
class SymbolColumn:
    """A report's symbol column in row order: the named rows' symbols, and the addresses
    that name the others ("0x%016x"), kept as numbers (the text table lays out their 100k
    rows of qemu's TCG code by numpy, without a string each)."""

    named: list[str]         # the named rows' symbols
    addrs: np.ndarray        # uint64: the other rows' addresses
    is_named: np.ndarray     # bool per row

    def __len__(self) -> int:
        return len(self.is_named)

    def head(self, n: int) -> "SymbolColumn":
        """The first n rows."""
        named = int(np.count_nonzero(self.is_named[:n]))
        return SymbolColumn(self.named[:named], self.addrs[:min(n, len(self.is_named))
                                                         - named], self.is_named[:n])

    def strings(self) -> list[str]:
        """Every row's symbol."""
        out = np.empty(len(self), dtype=object)
        out[self.is_named] = self.named
        out[~self.is_named] = _hex_names(self.addrs)
        return out.tolist()

    def utf8_lines(self) -> bytes | None:
        """Every row's symbol in UTF-8, each followed by a newline: the named ones joined,
        the addresses laid out by numpy, the two interleaved by row; None when a name
        holds a newline."""
        named = ("\n".join(self.named) + "\n").encode("utf-8", "surrogatepass") \
            if self.named else b""
        text = np.frombuffer(named, dtype=np.uint8)
        ends = np.flatnonzero(text == ord("\n")) + 1
        if len(ends) != len(self.named):
            return None
        length = np.full(len(self), 19, dtype=np.int64)     # "0x%016x\n"
        length[self.is_named] = np.diff(ends, prepend=0)
        in_named = np.repeat(self.is_named, length)
        out = np.empty(len(in_named), dtype=np.uint8)
        out[in_named] = text
        out[~in_named] = _hex_lines(self.addrs).reshape(-1)
        return out.tobytes()


@dataclass
class Attribution:
    """Samples attributed to keys by their (ip, pid) pairs: the samples of pair k have key
    pair_key[k], except the `early` ones (taken before their pair's answer held), which
    have early_key.  A report sums per pair (300k) rather than per sample (1.5M)."""

    keys: SymbolKeys
    pair: np.ndarray        # int64 per sample: its pair
    pair_key: np.ndarray    # int64 per pair (meaningless for a pair of early samples only)
    early: np.ndarray       # int64: samples, ascending
    early_key: np.ndarray   # int64: their keys
    samples: SampleArrays

    def ids(self) -> np.ndarray:
        """Each sample's key."""
        ids = self.pair_key[self.pair]
        ids[self.early] = self.early_key
        return ids

    def sums(self, group: np.ndarray | None, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(samples, period) of each of `count` rows, the row of key k being group[k] (k
        itself for None): summed per pair, then per row (exact: float64 sums of integers
        below 2**53)."""
        pairs = len(self.pair_key)
        period = self.samples.period.astype(np.float64)
        n = np.bincount(self.pair, minlength=pairs).astype(np.float64)
        p = np.bincount(self.pair, weights=period, minlength=pairs)
        row = self.pair_key if group is None else group[self.pair_key]
        early_row = self.early_key if group is None else group[self.early_key]
        if len(self.early):     # the early samples counted for their own rows instead
            at = self.pair[self.early]
            n -= np.bincount(at, minlength=pairs)
            p -= np.bincount(at, weights=period[self.early], minlength=pairs)
        counts = np.bincount(row, weights=n, minlength=count)
        periods = np.bincount(row, weights=p, minlength=count)
        if len(self.early):
            counts += np.bincount(early_row, minlength=count)
            periods += np.bincount(early_row, weights=period[self.early], minlength=count)
        return np.rint(counts).astype(np.int64), np.rint(periods).astype(np.int64)


def attribute(data: PerfData, kernel: KernelSymbols | None = None, *, kernel_later=None,
              names: bool = True):
    """Per-sample symbol keys: (keys, ids, samples), keys.tuples()[ids[i]] = (symbol name,
    dso, kind[, address]) of sample i; `samples` holds the columns SAMPLE_FIELDS only.
    `kernel_later()`, if given, returns the kernel symbols once they are needed (after the
    user-space samples are done).  names=False: user-space symbols are left unnamed
    (None), one key per ELF file or per file's unsymbolized addresses (_Symbols)."""
    a = attribution(data, kernel, kernel_later=kernel_later, names=names)
    return a.keys, a.ids(), a.samples


def attribution(data: PerfData, kernel: KernelSymbols | None = None, *, kernel_later=None,
                names: bool = True) -> Attribution:
    """attribute(), by pairs (Attribution)."""
    # the samples first: gathered in the walk that locates every record (bulk.located),
    # which keeps a copy of the sideband records for _sideband to read
    s = sample_arrays(data, callchains=False, fields=SAMPLE_FIELDS)
    maps, table = _sideband(data)
    release_pages(data)
    syms = _Symbols(names)
    mode = s.misc & MISC_CPUMODE_MASK
    is_kernel = (mode == MISC_KERNEL) | (mode == MISC_GUEST_KERNEL)
    times = s.time.view(np.int64)
    # Each distinct (ip, pid) pair (pid -1 for kernel samples: one kernel address space)
    # is resolved once, as of the recording's end, with the time from which that answer
    # holds; the samples taken before that time, if any, are resolved one by one.
    pair, first = distinct_pairs(s.ip, np.where(is_kernel, -1, s.pid))
    ips, pids, kernel_pair = s.ip[first], s.pid[first], is_kernel[first]
    pair_codes = np.empty(len(first), dtype=np.int64)
    since = np.empty(len(first), dtype=np.int64)
    user = np.flatnonzero(~kernel_pair)
    if len(user):
        pair_codes[user], since[user] = _user_codes(syms, maps, pids[user], ips[user])
    if kernel_later is not None:
        # named while kallsyms is parsed
        syms.keys(syms.by_name(sorted_unique(pair_codes[user])).tolist())
        kernel = kernel_later()
    history = CodeHistory(table, kernel)   # what show and annotate resolve with too
    kern = np.flatnonzero(kernel_pair)
    if len(kern):
        pair_codes[kern] = _kernel_codes(syms, history, ips[kern], None)
        # addresses that some BPF program or trampoline ever held: by each sample's time
        since[kern] = np.where(table.ever_holds(ips[kern]), _FOREVER, _NEVER)
    early = np.flatnonzero(times < since[pair])
    early_codes = np.empty(len(early), dtype=np.int64)
    if len(early):
        k = is_kernel[early]
        ek, eu = np.flatnonzero(k), np.flatnonzero(~k)
        if len(eu):
            at = early[eu]
            early_codes[eu] = _user_codes(syms, maps, s.pid[at], s.ip[at], times[at])[0]
        if len(ek):
            at = early[ek]
            early_codes[ek] = _kernel_codes(syms, history, s.ip[at], times[at])
    # the codes samples have: their pairs' (where some sample of the pair is not early)
    # and the early ones'
    late = np.bincount(pair, minlength=len(first))
    if len(early):
        late -= np.bincount(pair[early], minlength=len(first))
    hit = np.flatnonzero(np.bincount(np.concatenate([pair_codes[late > 0], early_codes]),
                                     minlength=syms.size))
    # one id per distinct key (two codes can name the same symbol: the same file mapped
    # under two paths with one basename).  A key is (symbol, dso, kind) and, where symbols
    # of one name can differ (C++ overloads, local functions of one name), the symbol's
    # address: perf keeps them apart, a row each.
    keys, number = syms.distinct(hit)
    remap = np.zeros(syms.size, dtype=np.int64)
    remap[hit] = number
    return Attribution(keys, pair, remap[pair_codes], early, remap[early_codes], s)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_lines(values: np.ndarray) -> np.ndarray:
    """"0x%016x\\n" of each value as a row of 19 bytes, made by numpy (a report can name
    100k addresses: the JIT code of qemu's TCG, a JVM's): each value's big-endian bytes
    as two hex digits each."""
    v = np.asarray(values, dtype=np.uint64)
    octets = v.astype(">u8").view(np.uint8).reshape(-1, 8)
    text = np.empty((len(v), 19), dtype=np.uint8)
    text[:, 0], text[:, 1], text[:, 18] = ord("0"), ord("x"), ord("\n")
    text[:, 2:18:2] = _HEX[octets >> 4]
    text[:, 3:18:2] = _HEX[octets & 15]
    return text


def _hex_names(values: np.ndarray) -> list[str]:
    """"0x%016x" of each value: _hex_lines' rows decoded as one string and split, not a
    string made per value."""
    if not len(values):
        return []
    return _hex_lines(values).tobytes()[:-1].decode("ascii").split("\n")


def _kernel_codes(syms: _Symbols, history: CodeHistory, ips: np.ndarray,
                  times: np.ndarray | None) -> np.ndarray:
    """Kernel samples, resolved by the history (CodeHistory.symbol_ids: the dynamic region
    alive there at the sample's time, else kallsyms); times None: kallsyms only (for
    addresses no region ever held).  Each symbol a code of `syms`."""
    ids = history.symbol_ids(ips, times)
    regions = history.table.regions if times is not None else []
    kernel = history.kernel
    unknown = syms.block(1, lambda _i: (UNKNOWN, KERNEL_DSO, "unknown"))
    # a code per id: regions' block, kallsyms' block, `unknown` for -1 (the last slot)
    codes = np.full(len(history.table.regions) + (len(kernel) if kernel is not None else 0)
                    + 1, unknown, dtype=np.int64)
    if regions:
        codes[:len(regions)] = syms.block(len(regions), lambda i: (
            regions[i].name, regions[i].name, regions[i].kind)) + np.arange(len(regions))
    if kernel is not None and len(kernel):
        def name(i):
            mod = kernel.module(i)
            return (kernel.name(i), f"[{mod}]" if mod else KERNEL_DSO,
                    "module" if mod else "kernel", int(kernel.addrs[i]))
        n_regions = len(history.table.regions)
        codes[n_regions:n_regions + len(kernel)] = syms.block(len(kernel), name) + \
            np.arange(len(kernel))
    return codes[ids]


def _user_codes(syms: _Symbols, maps: ProcessMaps, pids: np.ndarray, ips: np.ndarray,
                times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """User samples: the mapping of the sample's process at its time (None: at the end of
    the recording), the file's ELF symbol at the file offset.  Also the time from which
    each answer holds: the mapping's (the last made that covers the address, so it holds
    from then on), _NEVER where none ever covered it."""
    unknown = syms.block(1, lambda _i: (UNKNOWN, UNKNOWN, "unknown"),
                         dso_kind=(UNKNOWN, "unknown"))
    out = np.full(len(ips), unknown, dtype=np.int64)
    since = np.full(len(ips), _NEVER, dtype=np.int64)
    if times is None:
        times = np.broadcast_to(np.int64(_FOREVER), (len(ips),))
    mapping, number = maps.lookup_all(pids, ips, times)
    # as perf: an address no mapping covers is a row of its own in [unknown], named by
    # the address
    unmapped = np.flatnonzero(mapping < 0)
    if len(unmapped):
        addrs, which = np.unique(ips[unmapped], return_inverse=True)
        out[unmapped] = syms.addressed(addrs, UNKNOWN, "unknown") + which.reshape(-1)
    mapped = np.flatnonzero(mapping >= 0)
    if not len(mapped):
        return out, since
    # the file behind each mapping that was hit, and each sample's offset in that file
    mapping = mapping[mapped]
    hit = np.flatnonzero(np.bincount(mapping, minlength=len(number)))
    every = list(map(maps.made.__getitem__, number[hit].tolist()))   # hit's mappings
    files: dict[str, int] = {}
    file_of = np.zeros(len(number), dtype=np.int64)
    file_of[hit] = [files.setdefault(m.filename, len(files)) for m in every]
    start = np.zeros(len(number), dtype=np.uint64)
    start[hit] = [m.start for m in every]
    pgoff = np.zeros(len(number), dtype=np.uint64)
    pgoff[hit] = [m.pgoff for m in every]
    made = np.zeros(len(number), dtype=np.int64)
    made[hit] = [m.time for m in every]
    since[mapped] = made[mapping]
    fid = file_of[mapping]
    offs = ips[mapped] - start[mapping] + pgoff[mapping]
    # samples grouped by file (a stable sort of small integers is a radix sort)
    by_file = np.argsort(fid.astype(np.uint16) if len(files) <= 1 << 16 else fid,
                         kind="stable")
    ends = np.cumsum(np.bincount(fid, minlength=len(files)))
    begin = 0
    for filename, f in files.items():
        sel = by_file[begin:ends[f]]
        begin = ends[f]
        dso = dso_name(filename)
        elf = elf_symbols(filename)
        if elf is None:
            si = np.full(len(sel), -1, dtype=np.int64)
            first = syms.block(0, None)
        else:
            si = elf.lookup(elf.offset_to_vaddr(offs[sel]))
            first = syms.block(len(elf.addrs), lambda i, e=elf, d=dso: (
                demangle(e.name(i)), d, "user", int(e.addrs[i])),
                many=lambda idx, e=elf, d=dso: list(zip(
                    map(demangle, e.names(idx)), repeat(d), repeat("user"),
                    e.addrs[idx].tolist())), dso_kind=(dso, "user"))
        out[mapped[sel]] = first + si
        # as perf: an address no symbol covers is a row of its own, named by its offset
        # in the mapped file (perf's map-relative address, ip - start + pgoff)
        miss = np.flatnonzero(si < 0)
        if len(miss):
            addrs, which = np.unique(offs[sel[miss]], return_inverse=True)
            out[mapped[sel[miss]]] = syms.addressed(addrs, dso, "user") + which.reshape(-1)
    return out, since


@dataclass
class ReportTable:
    """The report's rows as columns, largest period first (ties in the order the symbols
    were numbered: by object, then address, as perf's sort by symbol breaks them).  The
    columns are what the text table and the JSON lines are made from, without a Python
    object per row; rows() gives ReportRows.  Each row's dso and kind are its place, a
    number into `places` (a report's 100k rows have a few hundred)."""

    symbols: SymbolColumn
    place: np.ndarray     # int64, into places
    places: list[tuple[str, str]]   # (dso, kind)
    samples: np.ndarray   # int64
    period: np.ndarray    # int64, the event's unit (cpu-clock: ns)
    percent: np.ndarray   # float64, of the total period, rounded to 2 decimals

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def symbol(self) -> list[str]:
        """Each row's symbol."""
        return self.symbols.strings()

    @property
    def dso(self) -> list[str]:
        """Each row's shared object."""
        return [self.places[p][0] for p in self.place.tolist()]

    @property
    def kind(self) -> list[str]:
        """Each row's kind (kernel, module, bpf, ool, user, unknown)."""
        return [self.places[p][1] for p in self.place.tolist()]

    def head(self, n: int) -> "ReportTable":
        """The first n rows."""
        return ReportTable(self.symbols.head(n), self.place[:n], self.places,
                           self.samples[:n], self.period[:n], self.percent[:n])

    def rows(self) -> list[ReportRow]:
        """The rows as ReportRow objects."""
        return [ReportRow(*r) for r in zip(self.symbol, self.dso, self.kind,
                                           self.samples.tolist(), self.period.tolist(),
                                           self.percent.tolist())]

    def json_lines(self) -> str:
        """ReportRow.to_json() of every row, one a line (each place's dso and kind
        encoded once)."""
        places = [f'"dso":{_json_str(d)},"kind":{_json_str(k)}' for d, k in self.places]
        return "".join(
            f'{{"symbol":{_json_str(sym)},{where},"samples":{n},'
            f'"period":{p},"percent":{c!r}}}\n'
            for sym, where, n, p, c in zip(self.symbol, map(places.__getitem__,
                                                            self.place.tolist()),
                                           self.samples.tolist(), self.period.tolist(),
                                           self.percent.tolist()))


def _group(keys: list[tuple], sort: str) -> tuple[list[tuple], np.ndarray]:
    """The rows' (symbol, dso, kind[, ...]) under `sort` ("dso" or "program"), and the row
    of each key."""
    gkeys: dict = {}
    if sort == "dso":
        gid = [gkeys.setdefault((k[1], k[1], k[2]), len(gkeys)) for k in keys]
    elif sort == "program":
        other = ("-", "-", "other")
        gid = [gkeys.setdefault((k[0], k[1], "bpf") if k[2] == "bpf" else other, len(gkeys))
               for k in keys]
    else:
        raise ValueError(f"unknown sort {sort!r}")
    return list(gkeys), np.array(gid, dtype=np.int64)


def report_table(data: PerfData, *, sort: str = "symbol",
                 kernel: KernelSymbols | None = None, live=None) -> ReportTable:
    """The report as columns, largest first.  `kernel`: the kernel symbols to use, else
    those of kernel_symbols_for(); `live`: a KallsymsReader started earlier (one is started
    here otherwise), read while the samples are attributed."""
    if sort not in ("symbol", "dso", "program"):
        raise ValueError(f"unknown sort {sort!r}")
    if kernel is None:
        live = live or start_kallsyms()
        try:
            a = attribution(data, kernel_later=lambda: kernel_symbols_for(data, live),
                            names=sort == "symbol")
        finally:
            live.close()
    else:
        a = attribution(data, kernel, names=sort == "symbol")
    keys = a.keys
    gkeys, gid = (keys, None) if sort == "symbol" else _group(keys.tuples(), sort)
    counts, periods = a.sums(gid, len(gkeys))
    total = float(periods.sum()) or 1.0
    hit = np.flatnonzero(counts)
    order = hit[np.lexsort((keys.rank[hit] if gid is None else hit, -periods[hit]))]
    percent = np.round(100.0 * periods[order] / total, 2)
    if gid is None:
        symbol, place, places = keys.columns(order)
    else:
        rows = list(map(gkeys.__getitem__, order.tolist()))
        numbered: dict[tuple[str, str], int] = {}
        symbol = SymbolColumn([r[0] for r in rows], np.zeros(0, dtype=np.uint64),
                              np.ones(len(rows), dtype=bool))
        place = np.array([numbered.setdefault(r[1:3], len(numbered)) for r in rows],
                         dtype=np.int64)
        places = list(numbered)
    return ReportTable(symbol, place, places, counts[order], periods[order], percent)


def report_rows(data: PerfData, *, sort: str = "symbol",
                kernel: KernelSymbols | None = None, live=None) -> list[ReportRow]:
    """The report's rows, largest first (report_table() as ReportRows)."""
    return report_table(data, sort=sort, kernel=kernel, live=live).rows()
