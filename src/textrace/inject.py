"""textrace inject: a perf-made perf.data completed with the programs perf lost.

`perf record` keeps a program's info and JIT image (HEADER_BPF_PROG_INFO, its BTF in
HEADER_BPF_BTF) only if its side thread reads the program before it is gone; the rest of
a feature probe or a storm leaves only its KSYMBOL and BPF_EVENT records.  inject matches
every program the file saw (BPF_EVENT records: id, tag, load time) with what a code store
(`--store`, from textrace daemon) or a textrace recording made at the same time (`--from`)
kept, and writes a copy of the file whose header features carry them: perf's own entries
unchanged, the new ones added in id order, and textrace's section (how each was found,
kallsyms, out-of-line code).  Everything before the feature section table (the header
but for its feature bitmap, the attrs, the data) is copied byte for byte.

Matching: the store's load of that program id and tag in the boot whose load time is
nearest the record's (perf's default clock; the daemon stamps the same clock), within
MATCH_NS; a program loaded before the recording began (no load time in the file) matches
the load alive at the file's first record.  A --from recording matches by id and tag.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .errors import TextraceError
from .history.programs import Program, programs_from_records
from .perf.abi import Feature, RecordType
from .entries import BTF_ENTRY, encode_kallsyms
from .perf.features import BpfBtf, BpfProgInfo, BpfProgInfoEntry, BtfEntry, btf_safe_for_perf
from .perf.header import FILE_HEADER, SECTION, FileHeader
from .perf.private import FEATURE_BIT, Kind, PrivateSection, pack_kernel_code, private_section
from .perf.reader import PerfData
from .perf.writer import create_private

MATCH_NS = 50_000_000   # a record and the daemon's own stamp of one load: microseconds apart
BPF_RECORDS = frozenset({RecordType.KSYMBOL, RecordType.BPF_EVENT})


@dataclass
class InjectResult:
    """What inject did: the programs the file saw load, how many perf had kept, those
    completed from a source, and why each of the rest could not be."""

    output: str
    programs: int = 0                  # programs the file saw load
    had: int = 0                       # perf had them already
    completed: list[int] = field(default_factory=list)
    missing: dict[int, str] = field(default_factory=dict)   # prog id -> why not


def _first_time(data: PerfData) -> int | None:
    for r in data.records_by_time(BPF_RECORDS):
        if r.time:
            return r.time
    return None


class StoreSource:
    """Programs from a code store (--store): matched by id, tag and load time."""

    def __init__(self, directory: str):
        import textrace.store
        self.st = textrace.store.open(directory)
        self.by_prog: dict[int, list] = {}
        for ld in self.st.loads(all_boots=True):
            self.by_prog.setdefault(ld.prog_id, []).append(ld)
        self.boot = None

    def find(self, prog: Program, t0: int | None):
        """(ProgInfo, btf id, BTF bytes, how) or a reason string."""
        cands = [ld for ld in self.by_prog.get(prog.id, ()) if ld.tag == prog.tag]
        if not cands:
            return "not in the store (no load of this id and tag)"
        if prog.loaded_ns is not None:
            best = min(cands, key=lambda ld: abs((ld.load_ns or 0) - prog.loaded_ns)
                       if ld.load_ns is not None else 1 << 62)
            if best.load_ns is None or abs(best.load_ns - prog.loaded_ns) > MATCH_NS:
                if not (best.load_ns is None and t0 is not None and best.alive_at(t0)):
                    return (f"the store's loads of it are at other times (nearest "
                            f"{(best.load_ns or 0) - prog.loaded_ns:+d} ns)")
        else:
            alive = [ld for ld in cands if t0 is None or ld.alive_at(t0)]
            if not alive:
                return "loaded before the recording, and not alive in the store then"
            best = alive[-1]
        if best.image is None:
            return f"the daemon did not capture it ({best.reason or 'no capture'})"
        if best.evicted:
            return "its image was evicted from the store (budget)"
        info = self.st.prog_info(best)
        self.boot = best.boot
        return info, self.st.btf_id(best), self.st.btf(best), "store"


class RecordingSource:
    """Programs from another recording made at the same time (--from): by id and tag."""

    def __init__(self, path: str):
        from .recorded import recorded
        self.data = PerfData.open(path)
        rec = recorded(self.data)  # finished or killed: features, section or stream
        self.infos, self.btfs = rec.infos, rec.btfs

    def find(self, prog: Program, t0: int | None):
        """(ProgInfo, btf id, BTF bytes, how) or a reason string; `t0` is unused here."""
        info = self.infos.get(prog.id)
        if info is None or info.tag != prog.tag:
            return f"not captured in {self.data.path}"
        btf_id = info.info.get("btf_id") or None
        return info, btf_id, self.btfs.get(btf_id), "from"


def inject(input_path: str, output: str, *, store: str | None = None,
           from_path: str | None = None) -> InjectResult:
    """Write `output`: the file-mode recording at `input_path` with the programs perf lost
    added from the store and/or the recording given (the module docstring has the rules)."""
    if not store and not from_path:
        raise TextraceError("give --store DIR or --from RECORDING", field="--store")
    data = PerfData.open(input_path)
    if data.mode != "file":
        raise TextraceError("a pipe-mode stream has no feature sections to complete; "
                            "write it to a file first (perf inject -i - -o FILE)",
                            file=data.path, offset=0, field="header.size")
    sources = ([StoreSource(store)] if store else []) + \
        ([RecordingSource(from_path)] if from_path else [])
    programs, _ool = programs_from_records(data.records_by_time(BPF_RECORDS))
    t0 = _first_time(data)
    feat = data.feature(Feature.BPF_PROG_INFO)
    entries: dict[int, BpfProgInfoEntry] = {}
    from .bpf.prog_info import ProgInfo
    for e in feat.programs if feat is not None else ():
        entries[ProgInfo.from_bpil(e.info_len, e.data_len, e.arrays, e.info, e.data).id] = e
    bfeat = data.feature(Feature.BPF_BTF)
    btfs = {e.id: e for e in bfeat.btfs} if bfeat is not None else {}
    held_btfs: dict[int, bytes] = {}  # BTF perf would crash on: textrace's section keeps it
    result = InjectResult(output, programs=len({p.id for p in programs}))
    outcomes = []
    for prog in programs:
        if prog.id in entries:
            if prog.id not in result.completed:
                result.had += 1
            continue
        reasons = []
        for src in sources:
            got = src.find(prog, t0)
            if isinstance(got, str):
                reasons.append(got)
                continue
            info, btf_id, btf, how = got
            il, dl, arrays, ib, db = info.to_bpil()
            entries[prog.id] = BpfProgInfoEntry(arrays=arrays, info=ib, data=db)
            if btf_id and btf and btf_id not in btfs and btf_id not in held_btfs:
                if btf_safe_for_perf(info.info["nr_func_info"], info.info["nr_jited_ksyms"]):
                    btfs[btf_id] = BtfEntry(id=btf_id, data=btf)
                else:
                    held_btfs[btf_id] = btf
            result.completed.append(prog.id)
            result.missing.pop(prog.id, None)
            outcomes.append({"id": prog.id, "tag": prog.tag.hex(), "method": how,
                             "reason": None, "time": prog.loaded_ns})
            break
        else:
            result.missing[prog.id] = "; ".join(reasons)
            outcomes.append({"id": prog.id, "tag": prog.tag.hex(), "method": None,
                             "reason": "; ".join(reasons), "time": None})
    replace: dict[int, bytes] = {}
    if result.completed:
        replace[Feature.BPF_PROG_INFO] = BpfProgInfo(
            programs=tuple(entries[k] for k in sorted(entries))).pack()
        replace[Feature.BPF_BTF] = BpfBtf(btfs=tuple(btfs[k] for k in sorted(btfs))).pack()
    section = _private(data, sources, outcomes, result)
    for btf_id, raw in sorted(held_btfs.items()):
        section.add(Kind.BTF, BTF_ENTRY.pack(btf_id, 0) + raw)
    replace[FEATURE_BIT] = section.pack()
    rewrite_features(data, output, replace)
    return result


def _private(data: PerfData, sources, outcomes: list[dict], result: InjectResult
             ) -> PrivateSection:
    """The input's own textrace section (if any) plus what inject adds: how each program
    was found or why not, and from a store the boot's kallsyms and out-of-line code."""
    section = private_section(data) or PrivateSection()
    section.add(Kind.CAPTURES, b"\n".join(json.dumps(o, separators=(",", ":")).encode()
                                          for o in outcomes))
    for src in sources:
        if isinstance(src, StoreSource) and src.boot is not None:
            text = src.st.kallsyms_text(src.boot)
            if text:
                section.add(Kind.KALLSYMS, encode_kallsyms(
                    text.decode() if isinstance(text, bytes) else text))
            for o in src.st.ool(src.boot):
                if o["code"]:
                    section.add(Kind.KERNEL_CODE, pack_kernel_code(o["addr"],
                                                                   o["code_ns"] or 0,
                                                                   o["code"]))
    section.add(Kind.RECORD_INFO, json.dumps({
        "injected": {"programs": result.programs, "had": result.had,
                     "completed": len(result.completed), "missing": len(result.missing)},
    }).encode())
    return section


def rewrite_features(data: PerfData, output: str, replace: dict[int, bytes]) -> None:
    """Copy of a file-mode perf.data with some feature sections replaced or added: the
    bytes up to the end of the data section unchanged but for the header's feature
    bitmap, then the section table and every feature body in bit order (perf's layout)."""
    h = data.header
    buf = data._buf
    bodies = {f: bytes(data.feature_bytes(f)) for f in data.features}
    bodies.update(replace)
    feats = sorted(bodies)
    end = h.data.end
    new = FileHeader(h.size, h.attr_size, h.attrs, h.data, h.event_types, tuple(feats))
    tmp = output + ".tmp"
    with create_private(tmp) as f:
        f.write(new.pack())
        f.write(buf[FILE_HEADER.size:end])
        pos = end + SECTION.size * len(feats)
        table = []
        for fid in feats:
            table.append(SECTION.pack(pos, len(bodies[fid])))
            pos += len(bodies[fid])
        f.write(b"".join(table))
        for fid in feats:
            f.write(bodies[fid])
    os.replace(tmp, output)
