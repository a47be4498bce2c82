"""ProgCapture: what was saved of one BPF program, and the one codec it travels in.

A capture is written into the recording's data stream the moment it is taken (perf/stream.py,
entry kind CAPTURE), so a killed recorder keeps it; finishing the file copies the info and
JIT images into HEADER_BPF_PROG_INFO (perf's own layout, so perf reads them too), the BTF
into HEADER_BPF_BTF, and how each program was captured, or why it was not, into textrace's
own section (perf.data has no place for it).  `encode()` / `decode()` here are the only
place the capture layout is known; the daemon's store and `inject` use them too.

Layout: {char magic[4] "CAP1"; u32 json_len; u32 info_len; u32 btf_len}, then the outcome
(one JSON object, the CAPTURES line of this program), a BPF_PROG_INFO section holding this
program alone (info_len 0: not captured), a BPF_BTF section holding its BTF alone (btf_len
0: none).  Nothing else; sizes must add up exactly.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from .bpf.prog_info import ProgInfo
from .errors import FormatError, TextraceError
from .json_entry import parse_json

CAPTURE_MAGIC = b"CAP1"
CAPTURE_HEAD = struct.Struct("<4sIII")
# "store" and "from": completed by `inject` from a daemon's store or another recording
METHODS = (None, "user", "kernel", "store", "from")


@dataclass
class ProgCapture:
    """One program: `info` when captured, else `reason` says why not.  `method` is
    "user" (read through the bpf syscall while it lived) or "kernel" (copied at load by the
    capture program); `time` is when the capture was taken (ns, the recording's clock)."""

    prog_id: int
    tag: bytes
    info: ProgInfo | None = None
    method: str | None = None
    reason: str | None = None
    time: int | None = None
    btf: bytes | None = None

    @property
    def captured(self) -> bool:
        """Whether the program's bpf_prog_info (JIT images included) was saved."""
        return self.info is not None

    def outcome(self) -> dict:
        """The CAPTURES line of this program: id, tag (hex), method, reason, time (ns)."""
        return {"id": self.prog_id, "tag": self.tag.hex(), "method": self.method,
                "reason": self.reason, "time": self.time}

    def outcome_json(self) -> bytes:
        """outcome() as compact JSON, one line of the CAPTURES entry."""
        return json.dumps(self.outcome(), separators=(",", ":")).encode()

    def encode(self) -> bytes:
        """The CAPTURE entry (the module docstring's layout) that decode() reads back."""
        from .perf.features import BpfBtf, BpfProgInfo, BpfProgInfoEntry, BtfEntry
        outcome = self.outcome_json()
        info = b""
        if self.info is not None:
            il, dl, arrays, raw_info, data = self.info.to_bpil()
            info = BpfProgInfo(programs=(BpfProgInfoEntry(arrays=arrays, info=raw_info,
                                                          data=data),)).pack()
        btf = b""
        if self.info is not None and self.btf:
            btf = BpfBtf(btfs=(BtfEntry(id=self.info.btf_id, data=self.btf),)).pack()
        return CAPTURE_HEAD.pack(CAPTURE_MAGIC, len(outcome), len(info), len(btf)) + \
            outcome + info + btf

    @classmethod
    def decode(cls, blob: bytes, *, file: str | None = None, offset: int = 0) -> "ProgCapture":
        """The capture `encode()` made; FormatError (naming file, offset and the field)
        for anything else."""
        def bad(msg: str, fieldname: str = "capture") -> FormatError:
            return FormatError(msg, file=file, offset=offset, field=f"textrace.{fieldname}")
        if len(blob) < CAPTURE_HEAD.size:
            raise bad(f"capture of {len(blob)} bytes is shorter than its header")
        magic, jl, il, bl = CAPTURE_HEAD.unpack_from(blob, 0)
        if magic != CAPTURE_MAGIC:
            raise bad(f"capture magic is {magic!r}, not {CAPTURE_MAGIC!r}", "capture.magic")
        if CAPTURE_HEAD.size + jl + il + bl != len(blob):
            raise bad(f"capture parts ({jl}+{il}+{bl} bytes) do not fill its "
                      f"{len(blob) - CAPTURE_HEAD.size} bytes", "capture.size")
        pos = CAPTURE_HEAD.size
        outcome = parse_outcome(blob[pos:pos + jl], file=file, offset=offset + pos)
        pos += jl
        cap = cls(outcome["id"], bytes.fromhex(outcome["tag"]), method=outcome["method"],
                  reason=outcome["reason"], time=outcome["time"])
        from .perf.features import BpfBtf, BpfProgInfo
        try:
            if il:
                feat = BpfProgInfo.parse(blob[pos:pos + il], file=file, offset=offset + pos)
                if len(feat.programs) != 1:
                    raise bad(f"capture holds {len(feat.programs)} programs, not 1",
                              "capture.info")
                e = feat.programs[0]
                cap.info = ProgInfo.from_bpil(e.info_len, e.data_len, e.arrays, e.info,
                                              e.data, file=file, offset=offset + pos)
                if cap.info.id != cap.prog_id:
                    raise bad(f"capture of program {cap.prog_id} holds the info of "
                              f"program {cap.info.id}", "capture.info")
            pos += il
            if bl:
                feat = BpfBtf.parse(blob[pos:pos + bl], file=file, offset=offset + pos)
                if len(feat.btfs) != 1 or cap.info is None:
                    raise bad("capture's BTF is not one BTF of a captured program",
                              "capture.btf")
                cap.btf = feat.btfs[0].data
        except FormatError:
            raise
        except (TextraceError, ValueError, struct.error, IndexError) as e:
            raise bad(f"capture does not decode: {e}", "capture.info") from None
        return cap


_OUTCOME = {"id": int, "tag": str, "method": (str, type(None)), "reason": (str, type(None)),
            "time": (int, type(None))}


def parse_outcome(line: bytes, *, file: str | None = None, offset: int = 0) -> dict:
    """One CAPTURES line: {"id", "tag" (16 hex digits, empty when never known), "method"
    (user, kernel, store, from or null), "reason", "time" (ns or null)}, every key there
    and of its type."""
    d = parse_json(line, _OUTCOME, file=file, offset=offset, entry="CAPTURES")
    def bad(msg):
        return FormatError(msg, file=file, offset=offset, field="textrace.CAPTURES")
    if not 0 <= d["id"] < 1 << 32:
        raise bad(f"program id {d['id']} is not a u32")
    if len(d["tag"]) not in (0, 16) or any(c not in "0123456789abcdef" for c in d["tag"]):
        raise bad(f"tag {d['tag']!r} is not 8 bytes of hex")
    if d["method"] not in METHODS:
        raise bad(f"capture method {d['method']!r} is none of "
                  f"{', '.join(m for m in METHODS if m)}")
    return d
