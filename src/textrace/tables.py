"""The code history as tables: one builder per table, each over one loaded source.

A source is loaded once: a perf.data recording into a `Source` (its history, programs and
data), or one boot of a code store (`textrace daemon --store DIR`) into a `StoreSource`.  Each table builder takes a Source and yields
column batches (`dict` of column name -> list or numpy array, `Coded` or `Masked`), in
the columns and types TABLES declares; `export` writes them to Parquet and `sql` queries
them.  Every row carries its recording's id, so the tables of many recordings (many hosts,
many boots) can be put side by side and kept apart.

Times are integers in ns on the recording's clock (CLOCK_MONOTONIC for `textrace record`,
perf's clock unless --clockid for `perf record`: recordings.clock names it); kernel and user
addresses are uint64.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterator

import numpy as np

from .errors import TextraceError
from .history.code_history import CodeHistory
from .history.versions import code_versions
from .perf.reader import PerfData

# name -> [(column, type, what)]; types: string, int32, int64, uint64, bool, binary,
# timestamp (UTC, microseconds).  The one declaration of every table's layout.
TABLES: dict[str, list[tuple[str, str, str]]] = {
    "recordings": [
        ("recording", "string", "id of the recording: a digest of the file's first and "
                                "last MiB and its size; a store's boot: its boot_id"),
        ("file", "string", "path as given (a store's directory)"),
        ("size", "int64", "bytes; null for a store"),
        ("host", "string", "uname nodename (HEADER_HOSTNAME)"),
        ("boot", "string", "the kernel's boot_id (a store's boot); null for perf.data"),
        ("kernel_release", "string", "uname release (HEADER_OSRELEASE)"),
        ("arch", "string", "uname machine"),
        ("nr_cpus", "int32", "online CPUs"),
        ("writer", "string", "perf version, textrace, or textrace daemon"),
        ("cmdline", "string", "the command that made the recording"),
        ("clock", "string", "clock of every time column: monotonic, boottime, ... or "
                            "perf_clock"),
        ("clockid", "int32", "the clock's id (CLOCK_MONOTONIC = 1), null for perf_clock"),
        ("clock_to_wall_ns", "int64", "add to a time to get ns since the epoch "
                                      "(HEADER_CLOCK_DATA), null without"),
        ("clock_zero", "timestamp", "wall time when the clock read 0: the boot, for "
                                    "monotonic/boottime"),
        ("kernel_text", "uint64", "address of _text (KASLR slide): one boot's kernel"),
        ("first_sample_ns", "int64", ""), ("last_sample_ns", "int64", ""),
        ("samples", "int64", "SAMPLE records"),
        ("lost", "int64", "records the kernel lost (LOST)"),
        ("lost_samples", "int64", "samples the kernel lost (LOST_SAMPLES)"),
        ("capture", "string", "how textrace captured programs: kernel, user; null for perf"),
    ],
    "programs": [
        ("recording", "string", ""),
        ("id", "int64", "BPF program id"),
        ("tag", "string", "hex"),
        ("name", "string", ""),
        ("type", "string", "prog type (socket_filter, kprobe, ...), null when not captured"),
        ("loaded_ns", "int64", "null: loaded before the recording"),
        ("unloaded_ns", "int64", "null: still loaded at its end"),
        ("captured", "bool", "the JIT image is in the file"),
        ("capture", "string", "kernel, user"),
        ("reason", "string", "why it was not captured"),
        ("funcs", "int32", "JIT'd functions"),
        ("jited_len", "int64", "bytes of JIT code, all functions"),
    ],
    "functions": [
        ("recording", "string", ""),
        ("program", "int64", "BPF program id"),
        ("loaded_ns", "int64", "the program's (ids are unique within a boot)"),
        ("func", "int32", "0: main program, then subprograms"),
        ("addr", "uint64", "kernel virtual address"),
        ("len", "int64", "bytes"),
        ("jited", "binary", "the JIT image, null when not captured"),
    ],
    "code_versions": [
        ("recording", "string", ""),
        ("start", "uint64", "kernel virtual address"),
        ("end", "uint64", "one past the last byte"),
        ("bytes", "binary", ""),
        ("valid_from", "int64", "ns; null: before the recording"),
        ("valid_to", "int64", "ns; null: still so at its end"),
        ("how", "string", "capture, kernel_read, text_poke, inferred"),
        ("symbol", "string", "the program function or trampoline, null for kernel text"),
        ("program", "int64", "BPF program id, null for other code"),
    ],
    "pokes": [
        ("recording", "string", ""),
        ("time", "int64", "ns"),
        ("addr", "uint64", "kernel virtual address"),
        ("kind", "string", "jump_label, ftrace, static_call, bpf_trampoline, bpf_dispatcher, "
                           "tail_call, kprobe, unknown"),
        ("why", "string", "what made it that kind"),
        ("old", "binary", ""), ("new", "binary", ""),
        ("symbol", "string", "symbol at addr at that time"),
        ("reported", "bool", "false: found by re-reading the code, no TEXT_POKE said so"),
        ("window_start", "int64", "INT3 window: the bytes may be mid-change"),
        ("window_end", "int64", ""),
        ("batch", "int32", "pokes sharing that window"),
    ],
    "samples": [
        ("recording", "string", ""),
        ("time", "int64", "ns"),
        ("cpu", "int32", "null when the event does not record it"),
        ("pid", "int32", ""), ("tid", "int32", ""),
        ("ip", "uint64", ""),
        ("period", "int64", ""),
        ("event", "string", "the sampling event"),
        ("symbol", "string", "symbol at ip as of the sample's time (as `report`)"),
        ("symbol_addr", "uint64", "the symbol's address where names repeat (C++, locals)"),
        ("dso", "string", ""),
        ("kind", "string", "kernel, module, bpf, ool, user, unknown"),
        ("program", "int64", "BPF program id when the sample is in one"),
    ],
}

_INT64_MAX = (1 << 63) - 1  # a u64 time beyond it (damage): the far future, as regions._ns
SAMPLE_BATCH = 1 << 18   # rows per samples batch (a Parquet row group each)


@dataclass
class Coded:
    """A column of strings as codes into `names` (Parquet dictionary encoding)."""
    codes: np.ndarray
    names: list[str]


@dataclass
class Masked:
    """A column with nulls where `null` is True."""
    values: np.ndarray
    null: np.ndarray


Batch = dict[str, object]


@dataclass
class Source:
    """One recording, loaded once for every table builder."""

    recording: str
    data: PerfData
    history: CodeHistory
    programs: list          # history.programs.Program, in load order

    @classmethod
    def open(cls, path: str, *, salvage: bool = False) -> "Source":
        """Read the recording at `path` and load its code history once."""
        from .load import load_history
        data = PerfData.open(path, salvage=salvage)
        history, programs = load_history(data)
        return cls(recording_id(path), data, history, programs)

    @cached_property
    def prog_rows(self) -> list:
        """The rows of `textrace progs` (views.progs.ProgRow)."""
        from .views.progs import prog_rows
        return prog_rows(self.data)


def recording_id(path: str) -> str:
    """16 hex digits of BLAKE2b over the file's size, first and last MiB: the same file
    gets the same id on any host, under any name, without reading all of it."""
    h = hashlib.blake2b(digest_size=8)
    if path == "-":
        h.update(os.urandom(16))   # a stream cannot be read twice: an id of its own
        return h.hexdigest()
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        h.update(size.to_bytes(8, "little"))
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
    return h.hexdigest()


# --- recordings -------------------------------------------------------------------------

_CLOCK_NAMES = {0: "realtime", 1: "monotonic", 4: "monotonic_raw", 7: "boottime", 11: "tai"}


def recordings(src: Source) -> Iterator[Batch]:
    """One row: where the recording came from (host, kernel, writer), its clock and the
    offset to wall time, sample counts and losses."""
    from .perf.abi import Feature, RecordType
    from .recorded import recorded
    data = src.data
    for _ in data.records(frozenset({RecordType.LOST, RecordType.LOST_SAMPLES})):
        pass   # counts every kind on the way (data.stats), losses included
    stats = data.stats

    def feat(fid, attr):
        try:
            f = data.feature(fid)
        except TextraceError:   # a damaged section: the column is null, the export goes on
            return None
        return getattr(f, attr, None) if f is not None else None

    attr = data.attrs[0].attr if data.attrs else None
    clockid = attr.clockid if attr is not None and attr.flag("use_clockid") else None
    clock_data = feat(Feature.CLOCK_DATA, "clockid_ns")
    to_wall = (feat(Feature.CLOCK_DATA, "tod_ns") - clock_data) if clock_data else None
    cmdline = feat(Feature.CMDLINE, "argv")
    version = feat(Feature.VERSION, "value")
    capture = None
    rec = recorded(data)
    if rec.textrace:  # finished, or killed and read from its stream
        writer = "textrace"
        capture = rec.info.get("capture")
    else:
        writer = f"perf {version}" if version else None
    kernel = src.history.kernel
    text = kernel.address_of("_text") if kernel is not None else None
    samples = stats.by_type.get(RecordType.SAMPLE, 0)
    size = os.path.getsize(data.path) if os.path.isfile(data.path) else None
    yield {
        "recording": [src.recording], "file": [data.path], "size": [size],
        "host": [feat(Feature.HOSTNAME, "value")], "boot": [None],
        "kernel_release": [feat(Feature.OSRELEASE, "value")],
        "arch": [feat(Feature.ARCH, "value")],
        "nr_cpus": [feat(Feature.NRCPUS, "nr_cpus_online")],
        "writer": [writer], "cmdline": [" ".join(cmdline) if cmdline else None],
        "clock": [_CLOCK_NAMES.get(clockid, str(clockid)) if clockid is not None
                  else "perf_clock"],
        "clockid": [clockid], "clock_to_wall_ns": [to_wall],
        "clock_zero": [to_wall // 1000 if to_wall is not None and clockid in (1, 7)
                       else None],
        "kernel_text": [text],
        "first_sample_ns": [feat(Feature.SAMPLE_TIME, "first_sample_time") or None],
        "last_sample_ns": [feat(Feature.SAMPLE_TIME, "last_sample_time") or None],
        "samples": [samples], "lost": [stats.lost], "lost_samples": [stats.lost_samples], "capture": [capture],
    }


# --- programs and their functions ---------------------------------------------------------

def programs(src: Source) -> Iterator[Batch]:
    """One row per program load: id, tag, name, type, lifetime (ns), how it was captured."""
    rows = src.prog_rows
    yield {
        "recording": [src.recording] * len(rows),
        "id": [r.id for r in rows], "tag": [r.tag for r in rows],
        "name": [r.name or None for r in rows], "type": [r.type for r in rows],
        "loaded_ns": [r.loaded_ns for r in rows], "unloaded_ns": [r.unloaded_ns for r in rows],
        "captured": [r.captured for r in rows], "capture": [r.capture for r in rows],
        "reason": [r.reason for r in rows], "funcs": [len(r.funcs) for r in rows],
        "jited_len": [sum(f["len"] for f in r.funcs) for r in rows],
    }


def functions(src: Source) -> Iterator[Batch]:
    """One row per JIT'd function of each program: address, length and JIT bytes."""
    cols: dict[str, list] = {name: [] for name, _t, _d in TABLES["functions"]}
    for r in src.prog_rows:
        for k, f in enumerate(r.funcs):
            cols["recording"].append(src.recording)
            cols["program"].append(r.id)
            cols["loaded_ns"].append(r.loaded_ns)
            cols["func"].append(k)
            cols["addr"].append(f["addr"])
            cols["len"].append(f["len"])
            cols["jited"].append(bytes.fromhex(f["jited"]) if f["jited"] else None)
    yield cols


# --- code versions and pokes -----------------------------------------------------------------

def versions(src: Source) -> Iterator[Batch]:
    """One row per code version: bytes at [start, end) from valid_from to valid_to (ns)."""
    vs = code_versions(src.history)
    yield {
        "recording": [src.recording] * len(vs),
        "start": [v.start for v in vs], "end": [v.end for v in vs],
        "bytes": [v.data for v in vs], "valid_from": [v.valid_from for v in vs],
        "valid_to": [v.valid_to for v in vs], "how": [v.how for v in vs],
        "symbol": [v.symbol for v in vs], "program": [v.prog_id for v in vs],
    }


def pokes(src: Source) -> Iterator[Batch]:
    """One row per code change (TEXT_POKE or inferred), classified, with its INT3 window."""
    from .views.pokes import poke_rows
    rows = poke_rows(src.data, history=src.history)
    yield {
        "recording": [src.recording] * len(rows),
        "time": [r.time for r in rows], "addr": [r.addr for r in rows],
        "kind": [r.kind for r in rows], "why": [r.why for r in rows],
        "old": [bytes.fromhex(r.old) for r in rows], "new": [bytes.fromhex(r.new) for r in rows],
        "symbol": [r.symbol for r in rows], "reported": [r.reported for r in rows],
        "window_start": [r.ambiguous[0] for r in rows],
        "window_end": [r.ambiguous[1] for r in rows], "batch": [r.batch for r in rows],
    }


# --- samples -------------------------------------------------------------------------------

def samples(src: Source, progress: Callable[[int, int], None] | None = None
            ) -> Iterator[Batch]:
    """Every sample with the symbol its ip was in at its time, as `report` attributes it
    (the same function), in batches of SAMPLE_BATCH rows in file order."""
    from .perf.bulk import sample_arrays
    from .views.report import attribute
    data = src.data
    # the columns attribute() does not keep, gathered first: it releases the file's pages
    extra = sample_arrays(data, callchains=False, fields=frozenset({"attr", "cpu", "tid"}))
    symbol_keys, ids, s = attribute(data, src.history.kernel)
    keys = symbol_keys.tuples()
    n = len(ids)
    names: dict[str, int] = {}
    dsos: dict[str, int] = {}
    kinds: dict[str, int] = {}
    sym_code = np.array([names.setdefault(k[0], len(names)) for k in keys], dtype=np.int32)
    dso_code = np.array([dsos.setdefault(k[1], len(dsos)) for k in keys], dtype=np.int32)
    kind_code = np.array([kinds.setdefault(k[2], len(kinds)) for k in keys], dtype=np.int32)
    sym_addr = np.array([k[3] if len(k) > 3 else 0 for k in keys], dtype=np.uint64)
    has_addr = np.array([len(k) > 3 for k in keys], dtype=bool)
    events = [data.attr_name(i) for i in range(len(data.attrs))]
    # cpu is null in samples of events that do not record it (per-task perf record)
    from .perf.abi import SampleType
    no_cpu = np.array([not a.attr.sample_type & SampleType.CPU for a in data.attrs] + [True],
                      dtype=bool)
    # the program of each sample in one: its region as of the sample's time
    program = np.zeros(n, dtype=np.int64)
    in_prog = np.zeros(n, dtype=bool)
    if "bpf" in kinds and n:
        is_bpf = (kind_code == kinds["bpf"])[ids]
        sel = np.flatnonzero(is_bpf)
        table = src.history.table
        region = table.lookup(s.ip[sel], s.time[sel].view(np.int64))
        prog_of = np.array([-1 if r.prog_id is None else r.prog_id for r in table.regions]
                           + [-1], dtype=np.int64)
        got = prog_of[region]
        program[sel] = got
        in_prog[sel] = got >= 0
    sym_names, dso_names, kind_names = list(names), list(dsos), list(kinds)
    rec = Coded(np.zeros(0, dtype=np.int32), [src.recording])
    for lo in range(0, n, SAMPLE_BATCH):
        hi = min(n, lo + SAMPLE_BATCH)
        k = ids[lo:hi]
        yield {
            "recording": Coded(np.zeros(hi - lo, dtype=np.int32), rec.names),
            "time": np.minimum(s.time[lo:hi], np.uint64(_INT64_MAX)).view(np.int64),
            "cpu": Masked(extra.cpu[lo:hi].astype(np.int32),
                          no_cpu[np.asarray(extra.attr[lo:hi], dtype=np.int64)]),
            "pid": s.pid[lo:hi], "tid": extra.tid[lo:hi],
            "ip": s.ip[lo:hi],
            "period": s.period[lo:hi].view(np.int64),
            "event": Coded(np.asarray(extra.attr[lo:hi], dtype=np.int32), events),
            "symbol": Coded(sym_code[k], sym_names),
            "symbol_addr": Masked(sym_addr[k], ~has_addr[k]),
            "dso": Coded(dso_code[k], dso_names),
            "kind": Coded(kind_code[k], kind_names),
            "program": Masked(program[lo:hi], ~in_prog[lo:hi]),
        }
        if progress is not None:
            progress(hi, n)


BUILDERS: dict[str, Callable[..., Iterator[Batch]]] = {
    "recordings": recordings, "programs": programs, "functions": functions,
    "code_versions": versions, "pokes": pokes, "samples": samples,
}


# --- a code store: one recording per boot -----------------------------------------------------

@dataclass
class StoreSource:
    """One boot of a code store (`textrace daemon --store DIR`), loaded once for the same
    builders.  Its recording id is the boot's boot_id: the kernel's random id of the boot,
    the same whatever the store's path or wherever it is copied, and what the store itself
    keys boots by.  Times are ns on perf_clock of that boot."""

    recording: str
    directory: str
    store: object           # textrace.store.Store
    boot: object            # textrace.store.Boot
    history: CodeHistory
    prog_rows: list         # views.progs.ProgRow, one per load, in load order
    data = None             # no perf.data: views.pokes reads the history alone

    @classmethod
    def boots(cls, directory: str) -> Iterator["StoreSource"]:
        """A source per boot of the store in `directory`, oldest first, each loaded as it
        is reached (one boot's history in memory at a time)."""
        import textrace.store
        st = textrace.store.open(directory)
        try:
            for boot in st.boots():
                yield cls.open(st, directory, boot)
        finally:
            st.close()

    @classmethod
    def open(cls, st, directory: str, boot) -> "StoreSource":
        """Load one boot of the open store `st`: its history, and a row per load with the
        JIT code rebuilt where the image was kept."""
        from .history.code_history import Image
        from .views.progs import ProgRow
        history = st.history(boot.id)
        rows, images = [], []
        for ld in st.loads(boot.id):
            info = st.prog_info(ld)
            code = {a: c for a, _n, c in info.funcs()} if info is not None else {}
            if info is not None:
                # stamped as load.program_images does: the capture's time, not
                # before the load
                when = ld.capture_ns or ld.load_ns or 0
                if ld.load_ns is not None and when < ld.load_ns:
                    when = ld.load_ns
                images += [Image(a, c, when, f"bpf:{ld.prog_id}") for a, c in code.items()]
            reason = ld.reason
            if info is None and reason is None:
                reason = ("image evicted from the store (its budget)" if ld.evicted
                          else "not captured by the daemon")
            rows.append(ProgRow(
                id=ld.prog_id, tag=ld.tag.hex(), name=ld.name, type=ld.type,
                loaded_ns=ld.load_ns, unloaded_ns=ld.unload_ns, captured=info is not None,
                capture=ld.method, reason=reason,
                funcs=[{"addr": a, "len": n, "jited": code[a].hex() if a in code else None}
                       for a, n in zip(ld.addrs, ld.lens)]))
        history.add_images(images)   # Store.history holds only the out-of-line code's
        return cls(boot.boot_id, directory, st, boot, history, rows)


def store_recordings(src: StoreSource) -> Iterator[Batch]:
    """The boot as a recording: what the store keeps of it (no host, arch or samples)."""
    kernel = src.history.kernel
    methods = sorted({r.capture for r in src.prog_rows if r.capture})
    row = {name: [None] for name, _t, _d in TABLES["recordings"]}
    row.update({
        "recording": [src.recording], "file": [src.directory], "boot": [src.boot.boot_id],
        "kernel_release": [src.boot.release or None], "writer": ["textrace daemon"],
        "clock": ["perf_clock"],
        "kernel_text": [kernel.address_of("_text") if kernel is not None else None],
        "samples": [0], "capture": [",".join(methods) or None],
    })
    yield row


def store_samples(src: StoreSource, progress: Callable[[int, int], None] | None = None
                  ) -> Iterator[Batch]:
    """A store keeps no samples: no rows."""
    return iter(())


STORE_BUILDERS: dict[str, Callable[..., Iterator[Batch]]] = {
    **BUILDERS, "recordings": store_recordings, "samples": store_samples,
}


def builders(src) -> dict[str, Callable[..., Iterator[Batch]]]:
    """The table builders for a source: the recording's, or a store boot's."""
    return STORE_BUILDERS if isinstance(src, StoreSource) else BUILDERS
