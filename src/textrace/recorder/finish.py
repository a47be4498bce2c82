"""The end of a recording, made from its data stream alone: by the recorder when it stops,
and by `textrace recover` for a file whose recorder was killed or that was cut.

Everything the end holds was streamed while recording (perf/stream.py): the captures become
HEADER_BPF_PROG_INFO and HEADER_BPF_BTF, RECORD_INFO gives the other features (host, cpus,
cmdline, event names, clock), and textrace's own section gets every entry.  The end is
written after the data and the header last: the feature table and sections first, fsync,
then the 104-byte header that names them (one write within the first sector), fsync.  A kill
before the header leaves the header of the last round, which names only the data: readers
ignore what follows it, and `recover` finishes the file again.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass, field

from ..errors import FormatError, TextraceError
from ..perf.abi import Feature, RecordType
from ..perf.header import RECORD_HEADER, SECTION, FileHeader, parse_file_header
from ..perf.private import FEATURE_BIT, Kind
from ..perf.reader import PerfData, map_file
from ..perf.stream import StreamDamage, read_entries


@dataclass
class FinishReport:
    """What finishing a file wrote: counts of the entries moved from its stream into the
    header features and textrace's section, and the stream damage skipped."""

    path: str
    programs: int = 0            # outcomes: programs with a capture entry
    captured: int = 0            # of which with info and JIT images
    btfs: int = 0
    kernel_code: int = 0
    unreported: int = 0
    features: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)


def finish_file(path: str) -> FinishReport:
    """Write the end of the file at `path` from its stream.  The file must end with its
    records (header data size = where they end); anything after them is replaced.

    One walk over the stream, in bounded memory however many programs it holds: each
    capture's BPF_PROG_INFO entry is copied into place as it is met (perf reads the entries
    in any order), its outcome line and BTF go to temporary files, and the rest (kallsyms,
    kernel code, RECORD_INFO) is small or bounded by the recorder's budget."""
    import tempfile
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        data = PerfData(buf, path=path, salvage=True)
        header = data.header
        report = FinishReport(path)
        end = header.data.end
        os.ftruncate(fd, end)
        with tempfile.TemporaryFile() as outcomes, tempfile.TemporaryFile() as btf_kept, \
                tempfile.TemporaryFile() as btf_held:
            collector = _Collector(fd, outcomes, btf_kept, btf_held, report)
            damage: list[StreamDamage] = []
            chunks = data.raw_records(frozenset({RecordType.FINISHED_INIT}), bulk=False)
            table_at = end
            n_feats = 14  # at most: the features written below
            os.lseek(fd, table_at + SECTION.size * n_feats, os.SEEK_SET)
            sections = {}
            start = os.lseek(fd, 0, os.SEEK_CUR)
            _write_all(fd, b"\0\0\0\0")  # BPF_PROG_INFO count, filled in below
            for entry in read_entries(chunks, damage):
                collector.take(entry, path)
            here = os.lseek(fd, 0, os.SEEK_CUR)
            os.pwrite(fd, struct.pack("<I", report.captured), start)
            sections[Feature.BPF_PROG_INFO] = (start, here - start)
            report.damage += [f"{path}: offset {d.offset:#x}: {d.message}" for d in damage]
            report.damage += collector.damage
            # BPF_BTF from its temporary file
            start = here
            _write_all(fd, struct.pack("<I", collector.n_btf_kept))
            _copy_into(fd, btf_kept)
            here = os.lseek(fd, 0, os.SEEK_CUR)
            sections[Feature.BPF_BTF] = (start, here - start)
            for fid, blob in _small_features(data, collector.info):
                sections[fid] = (here, len(blob))
                _write_all(fd, blob)
                here += len(blob)
            start = here
            collector.write_private(outcomes, btf_held)
            here = os.lseek(fd, 0, os.SEEK_CUR)
            sections[FEATURE_BIT] = (start, here - start)
        feats = sorted(sections)
        table = b"".join(SECTION.pack(*sections[f]) for f in feats)
        os.pwrite(fd, table.ljust(SECTION.size * n_feats, b"\0"), table_at)
        os.fsync(fd)
        new = FileHeader(header.size, header.attr_size, header.attrs, header.data,
                         header.event_types, tuple(feats))
        os.pwrite(fd, new.pack(), 0)
        os.fsync(fd)
        report.features = [_name(fid) for fid in feats]
        data = None
    finally:
        os.close(fd)
        _close(buf)
    return report


def _close(buf) -> None:
    """Unmap now unless views of it are still alive (then when they go)."""
    if isinstance(buf, mmap.mmap):
        try:
            buf.close()
        except BufferError:
            pass


def _name(fid: int) -> str:
    from ..perf.features import feature_name
    return "textrace" if fid == FEATURE_BIT else feature_name(fid)


def _copy_into(fd: int, tmp) -> None:
    tmp.seek(0)
    while True:
        block = tmp.read(1 << 20)
        if not block:
            return
        _write_all(fd, block)


class _Collector:
    """What one walk over the stream gives the end of the file."""

    def __init__(self, fd, outcomes, btf_kept, btf_held, report: FinishReport):
        from ..bpf.ids import IdSet
        self.fd, self.outcomes, self.btf_kept, self.btf_held = fd, outcomes, btf_kept, btf_held
        self.report = report
        self.captured, self.seen, self.btf_ids = IdSet(), IdSet(), IdSet()
        self.n_btf_kept = self.n_btf_held = 0
        self.info: dict = {}
        self.kallsyms: bytes | None = None
        self.kernel_code = tempfile_list()
        self.unreported: list[bytes] = []
        self.others: list[tuple[int, bytes]] = []
        self.damage: list[str] = []

    def take(self, entry, path: str) -> None:
        from ..entries import decode
        try:
            if entry.kind == Kind.CAPTURE:
                self._capture(entry.data, path, entry.offset)
                return
            value = decode(entry.kind, entry.data, file=path, offset=entry.offset)
        except FormatError as e:
            self.damage.append(f"{e} (entry skipped)")
            return
        if entry.kind == Kind.RECORD_INFO:
            self.info.update(value)
        elif entry.kind == Kind.KALLSYMS and self.kallsyms is None:
            self.kallsyms = entry.data
        elif entry.kind == Kind.KERNEL_CODE:
            self.kernel_code.add(entry.data)
        elif entry.kind == Kind.UNREPORTED:
            self.unreported += [json.dumps(d, separators=(",", ":")).encode() for d in value]
        elif entry.kind != Kind.CAPTURES:  # PACKS, and kinds a newer writer added: as they are
            self.others.append((entry.kind, entry.data))

    def _capture(self, blob: bytes, path: str, offset: int) -> None:
        """Copies the parts of one CAPTURE entry (capture.py) without decoding the info."""
        from ..bpf.prog_info import unpack_info
        from ..capture import CAPTURE_HEAD, CAPTURE_MAGIC, parse_outcome
        bad = FormatError(f"capture entry of {len(blob)} bytes does not add up", file=path,
                          offset=offset, field="textrace.CAPTURE")
        if len(blob) < CAPTURE_HEAD.size:
            raise bad
        magic, jl, il, bl = CAPTURE_HEAD.unpack_from(blob, 0)
        pos = CAPTURE_HEAD.size
        if magic != CAPTURE_MAGIC or pos + jl + il + bl != len(blob):
            raise bad
        line = blob[pos:pos + jl]
        outcome = parse_outcome(line, file=path, offset=offset + pos)
        prog_id = outcome["id"]
        info = blob[pos + jl:pos + jl + il]
        btf = blob[pos + jl + il:]
        if il:
            # a one-program BPF_PROG_INFO: {u32 1; u32 info_len; u32 data_len; u64 arrays;
            # info; data}
            if il < 20 or struct.unpack_from("<I", info, 0)[0] != 1:
                raise bad
            info_len, data_len = struct.unpack_from("<II", info, 4)
            if 20 + info_len + data_len != il:
                raise bad
        if bl and (bl < 12 or struct.unpack_from("<I", btf, 0)[0] != 1 or
                   12 + struct.unpack_from("<I", btf, 8)[0] != bl or not il):
            raise bad
        if prog_id not in self.seen:
            self.seen.add(prog_id)
            self.report.programs += 1
        self.outcomes.write(line + b"\n")  # a later line of the same program wins
        if not il or prog_id in self.captured:
            return
        self.captured.add(prog_id)
        self.report.captured += 1
        _write_all(self.fd, info[4:])
        if bl:
            btf_id = struct.unpack_from("<I", btf, 4)[0]
            if btf_id in self.btf_ids:
                return
            self.btf_ids.add(btf_id)
            self.report.btfs += 1
            fields = unpack_info(info[20:20 + info_len])
            from ..perf.features import btf_safe_for_perf
            if btf_safe_for_perf(fields["nr_func_info"], fields["nr_jited_ksyms"]):
                self.btf_kept.write(btf[4:])
                self.n_btf_kept += 1
            else:
                from ..entries import BTF_ENTRY
                raw = btf[12:]
                self.btf_held.write(struct.pack("<Q", BTF_ENTRY.size + len(raw)))
                self.btf_held.write(BTF_ENTRY.pack(btf_id, 0) + raw)
                self.n_btf_held += 1

    def write_private(self, outcomes, btf_held) -> None:
        """textrace's section, entry by entry (perf/private.py's layout)."""
        from ..entries import encode_record_info
        from ..perf.private import COMPRESSED, ENTRY, MAGIC, ZSTD
        fd = self.fd
        _write_all(fd, MAGIC)

        def entry(kind: int, blob: bytes, flags: int = 0) -> None:
            _write_all(fd, ENTRY.pack(kind, flags, len(blob)) + blob + b"\0" * (-len(blob) % 8))
        size = outcomes.tell()
        _write_all(fd, ENTRY.pack(Kind.CAPTURES, 0, size))
        _copy_into(fd, outcomes)
        _write_all(fd, b"\0" * (-size % 8))
        if self.kallsyms is not None:
            entry(Kind.KALLSYMS, self.kallsyms)
        btf_held.seek(0)
        for _ in range(self.n_btf_held):
            (n,) = struct.unpack("<Q", btf_held.read(8))
            entry(Kind.BTF, btf_held.read(n))
        for blob in self.kernel_code:
            entry(Kind.KERNEL_CODE, blob, ZSTD)
        self.report.kernel_code = len(self.kernel_code)
        self.report.unreported = len(self.unreported)
        if self.unreported:
            entry(Kind.UNREPORTED, b"\n".join(self.unreported))
        for kind, blob in self.others:
            if kind in COMPRESSED:
                import zstandard
                entry(kind, zstandard.ZstdCompressor(level=3).compress(blob), ZSTD)
            else:
                entry(kind, blob)
        info = dict(self.info)
        info["finished"] = True
        if self.report.damage:
            info["recovered"] = info.get("recovered", []) + self.report.damage
        entry(Kind.RECORD_INFO, encode_record_info(info))


class tempfile_list:
    """Kernel code entries kept compressed (zstd, as the section stores them) in a
    temporary file: the recorder's budget bounds them, memory need not hold them."""

    def __init__(self):
        import tempfile
        self.f = tempfile.TemporaryFile()
        self.n = 0

    def add(self, data: bytes) -> None:
        """Append one entry's data, compressed, length-prefixed."""
        import zstandard
        blob = zstandard.ZstdCompressor(level=3).compress(data)
        self.f.write(struct.pack("<Q", len(blob)) + blob)
        self.n += 1

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        self.f.seek(0)
        for _ in range(self.n):
            (n,) = struct.unpack("<Q", self.f.read(8))
            yield self.f.read(n)


def _small_features(data: PerfData, info: dict) -> list[tuple[int, bytes]]:
    """The features RECORD_INFO and the attrs give: host, cpus, memory, cmdline, events,
    clock."""
    from ..perf.features import (Arch, ClockData, Clockid, Cmdline, EventDesc,
                                EventDescEntry, Hostname, NrCpus, OsRelease, TotalMem,
                                Version)
    out: list[tuple[int, bytes]] = []
    for cls, key in [(Hostname, "hostname"), (OsRelease, "os_release"), (Version, "version"),
                     (Arch, "arch")]:
        if key in info:
            out.append((cls.feature_id, cls(value=info[key]).pack()))
    if "nr_cpus_online" in info:
        out.append((NrCpus.feature_id, NrCpus(
            nr_cpus_available=info.get("nr_cpus_available", info["nr_cpus_online"]),
            nr_cpus_online=info["nr_cpus_online"]).pack()))
    if "total_mem_kb" in info:
        out.append((TotalMem.feature_id, TotalMem(total_mem_kb=info["total_mem_kb"]).pack()))
    if "cmdline" in info:
        out.append((Cmdline.feature_id, Cmdline(argv=tuple(info["cmdline"])).pack()))
    names = info.get("event_names") or []
    if data.attrs:
        out.append((EventDesc.feature_id, EventDesc(
            attr_size=data.attrs[0].attr.size, events=tuple(
                EventDescEntry(attr=a.attr, name=names[i] if i < len(names) else "",
                               ids=tuple(a.ids)) for i, a in enumerate(data.attrs))).pack()))
    if "clockid_res_ns" in info:
        out.append((Clockid.feature_id, Clockid(clockid_res_ns=info["clockid_res_ns"]).pack()))
    if {"tod_ns", "clockid_ns", "clockid"} <= info.keys():
        out.append((ClockData.feature_id, ClockData(
            clockid=info["clockid"], tod_ns=info["tod_ns"],
            clockid_ns=info["clockid_ns"]).pack()))
    return out


def _write_all(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    while view:
        view = view[os.write(fd, view):]


# --- recover ----------------------------------------------------------------------------

_KNOWN_TYPES = frozenset(int(t) for t in RecordType)


def recover(path: str, output: str | None = None) -> FinishReport:
    """A finished copy of a killed or cut recording at `output` (default: `path` itself,
    replaced once the copy is whole).  Keeps the header and attrs, every whole record up to
    the first damage (also those after the header's data size: the rounds a killed recorder
    wrote after its last header update), and writes the end from the stream."""
    out = output or path
    buf = map_file(path)
    try:
        data = PerfData(buf, path=path, salvage=True)
        if data.mode != "file":
            raise FormatError("recover takes a file-mode perf.data (a pipe-mode stream has "
                              "no end to repair)", file=path, offset=0, field="header")
        h = parse_file_header(buf, path)
        damage = [w for w in data.warnings if "data size is 0" not in w]
        start = h.data.offset
        finished = bool(h.features) and h.data.end <= len(buf) and not damage
        limit = h.data.end if finished else len(buf)
        end, why = _whole_records(buf, start, limit)
        if end < h.data.end and h.data.end <= len(buf) and h.features:
            damage.append(f"{path}: offset {end:#x}: records damaged: {why}; "
                          f"{h.data.end - end} bytes of data dropped")
        elif not h.features:
            kept = end - min(h.data.end, end) if h.data.size else end - start
            if end > h.data.end or not h.data.size:
                damage.append(f"{path}: offset 0x30: header data size {h.data.size:#x} "
                              f"(the recorder stopped before its last header update): the "
                              f"records after it run to {end:#x} ({kept} bytes kept)")
            damage.append(f"{path}: offset {h.data.end:#x}: no end of recording (no header "
                          f"features): finished from the stream")
            if end < len(buf) and why:
                damage.append(f"{path}: offset {end:#x}: stopped at {why}; "
                              f"{len(buf) - end} bytes after it dropped")
        elif h.data.end > len(buf):
            damage.append(f"{path}: offset {end:#x}: file cut inside the data "
                          f"({h.data.end - len(buf)} bytes missing); features lost")
        if FEATURE_BIT in data.features:  # its section: what is damaged there
            damage += _section_damage(data)
        if finished and not damage and end == h.data.end:
            return _intact(data, path, out)
        tmp = f"{out}.recover.{os.getpid()}"
        from ..perf.writer import PerfDataWriter
        try:
            w = PerfDataWriter(tmp, data.attrs)
            w.write_bytes(bytes(buf[start:end]))
            w.close()
            report = finish_file(tmp)
            os.replace(tmp, out)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    finally:
        data = None
        _close(buf)
    report.path = out
    report.damage = damage + [d.replace(tmp, path) for d in report.damage]
    return report


def _intact(data: PerfData, path: str, out: str) -> FinishReport:
    """A finished, undamaged file: left as it is (copied to `out`)."""
    from ..recorded import Recorded
    rec = Recorded(data)
    report = FinishReport(out, programs=len(rec.outcomes or {}), captured=len(rec.infos),
                          btfs=len(rec.btfs), kernel_code=len(rec.entries.get(
                              Kind.KERNEL_CODE, ())),
                          unreported=len(rec.unreported))
    report.features = [_name(f) for f in data.features]
    if os.path.abspath(out) != os.path.abspath(path):
        import shutil
        from ..perf.writer import create_private
        with open(path, "rb") as src, create_private(out) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return report


def _section_damage(data: PerfData) -> list[str]:
    """Every damaged entry of a finished file's section (the stream's copies are used)."""
    from ..entries import decode
    from ..recorded import Recorded
    rec = Recorded(data)
    out = list(rec.damage)
    for kind, blobs in rec.entries.items():
        for blob, off in blobs:
            try:
                decode(kind, blob, file=data.path, offset=off)
            except FormatError as e:
                out.append(f"{e} (textrace section; the stream's copy is used)")
    return out


def _whole_records(buf, start: int, limit: int) -> tuple[int, str | None]:
    """Where the run of whole, plausible records from `start` ends (at most `limit`), and
    what stopped it (None: it reached `limit`)."""
    pos = start
    unpack = RECORD_HEADER.unpack_from
    while pos < limit:
        if pos + 8 > limit:
            return pos, "a record header cut short"
        rtype, _misc, rsize = unpack(buf, pos)
        if rsize < 8:
            return pos, f"record size {rsize}"
        if rtype not in _KNOWN_TYPES:
            return pos, f"record type {rtype} (not a record)"
        if pos + rsize > limit:
            return pos, f"a {rsize}-byte record cut short"
        if rtype in (RecordType.AUXTRACE, RecordType.HEADER_TRACING_DATA):
            return pos, f"{RecordType(rtype).name} (not repaired)"
        pos += rsize
    return pos, None


__all__ = ["finish_file", "recover", "FinishReport", "TextraceError"]
