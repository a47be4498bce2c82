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
from dataclasses import dataclass, field

from .errors import FormatError, TextraceError
from .perf.abi import RecordType
from .perf.header import (FILE_HEADER, RECORD_HEADER, SECTION, FileHeader, Section,
                          parse_file_header)
from .perf.private import FEATURE_BIT, Kind, PrivateSection
from .perf.reader import PerfData


@dataclass
class FinishReport:
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
    records (header data size = where they end); anything after them is replaced."""
    from .recorded import Recorded
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        data = PerfData(buf, path=path, salvage=True)
        header = data.header
        rec = Recorded(data)
        report = FinishReport(path, damage=list(rec.damage))
        feats = _features(data, rec, report)
        data = rec = None
    finally:
        _close(buf)
    _write_end(path, header, feats)
    report.features = [_name(fid) for fid, _ in feats]
    del size
    return report


def _close(buf) -> None:
    """Unmap now unless views of it are still alive (then when they go)."""
    if isinstance(buf, mmap.mmap):
        try:
            buf.close()
        except BufferError:
            pass


def _name(fid: int) -> str:
    from .perf.features import feature_name
    return "textrace" if fid == FEATURE_BIT else feature_name(fid)


def _features(data: PerfData, rec, report: FinishReport) -> list[tuple[int, bytes]]:
    from .entries import encode_kallsyms, encode_record_info
    from .perf.private import pack_kernel_code
    from .entries import BTF_ENTRY
    from .perf.features import (Arch, BpfBtf, BpfProgInfo, BpfProgInfoEntry, BtfEntry,
                                ClockData, Clockid, Cmdline, EventDesc, EventDescEntry,
                                Hostname, NrCpus, OsRelease, TotalMem, Version)
    info = dict(rec.info)
    caps: dict = {}
    for cap in rec.captures:      # later entries win, a capture over a failure
        if cap.info is not None or cap.prog_id not in caps:
            caps[cap.prog_id] = cap
    captured = [caps[i] for i in sorted(caps) if caps[i].info is not None]
    report.programs, report.captured = len(caps), len(captured)
    progs = []
    for c in captured:
        _il, _dl, arrays, raw_info, raw_data = c.info.to_bpil()
        progs.append(BpfProgInfoEntry(arrays=arrays, info=raw_info, data=raw_data))
    btfs = {c.info.btf_id: c.btf for c in captured if c.btf and c.info.btf_id}
    report.btfs = len(btfs)
    # perf 6.1 names a program from BTF whenever its BTF is in BPF_BTF, reading
    # func_info[i] unchecked (synthesize_bpf_prog_name): a program without func_info (the
    # capture program does not copy it) would crash `perf report --header-only`.  Such BTF
    # goes to textrace's section instead.
    withheld = {c.info.btf_id for c in captured if c.info.btf_id in btfs
                and len(c.info.func_info) < len(c.info.funcs())}
    kept = {i: b for i, b in btfs.items() if i not in withheld}
    out: list[tuple[int, bytes]] = [
        (BpfProgInfo.feature_id, BpfProgInfo(programs=tuple(progs)).pack()),
        (BpfBtf.feature_id, BpfBtf(btfs=tuple(BtfEntry(id=i, data=b)
                                              for i, b in sorted(kept.items()))).pack())]
    plain = [(Hostname, "hostname"), (OsRelease, "os_release"), (Version, "version"),
             (Arch, "arch")]
    for cls, key in plain:
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
    attrs = data.attrs
    if attrs:
        out.append((EventDesc.feature_id, EventDesc(
            attr_size=attrs[0].attr.size, events=tuple(
                EventDescEntry(attr=a.attr, name=names[i] if i < len(names) else "",
                               ids=tuple(a.ids)) for i, a in enumerate(attrs))).pack()))
    if "clockid_res_ns" in info:
        out.append((Clockid.feature_id, Clockid(clockid_res_ns=info["clockid_res_ns"]).pack()))
    if {"tod_ns", "clockid_ns", "clockid"} <= info.keys():
        out.append((ClockData.feature_id, ClockData(
            clockid=info["clockid"], tod_ns=info["tod_ns"],
            clockid_ns=info["clockid_ns"]).pack()))
    private = PrivateSection()
    private.add(Kind.CAPTURES, b"\n".join(caps[i].outcome_json() for i in sorted(caps)))
    if rec.kallsyms is not None:  # the streamed entry, once it is known to decode
        private.add(Kind.KALLSYMS, encode_kallsyms(rec.kallsyms.decode()))
    for i in sorted(withheld):
        private.add(Kind.BTF, BTF_ENTRY.pack(i, 0) + btfs[i])
    for addr, t, code in rec.kernel_code:
        private.add(Kind.KERNEL_CODE, pack_kernel_code(addr, t, code))
    report.kernel_code = len(rec.kernel_code)
    changes = [json.dumps(d, separators=(",", ":")).encode() for d in rec.unreported]
    report.unreported = len(changes)
    if changes:
        private.add(Kind.UNREPORTED, b"\n".join(changes))
    info["finished"] = True
    if report.damage:
        info["recovered"] = info.get("recovered", []) + report.damage
    private.add(Kind.RECORD_INFO, encode_record_info(info))
    out.append((FEATURE_BIT, private.pack()))
    return sorted(out)


def _write_end(path: str, header: FileHeader, feats: list[tuple[int, bytes]]) -> None:
    end = header.data.end
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, end)
        body = end + SECTION.size * len(feats)
        table = []
        for _fid, blob in feats:
            table.append(SECTION.pack(body, len(blob)))
            body += len(blob)
        os.lseek(fd, end, os.SEEK_SET)
        _write_all(fd, b"".join(table))
        for _fid, blob in feats:
            _write_all(fd, blob)
        os.fsync(fd)
        new = FileHeader(header.size, header.attr_size, header.attrs, header.data,
                         header.event_types, tuple(fid for fid, _ in feats))
        os.pwrite(fd, new.pack(), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


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
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as e:
        raise FormatError(e.strerror or str(e), file=path) from None
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
        from .perf.writer import PerfDataWriter
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
    from .recorded import Recorded
    rec = Recorded(data)
    report = FinishReport(out, programs=len(rec.outcomes or {}), captured=len(rec.infos),
                          btfs=len(rec.btfs), kernel_code=len(rec.entries.get(
                              Kind.KERNEL_CODE, ())),
                          unreported=len(rec.unreported))
    report.features = [_name(f) for f in data.features]
    if os.path.abspath(out) != os.path.abspath(path):
        import shutil
        from .perf.writer import create_private
        with open(path, "rb") as src, create_private(out) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return report


def _section_damage(data: PerfData) -> list[str]:
    """Every damaged entry of a finished file's section (the stream's copies are used)."""
    from .entries import decode
    from .recorded import Recorded
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
