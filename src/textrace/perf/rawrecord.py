"""Fields read straight from one record's bytes, as a ring hands it over.

For the live loops (the recorder, the daemon) that look at every record and want no object
per record: each accessor reads by a layout declared in layouts.py or sampleid.py, bound
once here.  `raw` is one whole record, header first; the caller knows its type.
"""

from __future__ import annotations

from typing import Callable

from . import layouts
from .attr import EventAttr
from .header import RECORD_HEADER
from .sampleid import U64, sample_offset, trailer_time_back

_AT = layouts.BODY_AT
_HEADER = RECORD_HEADER.unpack_from
_U64 = U64.unpack_from
_KSYMBOL, _BPF_EVENT, _TEXT_POKE, _LOST = (
    declared[0] for declared in (layouts.KSYMBOL, layouts.BPF_EVENT, layouts.TEXT_POKE,
                                 layouts.LOST))
KSYMBOL_NAME_AT = _AT + _KSYMBOL.size        # where a KSYMBOL's name begins
TEXT_POKE_BYTES_AT = _AT + _TEXT_POKE.size   # where a TEXT_POKE's old bytes begin
BPF_EVENT_END = _AT + _BPF_EVENT.size        # where a BPF_EVENT's body ends
_LOST_COUNT = layouts.LOST[1].index("lost")


def record_type(raw) -> int:
    """The record's perf_event_header.type."""
    return _HEADER(raw, 0)[0]


def bpf_event(raw) -> tuple[int, int, int, bytes]:
    """(event_type, flags, prog_id, tag) of a BPF_EVENT."""
    return _BPF_EVENT.unpack_from(raw, _AT)


def ksymbol(raw) -> tuple[int, int, int, int, str]:
    """(addr, len, ksym_type, flags, name) of a KSYMBOL; name bytes that are not UTF-8
    are replaced.  ValueError when the name has no NUL."""
    addr, size, ksym_type, flags = _KSYMBOL.unpack_from(raw, _AT)
    name = raw[KSYMBOL_NAME_AT:raw.index(b"\0", KSYMBOL_NAME_AT)].decode(errors="replace")
    return addr, size, ksym_type, flags, name


def text_poke(raw) -> tuple[int, bytes, bytes]:
    """(addr, old bytes, new bytes) of a TEXT_POKE."""
    addr, old_len, new_len = _TEXT_POKE.unpack_from(raw, _AT)
    new_at = TEXT_POKE_BYTES_AT + old_len
    return addr, raw[TEXT_POKE_BYTES_AT:new_at], raw[new_at:new_at + new_len]


def text_poke_lengths(raw) -> tuple[int, int]:
    """(old_len, new_len) of a TEXT_POKE."""
    return _TEXT_POKE.unpack_from(raw, _AT)[1:]


def lost_count(raw) -> int:
    """The events a LOST record says were lost."""
    return _LOST.unpack_from(raw, _AT)[_LOST_COUNT]


def sample_u64_reader(sample_type: int, bit: int) -> Callable[[bytes], int]:
    """A reader of the u64 field `bit` (S.IP, S.TIME, ...) of SAMPLE records of this
    sample_type; the field must be at a fixed place (before any part of varying
    length)."""
    pos = sample_offset(int(sample_type), bit)
    if pos is None:
        raise ValueError(f"sample field {bit!r} has no fixed place in {sample_type!r}")
    at = _AT + pos
    return lambda raw: _U64(raw, at)[0]


def trailer_time_reader(attr: EventAttr) -> Callable[[bytes], int]:
    """A reader of the sample_id trailer's time (ns, the attr's clock) of kernel records
    of `attr`, whose trailer ends the record."""
    back = trailer_time_back(attr)
    if not back:
        raise ValueError("the attr's records carry no sample_id time")
    return lambda raw: _U64(raw, len(raw) - back)[0]
