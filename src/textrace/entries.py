"""One codec per kind of entry in textrace's own section (perf/private.py) and stream
(perf/stream.py): how it is written and how it is read back, validated.

Reading checks everything a damaged file can get wrong — JSON that does not parse, text that
is not UTF-8, a key missing or of the wrong type, a size that does not add up — and raises a
FormatError naming the file, the entry's offset and the entry's kind, never anything else.

    CAPTURES     JSON lines, one outcome per program (capture.parse_outcome)
    KALLSYMS     /proc/kallsyms text at record start, zstd
    KERNEL_CODE  {u64 addr; u64 time; u32 len; u32 0} bytes[len]   (perf/private.py)
    RECORD_INFO  one JSON object: how the recording was made and what it lost
    UNREPORTED   JSON lines: changes no TEXT_POKE reported (recorder.image_watch.UnreportedChange)
    CAPTURE      one program's capture (capture.ProgCapture.encode)
    BTF          {u32 id; u32 0} raw BTF, kept out of HEADER_BPF_BTF (recorder/finish.py says why)
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .capture import ProgCapture, parse_outcome
from .errors import FormatError
from .json_entry import parse_json
from .perf.private import KERNEL_CODE, Kind, pack_kernel_code

MAX_KALLSYMS = 256 << 20   # inflated kallsyms text (6.18 with modules: ~12 MiB)

# RECORD_INFO: every key is optional (files of older textrace have fewer), and typed
_INT = int
_STR = str
RECORD_INFO_KEYS: dict[str, Any] = {
    "capture": _STR, "clockid": _INT, "lost_records": _INT, "capture_lost_chunks": _INT,
    "kernel_code": dict, "unreported_changes": _INT, "hostname": _STR, "os_release": _STR,
    "version": _STR, "arch": _STR, "nr_cpus_available": _INT, "nr_cpus_online": _INT,
    "total_mem_kb": _INT, "cmdline": list, "event_names": list, "clockid_res_ns": _INT,
    "tod_ns": _INT, "clockid_ns": _INT, "programs_seen": _INT, "programs_captured": _INT,
    "programs_failed": _INT, "finished": bool, "recovered": list,
    "capture_note": (str, type(None)), "packs": dict,
}
_UNREPORTED = {"prog_id": int, "addr": int, "old": str, "new": str, "after": int,
               "seen": int}


def _error(kind: int, msg: str, file, offset) -> FormatError:
    return FormatError(msg, file=file, offset=offset, field=f"textrace.{Kind(kind).name}"
                       if kind in Kind._value2member_map_ else f"textrace.kind{kind}")


def _lines(data: bytes):
    pos = 0
    for line in data.split(b"\n"):
        if line.strip():
            yield pos, line
        pos += len(line) + 1


def decode_captures(data: bytes, *, file=None, offset: int = 0) -> dict[int, dict]:
    """CAPTURES: each program's outcome by program id (a later line for an id wins)."""
    out = {}
    for pos, line in _lines(data):
        d = parse_outcome(line, file=file, offset=offset + pos)
        out[d["id"]] = d
    return out


def encode_kallsyms(text: str) -> bytes:
    """KALLSYMS: the /proc/kallsyms text, zstd (about 12 MiB inflated on 6.18)."""
    import zstandard
    return zstandard.ZstdCompressor(level=3).compress(text.encode())


def decode_kallsyms(data: bytes, *, file=None, offset: int = 0) -> bytes:
    """The text as bytes (KernelSymbols parses bytes), checked to be UTF-8."""
    import zstandard
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_KALLSYMS)
    except zstandard.ZstdError as e:
        raise _error(Kind.KALLSYMS, f"does not inflate: {e}", file, offset) from None
    if raw.isascii():   # what kallsyms is, checked at C speed
        return raw
    try:
        raw.decode("utf-8")
        return raw
    except UnicodeDecodeError as e:
        raise _error(Kind.KALLSYMS, f"not UTF-8 ({e.reason} at byte {e.start})", file,
                     offset) from None


def decode_kernel_code(data: bytes, *, file=None, offset: int = 0) -> tuple[int, int, bytes]:
    """KERNEL_CODE: (kernel virtual address, read time in ns, bytes), sizes checked."""
    if len(data) < KERNEL_CODE.size:
        raise _error(Kind.KERNEL_CODE, f"{len(data)} bytes, shorter than its "
                                       f"{KERNEL_CODE.size}-byte header", file, offset)
    addr, time, n, zero = KERNEL_CODE.unpack_from(data, 0)
    if n != len(data) - KERNEL_CODE.size or zero:
        raise _error(Kind.KERNEL_CODE, f"says {n} bytes of code but holds "
                                       f"{len(data) - KERNEL_CODE.size}", file, offset)
    return addr, time, bytes(data[KERNEL_CODE.size:])


def encode_record_info(info: dict) -> bytes:
    """RECORD_INFO: one compact JSON object (keys as in RECORD_INFO_KEYS)."""
    return json.dumps(info, separators=(",", ":")).encode()


def decode_record_info(data: bytes, *, file=None, offset: int = 0) -> dict:
    """RECORD_INFO, each key present checked for its type; every key is optional."""
    d = parse_json(data, RECORD_INFO_KEYS, file=file, offset=offset, entry="RECORD_INFO",
                   required=False)
    for k in ("cmdline", "event_names", "recovered"):
        if k in d and not all(isinstance(x, str) for x in d[k]):
            raise _error(Kind.RECORD_INFO, f"{k!r} holds a non-string", file, offset)
    return d


def decode_unreported(data: bytes, *, file=None, offset: int = 0) -> list[dict]:
    """UNREPORTED: one dict per change, keys checked and old/new checked to be hex."""
    out = []
    for pos, line in _lines(data):
        d = parse_json(line, _UNREPORTED, file=file, offset=offset + pos, entry="UNREPORTED")
        try:
            bytes.fromhex(d["old"]), bytes.fromhex(d["new"])
        except ValueError:
            raise _error(Kind.UNREPORTED, "old/new are not hex", file, offset + pos) from None
        out.append(d)
    return out


BTF_ENTRY = struct.Struct("<II")


def decode_btf(data: bytes, *, file=None, offset: int = 0) -> tuple[int, bytes]:
    """BTF: (the kernel's BTF id, the raw BTF), its magic checked."""
    if len(data) < BTF_ENTRY.size + 4:
        raise _error(Kind.BTF, f"{len(data)} bytes cannot hold an id and BTF", file, offset)
    btf_id, zero = BTF_ENTRY.unpack_from(data, 0)
    raw = bytes(data[BTF_ENTRY.size:])
    if zero or raw[:2] != b"\x9f\xeb":
        raise _error(Kind.BTF, "not an id followed by BTF (magic 0xeb9f)", file, offset)
    return btf_id, raw


def decode_capture(data: bytes, *, file=None, offset: int = 0):
    """CAPTURE: the ProgCapture (ProgCapture.decode)."""
    return ProgCapture.decode(data, file=file, offset=offset)


def encode_packs(entries: list[dict]) -> bytes:
    """Kind.PACKS: one JSON object a line, each with "t" saying what it is (vmalloc, pack,
    snapshot, header, freed, info; see recorder/pack_watch.py)."""
    return b"\n".join(json.dumps(e, separators=(",", ":")).encode() for e in entries)


def decode_packs(data: bytes, *, file=None, offset: int = 0) -> list[dict]:
    """Kind.PACKS (recorder/pack_watch.py): JSON lines, each an object whose "t" says what it is."""
    out = []
    for pos, line in _lines(data):
        d = parse_json(line, {"t": str}, file=file, offset=offset + pos, entry="PACKS")
        out.append(d)
    return out


DECODERS = {Kind.CAPTURES: decode_captures, Kind.KALLSYMS: decode_kallsyms,
            Kind.KERNEL_CODE: decode_kernel_code, Kind.RECORD_INFO: decode_record_info,
            Kind.UNREPORTED: decode_unreported, Kind.CAPTURE: decode_capture,
            Kind.BTF: decode_btf, Kind.PACKS: decode_packs}


def decode(kind: int, data: bytes, *, file=None, offset: int = 0):
    """The entry's value; FormatError for a damaged one.  Kinds this version does not know
    come back as bytes (newer writers add kinds)."""
    fn = DECODERS.get(kind)
    if fn is None:
        return bytes(data)
    return fn(data, file=file, offset=offset)


__all__ = ["decode", "parse_json", "encode_kallsyms", "encode_record_info",
           "pack_kernel_code", "DECODERS"]
