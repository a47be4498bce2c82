"""`textrace report` against `perf report` on the same real recordings."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from oracle import run_perf

_ROW = re.compile(r"^\s+([\d.]+)%\s+(\S.*?)\s+\[([.k])\]\s+(.*?)\s*$")


def perf_report(path) -> dict[tuple[str, str], float]:
    out = run_perf("report", "--stdio", "--no-children", "-g", "none", "--sort", "dso,sym",
                   "-i", str(path))
    rows = {}
    for line in out.splitlines():
        m = _ROW.match(line)
        if m:
            pct, dso, _mode, sym = m.groups()
            rows[(dso, sym)] = float(pct)
    return rows


def textrace_report(path, *extra) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "textrace", "report", "-i", str(path), "--json",
                        *extra], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


# compressed: records inflated, so the sideband is decoded record by record
@pytest.mark.parametrize("name", ["callchain", "system-wide", "compressed"])
def test_overheads_match_perf_report(corpus, name):
    path = corpus.path(name)
    theirs = perf_report(path)
    rows = textrace_report(path)
    ours = {(r["dso"], r["symbol"]): r["percent"] for r in rows}
    # each row's percent is rounded to 0.01: a system-wide recording with a JIT running
    # (qemu TCG) has hundreds of one-sample rows, as perf's table does
    assert len(ours) == len(rows)
    assert abs(sum(ours.values()) - 100) < 0.5 + 0.005 * len(rows)
    assert sum(r["period"] for r in rows) > 0
    significant = {k: v for k, v in theirs.items() if v >= 1.0 and "[unknown]" not in k[1]
                   and not k[1].startswith("0x")}
    assert significant, theirs
    for key, pct in significant.items():
        assert key in ours, (key, sorted(ours, key=ours.get, reverse=True)[:10])
        assert ours[key] == pytest.approx(pct, abs=0.011), key


def test_sort_by_dso_sums_symbols(corpus):
    path = corpus.path("callchain")
    by_sym = textrace_report(path)
    by_dso = textrace_report(path, "--sort", "dso")
    totals: dict[str, int] = {}
    for r in by_sym:
        totals[r["dso"]] = totals.get(r["dso"], 0) + r["samples"]
    assert {r["dso"]: r["samples"] for r in by_dso} == totals


# --- the bulk paths the report takes, against the general ones ------------------------

def test_records_located_in_bulk_are_the_records_walked(corpus):
    """Record headers found by the compiled walk are exactly the reader's, also when a
    callchain entry looks like a header (0xf00000000000000f does, as a real kernel
    address can), and when the file is taken in windows smaller than a record."""
    from textrace.perf.bulk import locate_records_aligned
    from textrace.perf.reader import PerfData
    raw = bytearray(corpus.path("callchain").read_bytes())
    data = PerfData(bytes(raw), path="f")
    walked = [(r.offset, r.type) for r in data._walk()]
    size = {r.offset: r.size for r in data._walk()}
    # plant false headers (type SAMPLE, size 8; type MMAP, size 64) in callchains
    chains = [r for r in data.records() if r.type_name == "SAMPLE" and r.callchain]
    assert len(chains) > 10
    for rec, word in ((chains[1], 0x0008_0000_0000_0009),
                      (chains[5], 0x0040_0000_0000_0001), (chains[-1], 0xF000_0000_0000_000F)):
        # the chain ends the record (frame pointers: no registers or stack after it)
        at = rec.offset + size[rec.offset] - 8 * len(rec.callchain)
        struct.pack_into("<Q", raw, at, word)
    data = PerfData(bytes(raw), path="f")
    for window in (16 << 20, 4096, 8):
        found = locate_records_aligned(data._buf, data._data.offset, data._data.end,
                                       window=window)
        assert found is not None
        assert list(zip(found[0].tolist(), found[1].tolist())) == walked


def assert_same_columns(got, general) -> None:
    """Every column of two SampleArrays equal, dtype and values."""
    for f in ("attr", "misc", "ip", "pid", "tid", "time", "addr", "id", "stream_id", "cpu",
              "period", "chain_start", "callchain"):
        a, b = getattr(got, f), getattr(general, f)
        assert a.dtype == b.dtype and np.array_equal(a, b), f


@pytest.mark.parametrize("name", ["system-wide", "callchain", "multi-event"])
def test_sample_columns_in_one_gather_match_the_general_path(corpus, name, monkeypatch):
    from textrace.perf import bulk
    from textrace.perf.reader import PerfData
    path = corpus.path(name)
    fast = bulk.sample_arrays(PerfData.open(path))
    some = bulk.sample_arrays(PerfData.open(path), callchains=False, fields={"ip", "pid"})
    monkeypatch.setattr(bulk, "_one_layout", lambda *a, **k: None)
    general = bulk.sample_arrays(PerfData.open(path))
    assert len(fast) > 100
    assert_same_columns(fast, general)
    assert np.array_equal(some.ip, general.ip) and np.array_equal(some.pid, general.pid)
    assert not some.time.any() and not some.tid.any() and len(some.callchain) == 0


@pytest.mark.parametrize("name", ["system-wide", "callchain", "multi-event"])
def test_samples_gathered_in_the_walk_match_the_general_path(corpus, name, monkeypatch):
    """A file's samples gathered window by window while its records are located (windows
    as small as a page, or of one record: a record never split) are the general path's."""
    from textrace.perf import bulk
    from textrace.perf.reader import PerfData
    path = corpus.path(name)
    fields = frozenset({"attr", "misc", "ip", "pid", "tid", "time", "cpu", "period"})
    got = []
    for window in (bulk._WINDOW, 4096, 8):
        monkeypatch.setattr(bulk, "_WINDOW", window)
        got.append(bulk._gathered_while_located(PerfData.open(path), fields))
        assert got[-1] is not None, window
    monkeypatch.setattr(bulk, "_one_layout", lambda *a, **k: None)
    monkeypatch.setattr(bulk, "_gathered_while_located", lambda *a, **k: None)
    general = bulk.sample_arrays(PerfData.open(path), callchains=False, fields=fields)
    assert len(general) > 100
    for arrays in got:
        assert_same_columns(arrays, general)


@pytest.mark.parametrize("name", ["system-wide", "callchain"])
def test_sideband_read_from_the_kept_copies_is_the_files(corpus, name):
    """The MMAP2/FORK/KSYMBOL/BPF_EVENT records located() copies out read as they read
    from the file itself."""
    from textrace.perf import bulk
    from textrace.perf.reader import PerfData
    data = PerfData.open(corpus.path(name))
    offsets, kinds = bulk.located(data)
    assert data._kept is not None and len(data._kept.offsets) > 10
    maps = offsets[bulk.of_types(kinds, frozenset(bulk.KEPT))]
    kept = bulk.map_events(data, maps), bulk.code_events(data, maps)
    data._kept = None
    assert bulk.record_bytes(data, maps)[0] is data._buf
    assert kept == (bulk.map_events(data, maps), bulk.code_events(data, maps))
    assert kept[0]


@pytest.mark.parametrize("damage", ["nr past 8192", "nr past the record", "record short"])
def test_damaged_samples_are_named_by_the_one_gather_as_by_the_general_path(corpus, damage,
                                                                              monkeypatch):
    """The compiled gather checks each record as it reads it; a record that fails is named
    (field and offset) as the general path names it."""
    from textrace.errors import FormatError
    from textrace.perf import bulk
    from textrace.perf.abi import SampleType as S
    from textrace.perf.reader import PerfData
    raw = corpus.path("callchain").read_bytes()
    p = PerfData(raw, path="f")
    victim = [r for r in p.records() if r.type_name == "SAMPLE" and r.callchain][7]
    st = p.attrs[victim.attr_index].attr.sample_type
    nr_at = victim.offset + 8 + sum(8 for b in (S.IDENTIFIER, S.IP, S.TID, S.TIME, S.ADDR,
                                                S.ID, S.STREAM_ID, S.CPU, S.PERIOD) if st & b)
    bad = bytearray(raw)
    if damage == "nr past 8192":
        struct.pack_into("<Q", bad, nr_at, 1 << 60)
    elif damage == "nr past the record":
        struct.pack_into("<Q", bad, nr_at, len(victim.callchain) + 1)
    else:   # the record's size cut to its header and first field, the rest left as a gap
        size = struct.unpack_from("<H", bad, victim.offset + 6)[0]
        struct.pack_into("<H", bad, victim.offset + 6, 16)
        struct.pack_into("<IHH", bad, victim.offset + 16, 9999, 0, size - 16)  # unknown type
    errors = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(bulk, "_one_layout", lambda *a, **k: None)
        with pytest.raises(FormatError) as e:
            bulk.sample_arrays(PerfData(bytes(bad), path="f"), callchains=False)
        errors.append((e.value.field, e.value.offset, str(e.value)))
    assert errors[0] == errors[1]
    assert errors[0][1] == victim.offset


SPIN = "import time\nt = time.time()\nwhile time.time() - t < 0.3: pass\n"


@pytest.mark.parametrize("maker,fast", [
    # textrace record: the sampling event and the sideband's dummy, of another layout,
    # which takes no samples: the ids, read in the one gather, allow it
    ([sys.executable, "-m", "textrace", "record", "-e", "cpu-clock", "-F", "999"], True),
    # two events of two layouts (one with callchains), both sampling: the general path
    (["perf", "record", "-q", "-e", "cpu-clock/call-graph=fp/,task-clock", "-F", "999"],
     False),
])
def test_samples_of_attrs_of_several_layouts_match_the_general_path(tmp_path, monkeypatch,
                                                                    maker, fast):
    """Attrs of several sample layouts: _one_layout, and the walk that locates the records
    (_gathered_while_located), read every sample's id in their one pass and go on only
    when the ids name attrs of one layout; either way the columns are the general
    path's."""
    from textrace.perf import bulk
    from textrace.perf.reader import PerfData
    path = tmp_path / "f.data"
    subprocess.run(maker + ["-o", str(path), "--", sys.executable, "-c", SPIN], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    data = PerfData.open(path)
    assert len({(a.attr.sample_type, a.attr.read_format) for a in data.attrs}) == 2
    fields = frozenset({"attr", "misc", "ip", "pid", "tid", "time", "cpu", "period"})
    walked = bulk._gathered_while_located(PerfData.open(path), fields)
    assert (walked is not None) == fast
    took = []
    one_layout = bulk._one_layout
    monkeypatch.setattr(bulk, "_one_layout",
                        lambda *a, **k: took.append(one_layout(*a, **k)) or took[-1])
    got = bulk.sample_arrays(data)
    assert took and (took[-1] is not None) == fast
    monkeypatch.setattr(bulk, "_one_layout", lambda *a, **k: None)
    general = bulk.sample_arrays(PerfData.open(path))
    assert len(got) > 100
    assert_same_columns(got, general)
    if walked is not None:
        monkeypatch.setattr(bulk, "_gathered_while_located", lambda *a, **k: None)
        assert_same_columns(walked, bulk.sample_arrays(PerfData.open(path), callchains=False,
                                                       fields=fields))


@pytest.mark.parametrize("name", ["system-wide", "callchain"])
def test_map_records_read_in_bulk_match_the_record_decoder(corpus, name):
    from textrace.perf.abi import RecordType
    from textrace.perf.bulk import located, map_events
    from textrace.perf.reader import PerfData
    data = PerfData.open(corpus.path(name))
    types = frozenset({RecordType.MMAP, RecordType.MMAP2, RecordType.FORK})
    offsets, kinds = located(data)
    ours = map_events(data, offsets[np.isin(kinds, sorted(types))], ordered=False)
    theirs = list(data.records(types))
    assert len(ours) == len(theirs) > 10
    for ev, rec in zip(ours, theirs):
        assert ev.time == (rec.time or 0) and ev.pid == rec.pid
        if rec.type == RecordType.FORK:
            assert ev.kind == "fork" and ev.ppid == rec.ppid
        else:
            assert (ev.addr, ev.len, ev.pgoff, ev.filename) == \
                (rec.addr, rec.len, rec.pgoff, rec.filename)
            assert ev.prot == (rec.prot if rec.type == RecordType.MMAP2 else 0)
    in_time = map_events(data, offsets[np.isin(kinds, sorted(types))])
    assert [e.time for e in in_time] == sorted(e.time for e in ours)


@pytest.mark.parametrize("name", ["bpf-probe", "bpf-sideband"])
def test_code_records_read_in_bulk_match_the_record_decoder(corpus, name):
    """The KSYMBOL and BPF_EVENT records a report reads without the record classes: the
    same fields, in the same (time) order, as records_by_time() decodes them."""
    from textrace.perf.abi import RecordType
    from textrace.perf.bulk import code_events, located
    from textrace.perf.reader import PerfData
    data = PerfData.open(corpus.path(name))
    types = frozenset({RecordType.KSYMBOL, RecordType.BPF_EVENT})
    offsets, kinds = located(data)
    ours = code_events(data, offsets[np.isin(kinds, sorted(types))])
    theirs = list(PerfData.open(corpus.path(name)).records_by_time(types))
    theirs = [r for r in theirs if r.type in types]
    assert len(ours) == len(theirs) > 100
    assert {e.type for e in ours} == set(types)
    for ev, rec in zip(ours, theirs):
        assert (ev.type, ev.time, ev.cpu, ev.tid) == (rec.type, rec.time, rec.cpu, rec.tid)
        if rec.type == RecordType.KSYMBOL:
            assert (ev.addr, ev.len, ev.ksym_type, ev.flags, ev.name, ev.unregister) == \
                (rec.addr, rec.len, rec.ksym_type, rec.flags, rec.name, rec.unregister)
        else:
            assert (ev.event_type, ev.flags, ev.prog_id, ev.tag) == \
                (rec.event_type, rec.flags, rec.prog_id, rec.tag)


def test_distinct_pairs_number_each_pair_once():
    """The numbering against its definition, on few and many distinct pairs (the table
    grows many times for 300k): each pair once, numbered in order of first occurrence."""
    from textrace.history.distinct import distinct_pairs
    rng = np.random.default_rng(3)
    for n, k in [(0, 1), (1, 1), (5, 3), (1000, 7), (100_000, 5000), (100_000, 100_000),
                 (300_000, 1 << 40)]:
        a = rng.integers(0, k, n).astype(np.uint64) * np.uint64(4096)
        b = rng.integers(-1, 3, n).astype(np.int32)
        ids, first = distinct_pairs(a, b)
        pairs = set(zip(a.tolist(), b.tolist()))
        assert len(first) == len(pairs)
        assert np.array_equal(a[first[ids]], a) and np.array_equal(b[first[ids]], b)
        assert len(ids) == n and (n == 0 or ids.max() == len(first) - 1)
        assert np.array_equal(ids[first], np.arange(len(first)))
        # first[k] is where pair k first occurs, and the pairs are numbered in that order
        smallest = np.full(len(first), n)
        np.minimum.at(smallest, ids, np.arange(n))
        assert np.array_equal(first, smallest) and (np.diff(first) > 0).all()


def check_pairs_resolve_as_one_by_one(path) -> list[tuple]:
    """attribute() resolves each distinct (pid, ip) once, as of the recording's end, and
    the samples taken before that answer held one by one: every sample's key must be the
    one it gets when resolved on its own at its own time; the report's sums by pair must
    be those of the samples' keys.  Returns the keys."""
    from textrace.history.code_history import CodeHistory
    from textrace.perf.abi import MISC_CPUMODE_MASK, MISC_GUEST_KERNEL, MISC_KERNEL
    from textrace.perf.bulk import sample_arrays
    from textrace.perf.reader import PerfData
    from textrace.sources.kallsyms import read_proc_kallsyms
    from textrace.views import report
    kernel = read_proc_kallsyms()
    keys, ids, _s = report.attribute(PerfData.open(path), kernel)
    data = PerfData.open(path)
    maps, table = report._sideband(data)
    s = sample_arrays(data, callchains=False)
    mode = s.misc & MISC_CPUMODE_MASK
    in_kernel = (mode == MISC_KERNEL) | (mode == MISC_GUEST_KERNEL)
    k, u = np.flatnonzero(in_kernel), np.flatnonzero(~in_kernel)
    syms = report._Symbols()
    codes = np.empty(len(s), dtype=np.int64)
    times = s.time.astype(np.int64)
    codes[u] = report._user_codes(syms, maps, s.pid[u], s.ip[u], times[u])[0]
    codes[k] = report._kernel_codes(syms, CodeHistory(table, kernel), s.ip[k], times[k])
    alone = syms.keys(codes.tolist())
    assert len(alone) == len(ids) > 100
    every = keys.tuples()
    assert [every[i] for i in ids.tolist()] == alone
    counts, periods = report.attribution(PerfData.open(path), kernel).sums(None, len(keys))
    assert np.array_equal(counts, np.bincount(ids, minlength=len(keys)))
    assert np.array_equal(periods, np.bincount(ids, weights=s.period.astype(np.float64),
                                               minlength=len(keys)).astype(np.int64))
    return alone


@pytest.mark.parametrize("name", ["system-wide", "callchain", "multi-event"])
def test_samples_resolved_by_pair_as_one_by_one(corpus, name):
    check_pairs_resolve_as_one_by_one(corpus.path(name))


SPIN_LIB = r"""
#include <time.h>
double NAME(double seconds)
{
    struct timespec t0, t;
    double x = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int i = 0; i < 100000; i++)
            x += i * 0.5;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    return x;
}
"""
SPIN_MAIN = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    for (int k = 1; k <= 2; k++) {
        void *lib = dlopen(argv[k], RTLD_NOW);
        double (*spin)(double) = (double (*)(double))dlsym(lib, k == 1 ? "spin_a" : "spin_b");
        printf("%p\n", (void *)spin);
        fflush(stdout);
        spin(0.5);
        dlclose(lib);
    }
    return 0;
}
"""


def test_a_library_unloaded_and_another_at_its_address_resolve_by_time(tmp_path):
    """libA is dlopen'ed, spun in, dlclose'd; libB, of the same layout, is then mapped at
    the very same address and spun in: every sample must get the library mapped there at
    its own time (the report resolves each address once, as of the end, where libB is;
    libA's samples come before that), and the counts must be perf's."""
    for name in ("spin_a", "spin_b"):
        (tmp_path / f"{name}.c").write_text(SPIN_LIB.replace("NAME", name))
        subprocess.run(["clang", "-O1", "-shared", "-fPIC", "-o", str(tmp_path / f"{name}.so"),
                        str(tmp_path / f"{name}.c")], check=True)
    (tmp_path / "main.c").write_text(SPIN_MAIN)
    subprocess.run(["clang", "-O1", "-o", str(tmp_path / "main"), str(tmp_path / "main.c"),
                    "-ldl"], check=True)
    path = tmp_path / "reuse.data"
    out = subprocess.run(["perf", "record", "-q", "-o", str(path), "-e", "cpu-clock", "-F",
                          "999", "--", str(tmp_path / "main"), str(tmp_path / "spin_a.so"),
                          str(tmp_path / "spin_b.so")], check=True, capture_output=True,
                         text=True, timeout=60).stdout.split()
    assert len(out) == 2 and out[0] == out[1], f"libB was not mapped at libA's address: {out}"
    keys = check_pairs_resolve_as_one_by_one(path)
    from textrace.perf.reader import PerfData
    from textrace.sources.kallsyms import read_proc_kallsyms
    from textrace.views.report import attribution
    assert len(attribution(PerfData.open(path), read_proc_kallsyms()).early)  # libA's
    ours = {(r["dso"], r["symbol"]): r["samples"] for r in textrace_report(path)}
    a, b = ours.get(("spin_a.so", "spin_a"), 0), ours.get(("spin_b.so", "spin_b"), 0)
    assert a >= 200 and b >= 200, ours
    assert sum(k[:2] == ("spin_a", "spin_a.so") for k in keys) == a
    text = run_perf("report", "--stdio", "--no-children", "--sort", "dso,sym", "-F",
                    "sample,dso,sym", "-i", str(path))
    theirs = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0].isdigit():
            theirs[(parts[1], parts[3])] = int(parts[0])
    assert theirs.get(("spin_a.so", "spin_a")) == a and theirs.get(("spin_b.so", "spin_b")) == b


def _perf_choice(a, b) -> bool:
    """perf's choose_best_symbol (tools/perf/util/symbol.c), as written there: True if it
    keeps `a` (met first) over `b`; each is (name, size, binding)."""
    if (b[1] == 0) != (a[1] == 0):
        return a[1] > 0
    if (a[2] == "STB_WEAK") != (b[2] == "STB_WEAK"):
        return b[2] == "STB_WEAK"
    if (a[2] == "STB_GLOBAL") != (b[2] == "STB_GLOBAL"):
        return a[2] == "STB_GLOBAL"
    under = [len(x[0]) - len(x[0].lstrip("_")) for x in (a, b)]
    if under[0] != under[1]:
        return under[0] < under[1]
    return len(a[0]) >= len(b[0])


@pytest.mark.parametrize("path", ["/usr/lib/x86_64-linux-gnu/libc.so.6",
                                  "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
                                  "/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1"])
def test_one_symbol_per_address_is_perfs_choice(path):
    """Of the FUNC symbols at one address (aliases: memcpy and __memcpy_avx_unaligned,
    C++ constructors C1/C2), the one kept is the one perf's choose_best_symbol keeps, going
    through them in file order: the symbol table read by pyelftools, an independent reader."""
    if not os.path.exists(path):
        pytest.skip(f"{path} is not installed")
    from elftools.elf.elffile import ELFFile
    from textrace.history.userspace import elf_symbols_of
    from textrace.sources.elf_files import _map
    with open(path, "rb") as f:
        elf = ELFFile(f)
        table = elf.get_section_by_name(".symtab") or elf.get_section_by_name(".dynsym")
        by_addr: dict[int, list[tuple]] = {}
        for sym in table.iter_symbols():
            if sym["st_info"]["type"] in ("STT_FUNC", "STT_LOOS") and sym["st_value"] and \
                    sym["st_shndx"] != "SHN_UNDEF" and sym.name:
                by_addr.setdefault(sym["st_value"], []).append(
                    (sym.name, sym["st_size"], sym["st_info"]["bind"]))
    ours = elf_symbols_of(_map(path))
    kept = {int(a): ours.name(i) for i, a in enumerate(ours.addrs.tolist())}
    aliased = {a: syms for a, syms in by_addr.items() if len(syms) > 1}
    assert len(aliased) > 20
    for addr, syms in aliased.items():
        best = syms[0]
        for other in syms[1:]:
            if not _perf_choice(best, other):
                best = other
        assert kept[addr] == best[0], (hex(addr), syms)


def test_mappings_of_every_process_resolve_as_one_at_a_time():
    """lookup_all (one search for every process) against the definition: the last mapping
    of the process covering the address, made at or before the sample."""
    from textrace.history.userspace import Mapping, ProcessMaps
    rng = np.random.default_rng(7)
    for trial in range(100):
        maps = ProcessMaps()
        for pid in rng.integers(1, 20, 8).tolist():
            for _ in range(int(rng.integers(0, 12))):
                lo = int(rng.integers(0, 40)) << 12
                maps.mmap(pid, Mapping(int(rng.integers(0, 100)), lo,
                                       lo + (int(rng.integers(0, 8)) << 12), 0, "f"))
            if trial % 3 == 0:   # [vsyscall]: above 2**48
                maps.mmap(pid, Mapping(0, 0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000, 0, "v"))
            if rng.random() < 0.4:
                maps.fork(pid, int(rng.integers(1, 20)))
        n = 500
        pids = rng.integers(0, 22, n).astype(np.int32)
        addrs = rng.integers(0, 48 << 12, n).astype(np.uint64)
        addrs[::9] = 0xFFFFFFFFFF600010
        times = rng.integers(0, 120, n).astype(np.int64)
        got, number = maps.lookup_all(pids, addrs, times)
        every = [maps.made[k] for k in number.tolist()]
        for i in range(n):
            plist = maps.maps.get(int(pids[i]), [])
            want = None
            for m in plist:
                if m.start <= int(addrs[i]) < m.end and m.time <= int(times[i]):
                    want = m
            assert (every[got[i]] if got[i] >= 0 else None) == want, (trial, i)
            single = maps.lookup(int(pids[i]), addrs[i:i + 1], times[i:i + 1])[0]
            assert (plist[single] if single >= 0 else None) == want


def test_json_lines_are_json_dumps():
    import json
    from textrace.views.report import ReportRow
    rows = [ReportRow("_PyObject_Free", "libpython3.11.so.1.0", "user", 44501, 2225050000,
                      np.round(np.float64(18.3951), 2)),
            ReportRow('odd "name"\\\t\u00e9\u2603', "[kernel.kallsyms]", "kernel", 1, 1, 0.0),
            ReportRow("x", "[unknown]", "unknown", 3, 7, 100.0)]
    for row in rows:
        assert row.to_json() == json.dumps(row.to_dict(), separators=(",", ":"))


def test_kallsyms_parse_takes_the_lines_the_format_allows():
    """The vectorised parse against the line format as a regular expression, on the live
    /proc/kallsyms and on lines it must skip."""
    import re
    from textrace.history.kallsyms import KernelSymbols
    line = re.compile(r"^([0-9a-f]{16}) [tTwW] (\S+)(?:\t\[(\S+)\])?$", re.M)
    with open("/proc/kallsyms") as f:
        live = f.read()
    odd = ("ffffffff81000000 T two words\nffffffff81000001 t tabbed\tx\n"
           "ffffffff81000002 t m\t[mod]\nffffffff81000003 d data\nffffffff8100000g T hex\n"
           "ffffffff81000004 T e\t[]\n0000000000000000 T hidden\nffffffff81000005 W w\t[a b]\n"
           "FFFFFFFF81000006 T upper\nffffffff81000007 w last")
    for text in (live, live + odd, odd):
        rows = line.findall(text)
        addrs = np.array([int(r[0], 16) for r in rows], dtype=np.uint64)
        keep = np.flatnonzero(addrs != 0)
        order = keep[np.argsort(addrs[keep], kind="stable")].tolist()
        k = KernelSymbols.parse(text)
        assert np.array_equal(k.addrs, addrs[order])
        assert k.names == [rows[i][1] for i in order]
        assert k.modules == [rows[i][2] or None for i in order]
        fresh = KernelSymbols.parse(text)
        for name in ("_text", "m", "last", "nope", rows[order[len(order) // 2]][1]):
            assert fresh.address_of(name) == k.address_of(name)


def test_kallsyms_read_in_the_background_is_the_file():
    from textrace.sources.kallsyms import KallsymsReader, read_proc_kallsyms
    ahead = KallsymsReader().result()
    now = read_proc_kallsyms()
    text = now.addrs[now.lookup([now.address_of("_text")])[0]]
    assert ahead.address_of("_text") == int(text)
    assert abs(len(ahead) - len(now)) < 100   # BPF programs come and go in between


def test_kallsyms_reader_reports_errors_and_survives_its_child():
    """A file that cannot be read raises OSError, as reading it would; a child killed
    before it is done leaves the parent to read the file itself (a real text file here,
    so that the two results can be compared exactly)."""
    import signal
    from textrace.history.kallsyms import KernelSymbols
    from textrace.sources.kallsyms import KallsymsReader
    with pytest.raises(FileNotFoundError):
        KallsymsReader("/nonexistent/kallsyms").result()
    text = open("/proc/kallsyms", "rb").read()
    with tempfile.NamedTemporaryFile(suffix=".kallsyms") as f:
        f.write(text)
        f.flush()
        expect = KernelSymbols.parse(text)
        reader = KallsymsReader(f.name)
        os.kill(reader.pid, signal.SIGKILL)
        got = reader.result()
        ok = KallsymsReader(f.name).result()
        for syms in (got, ok):
            assert np.array_equal(syms.addrs, expect.addrs)
            assert [syms.name(i) for i in range(0, len(syms), 997)] == \
                [expect.name(i) for i in range(0, len(expect), 997)]


@pytest.mark.parametrize("path", ["/usr/bin/perf", "/usr/lib/x86_64-linux-gnu/libc.so.6"])
def test_elf_headers_read_as_pyelftools_reads_them(path):
    """The section and segment tables textrace reads with numpy, against pyelftools."""
    from elftools.elf.elffile import ELFFile
    from textrace.history.userspace import _Elf
    if not os.path.exists(path):
        pytest.skip(f"no {path}")
    raw = open(path, "rb").read()
    ours = _Elf(raw)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sections = [(s.name, s["sh_type"], s["sh_offset"], s["sh_size"], s["sh_link"],
                     s["sh_entsize"], s["sh_addr"]) for s in elf.iter_sections()]
        segments = [(s["p_type"], s["p_offset"], s["p_vaddr"], s["p_filesz"])
                    for s in elf.iter_segments()]
    assert len(ours.shdrs) == len(sections)
    for i, (name, _type, off, size, link, entsize, addr) in enumerate(sections):
        sh = ours.shdrs[i]
        assert ours.names.get(name, i) <= i
        assert (int(sh["sh_offset"]), int(sh["sh_size"]), int(sh["sh_link"]),
                int(sh["sh_entsize"]), int(sh["sh_addr"])) == (off, size, link, entsize, addr)
    load = [(int(p["p_offset"]), int(p["p_vaddr"]), int(p["p_filesz"]))
            for p in ours.phdrs if p["p_type"] == 1]
    assert load == [(o, v, n) for t, o, v, n in segments if t == "PT_LOAD"]


def _perf_rows(path) -> dict[tuple[str, str], list[float]]:
    """perf's rows by (dso, symbol): a list, as symbols of one name (C++ overloads, local
    functions) are rows of their own."""
    out = run_perf("report", "--stdio", "--no-children", "-g", "none", "--sort", "dso,sym",
                   "-i", str(path))
    rows: dict[tuple[str, str], list[float]] = {}
    for line in out.splitlines():
        m = _ROW.match(line)
        if m:
            pct, dso, _mode, sym = m.groups()
            rows.setdefault((dso, sym), []).append(float(pct))
    return rows


def test_build_workload_matches_perf_report(tmp_path):
    """clang compiling in a loop: C++ names demangled as perf prints them, addresses no
    symbol covers a row each (0x<offset in the file>), ld.so and libc symbols from their
    separate debug files (by build-id)."""
    import shutil
    clang = shutil.which("clang")
    if clang is None or shutil.which("perf") is None:
        pytest.skip("needs clang and perf")
    src = os.path.join(os.path.dirname(__file__), "bpf", "calls.bpf.c")
    path = tmp_path / "build.data"
    loop = (f"end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do {clang} -O2 -g "
            f"-target bpf -I/usr/include/$(uname -m)-linux-gnu -c {src} -o /dev/null; done")
    subprocess.run(["perf", "record", "-q", "-o", str(path), "-e", "cpu-clock", "-F", "4000",
                    "-g", "-a", "--", "sh", "-c", f"({loop}) & ({loop}); wait"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60)
    theirs = _perf_rows(path)
    ours: dict[tuple[str, str], list[float]] = {}
    for r in textrace_report(path, "--sort", "symbol"):
        ours.setdefault((r["dso"], r["symbol"]), []).append(r["percent"])
    assert any(s.startswith("0x") for _d, s in ours), "no per-address rows"
    assert any("::" in s for _d, s in ours), "no C++ names"
    significant = {k: v for k, v in theirs.items() if max(v) > 0.1}
    assert len(significant) > 20, theirs
    for key, pcts in significant.items():
        assert key in ours, (key, pcts)
        got = sorted(ours[key])
        assert len(got) == len(pcts), (key, pcts, got)
        for a, b in zip(got, sorted(pcts)):
            assert a == pytest.approx(b, abs=0.011), (key, pcts, got)


def test_text_table_holds_the_json_rows_aligned(corpus):
    """The default text table (texttable, not rich) has the JSON's rows in its order, each
    cell in its column under the header: dsos with spaces ("[JIT] tid N") included."""
    path = corpus.path("system-wide")
    rows = textrace_report(path)
    r = subprocess.run([sys.executable, "-m", "textrace", "report", "-i", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    header, *lines = r.stdout.splitlines()
    assert header.split() == ["Overhead", "Samples", "Shared", "Object", "Symbol"]
    dso_at, sym_at = header.index("Shared Object"), header.index("Symbol")
    samples_end = header.index("Samples") + len("Samples")
    assert len(lines) == len(rows) > 10
    for line, row in zip(lines, rows):
        assert line[:dso_at].split() == [f"{row['percent']:.2f}%", str(row["samples"])]
        assert line[dso_at - 2:dso_at] == "  " and line[samples_end - 1] != " "
        assert line[dso_at:sym_at].rstrip() == row["dso"]
        tag = "[k]" if row["kind"] not in ("user", "unknown") or row["dso"].startswith("[k") \
            else "[.]"
        assert line[sym_at:] == f"{tag} {row['symbol']}"
    assert not any(line.endswith(" ") for line in lines)


def test_addresses_are_named_as_perf_prints_them():
    """An address no symbol covers is a row named "0x%016x" (perf's map-relative address):
    made by numpy for 100k rows at once, checked against the format at the edges."""
    from textrace.views.report import _hex_names
    values = np.array([0, 1, 0xF, 0x10, 0x00007F0000001000, (1 << 63) + 5, (1 << 64) - 1],
                      dtype=np.uint64)
    assert _hex_names(values) == ["0x%016x" % v for v in values.tolist()]
    assert _hex_names(np.zeros(0, dtype=np.uint64)) == []


def test_symbol_column_lines_are_its_strings():
    """The text table's symbol lines (named rows joined, addresses laid out by numpy,
    interleaved by row) are the symbols' strings one a line; a name with a newline gives
    none (the table then takes the strings), and head() keeps the rows in order."""
    from textrace.views.report import SymbolColumn
    is_named = np.array([True, False, False, True, False, True])
    col = SymbolColumn(["f", "é::g", ""], np.array([0x10, 1 << 63, 0xABC], dtype=np.uint64),
                       is_named)
    assert col.strings() == ["f", "0x0000000000000010", "0x8000000000000000", "é::g",
                             "0x0000000000000abc", ""]
    assert col.utf8_lines() == ("\n".join(col.strings()) + "\n").encode()
    assert col.head(4).strings() == col.strings()[:4]
    assert col.head(99).strings() == col.strings()
    assert SymbolColumn(["a\nb"], np.zeros(0, dtype=np.uint64),
                        np.array([True])).utf8_lines() is None
    empty = SymbolColumn([], np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool))
    assert empty.strings() == [] and empty.utf8_lines() == b""


def test_json_lines_are_each_rows_json():
    """The JSON lines (each place's dso and kind encoded once, the address rows' names
    made by numpy) are ReportRow.to_json() of each row: numbers of every width, zero,
    percents whose hundredths or tenths are 0, names needing escapes."""
    from textrace.views.report import ReportTable, SymbolColumn
    rng = np.random.default_rng(5)
    n = 2000
    is_named = rng.random(n) < 0.3
    named = [rng.choice(["f", "é::g<int>", 'a"b\\c', "x\ny", ""]) for _ in
             range(int(is_named.sum()))]
    addrs = rng.integers(0, 1 << 63, n - len(named)).astype(np.uint64)
    samples = rng.choice([0, 1, 9, 10, 99, 12345, 10**9], n).astype(np.int64)
    period = rng.choice([0, 7, 100, 250000, 10**15], n).astype(np.int64)
    percent = np.round(rng.choice([0.0, 0.01, 0.05, 0.1, 0.29, 1.0, 4.18, 10.1, 12.5,
                                   99.99, 100.0], n), 2)
    places = [("[kernel.kallsyms]", "kernel"), ("lib\u00e9.so", "user"), ("[unknown]", "")]
    table = ReportTable(SymbolColumn(named, addrs, is_named),
                        rng.integers(0, len(places), n).astype(np.int64), places, samples,
                        period, percent)
    assert table.json_lines() == "".join(r.to_json() + "\n" for r in table.rows())
    lines = table.json_lines().splitlines()
    assert [json.loads(line)["percent"] for line in lines] == percent.tolist()
