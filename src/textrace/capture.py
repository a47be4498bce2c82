"""ProgCapture: what was saved of one BPF program, and how it travels in perf.data.

The program's info and JIT images go into HEADER_BPF_PROG_INFO (perf's own layout, so perf
reads them too) and its BTF into HEADER_BPF_BTF; how each program was captured, or why it
was not, goes into textrace's own section (perf.data has no place for it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .bpf.prog_info import ProgInfo


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
        return self.info is not None

    def outcome_json(self) -> bytes:
        return json.dumps({"id": self.prog_id, "tag": self.tag.hex(), "method": self.method,
                           "reason": self.reason, "time": self.time},
                          separators=(",", ":")).encode()


def outcomes_from_json(blob: bytes) -> dict[int, dict]:
    out = {}
    for line in blob.splitlines():
        if line.strip():
            d = json.loads(line)
            out[d["id"]] = d
    return out
