"""`textrace events`: every record in time order, as text or JSON lines."""

from __future__ import annotations

import json
from typing import Iterator

from ..perf.reader import PerfData

_HEX_FIELDS = {"ip", "addr", "callchain", "pgoff", "len", "from_ip", "to_ip", "phys_addr",
               "aux_offset"}
_SKIP = {"type", "time", "cpu", "pid", "tid", "sample_id", "misc"}


def event_rows(data: PerfData, *, order: str = "time") -> Iterator[dict]:
    """One dict per record: `type`, `time` (ns, the record's clock) where known, fields."""
    recs = data.records_by_time() if order == "time" else data.records()
    for rec in recs:
        yield rec.to_dict()


def format_time(ns: int | None) -> str:
    """ns as perf script prints times: seconds.nanoseconds; "-" when the record has none."""
    return "-" if ns is None else f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def _fmt(key: str, v) -> str:
    if isinstance(v, int) and key in _HEX_FIELDS:
        return f"{v:#x}"
    if isinstance(v, list) and key in _HEX_FIELDS:
        return "[" + ",".join(f"{x:#x}" if isinstance(x, int) else str(x) for x in v) + "]"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def format_row(row: dict) -> str:
    """One event_rows() row as a text line: time, cpu, pid/tid, type, then the rest of
    the fields, addresses in hex."""
    cpu = row.get("cpu")
    pid, tid = row.get("pid"), row.get("tid")
    who = f"{pid}/{tid}" if pid is not None else "-"
    fields = " ".join(f"{k}={_fmt(k, v)}" for k, v in row.items() if k not in _SKIP)
    return (f"{format_time(row.get('time')):>20} {'-' if cpu is None else cpu:>3} "
            f"{who:>13} {row['type']:<16} {fields}")
