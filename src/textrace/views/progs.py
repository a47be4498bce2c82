"""`textrace progs`: every BPF program the recording saw, with its lifetime and capture."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bpf.prog_info import ProgInfo, prog_type_name
from ..history.programs import programs_from_records
from ..perf.abi import RecordType
from ..load import capture_outcomes, captured_programs
from ..perf.reader import PerfData

BPF_RECORDS = frozenset({RecordType.KSYMBOL, RecordType.BPF_EVENT})
METADATA_RECORDS = frozenset({RecordType.BPF_METADATA})


@dataclass
class ProgRow:
    """One BPF program the recording saw: load and unload times (ns, the recording's clock;
    None: outside the recording), whether and how its code was captured, its functions."""

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
    metadata: dict[str, str] = field(default_factory=dict)  # bpf_metadata_* (perf >= 6.16)

    def to_dict(self) -> dict:
        """The row as a JSON object (--json), field for field."""
        return dict(self.__dict__)


def program_metadata(data: PerfData) -> dict[str, dict[str, str]]:
    """BPF_METADATA records (perf >= 6.16) by the ksym name they carry, which is the
    name of one of the program's functions in KSYMBOL records: bpf_prog_<tag>_<name>."""
    out: dict[str, dict[str, str]] = {}
    for rec in data.records(types=METADATA_RECORDS):
        out.setdefault(rec.prog_name, {}).update(rec.metadata)
    return out


def prog_rows(data: PerfData) -> list[ProgRow]:
    """Every program from the KSYMBOL and BPF_EVENT records, then those captured whose
    load record did not survive, with BPF_METADATA attached."""
    programs, _ool = programs_from_records(data.records_by_time(BPF_RECORDS))
    infos = captured_programs(data)
    outcomes = capture_outcomes(data)
    metadata = program_metadata(data)
    rows = []
    seen = set()
    for p in programs:
        seen.add(p.id)
        rows.append(_row(p.id, p.tag, p.name, p.loaded_ns, p.unloaded_ns,
                         [(f.addr, f.len) for f in p.funcs], infos.get(p.id), outcomes))
        for f in p.funcs:
            rows[-1].metadata.update(metadata.get(f.name, {}))
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
