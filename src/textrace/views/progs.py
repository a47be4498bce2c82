"""`textrace progs`: every BPF program the recording saw, with its lifetime and capture."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bpf.prog_info import ProgInfo, prog_type_name
from ..capture import outcomes_from_json
from ..history.programs import programs_from_records
from ..perf.abi import Feature, RecordType
from ..perf.private import Kind, private_section
from ..perf.reader import PerfData

BPF_RECORDS = frozenset({RecordType.KSYMBOL, RecordType.BPF_EVENT})


@dataclass
class ProgRow:
    id: int
    tag: str
    name: str
    type: str | None
    loaded_ns: int | None
    unloaded_ns: int | None
    captured: bool
    capture: str | None
    reason: str | None
    funcs: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def captured_programs(data: PerfData) -> dict[int, ProgInfo]:
    """Programs whose info and JIT images the file holds (HEADER_BPF_PROG_INFO)."""
    feat = data.feature(Feature.BPF_PROG_INFO)
    out = {}
    for e in feat.programs if feat is not None else ():
        info = ProgInfo.from_bpil(e.info_len, e.data_len, e.arrays, e.info, e.data,
                                  file=data.path, offset=data.feature_offset(
                                      Feature.BPF_PROG_INFO))
        out[info.id] = info
    return out


def capture_outcomes(data: PerfData, section=False) -> dict[int, dict] | None:
    """textrace's record of how each program was captured or why not; None for files
    textrace did not record.  `section`: private_section(data) if already read."""
    section = private_section(data) if section is False else section
    if section is None:
        return None
    out: dict[int, dict] = {}
    for blob in section.get(Kind.CAPTURES):
        out.update(outcomes_from_json(blob))
    return out


def prog_rows(data: PerfData) -> list[ProgRow]:
    programs, _ool = programs_from_records(data.records_by_time(BPF_RECORDS))
    infos = captured_programs(data)
    outcomes = capture_outcomes(data)
    rows = []
    seen = set()
    for p in programs:
        seen.add(p.id)
        rows.append(_row(p.id, p.tag, p.name, p.loaded_ns, p.unloaded_ns,
                         [(f.addr, f.len) for f in p.funcs], infos.get(p.id), outcomes))
    for prog_id, info in infos.items():  # captured, but no record of its load survives
        if prog_id not in seen:
            rows.append(_row(prog_id, info.tag, info.name, None, None,
                             [(a, n) for a, n, _ in info.funcs()], info, outcomes))
    return rows


def _row(prog_id, tag, name, loaded, unloaded, funcs, info: ProgInfo | None,
         outcomes: dict[int, dict] | None) -> ProgRow:
    outcome = (outcomes or {}).get(prog_id, {})
    if info is not None:
        capture = outcome.get("method") or "user"
        reason = None
        code = {addr: data for addr, _n, data in info.funcs()}
        name = name or info.name
    else:
        capture = None
        reason = outcome.get("reason") or ("not captured by the recorder" if outcomes is not None
                                           else "not in the file's HEADER_BPF_PROG_INFO")
        code = {}
    return ProgRow(
        id=prog_id, tag=tag.hex() if isinstance(tag, bytes) else tag, name=name,
        type=prog_type_name(info.type) if info is not None else None,
        loaded_ns=loaded, unloaded_ns=unloaded, captured=info is not None, capture=capture,
        reason=reason,
        funcs=[{"addr": a, "len": n, "jited": code[a].hex() if a in code else None}
               for a, n in funcs])
