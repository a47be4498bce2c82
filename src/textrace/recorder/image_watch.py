"""Unreported code changes: JIT images the kernel patched without a TEXT_POKE record.

When a slot of a prog-array map changes, the x86 JIT rewrites the direct tail-call sites of
the programs using that map in place (nop5 <-> jmp rel32), and some kernels (6.18 here) emit
no TEXT_POKE for it.  The recorder keeps the image it last knew of every live program that
makes tail calls, re-reads those programs after each prog-array update the capture program
reports and once more at the end of the recording, and turns every differing range into an
UnreportedChange: written as a TEXT_POKE record of textrace's (so the code history, and
perf's own decoders, replay it) and listed in textrace's section with the interval in which
the change happened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..bpf.insn import decode
from ..bpf.prog_info import JIT_ARRAYS, ProgInfo, read_prog_by_id
from ..bpf.syscall import NoSuchObject
from ..errors import TextraceError

@dataclass(frozen=True)
class UnreportedChange:
    """Bytes at addr went from old to new in program prog_id, after `after` (when the old
    bytes were last known) and no later than `seen` (when the new ones were read, or the
    exit of the prog-array update that made them)."""

    prog_id: int
    addr: int
    old: bytes
    new: bytes
    after: int
    seen: int

    def to_json(self) -> bytes:
        """One line of the UNREPORTED entry (bytes as hex)."""
        return json.dumps({"prog_id": self.prog_id, "addr": self.addr, "old": self.old.hex(),
                           "new": self.new.hex(), "after": self.after, "seen": self.seen},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, line: bytes) -> "UnreportedChange":
        """A change from its to_json() line."""
        d = json.loads(line)
        return cls(d["prog_id"], d["addr"], bytes.fromhex(d["old"]), bytes.fromhex(d["new"]),
                   d["after"], d["seen"])


def instruction_starts(code: bytes):
    """Offsets of the x86-64 instructions of a JIT image (the JIT puts no data between
    instructions, so a linear sweep is exact), and its length last."""
    import numpy as np

    from ..history.x86 import x86_64
    starts = [off for off, _size, _m, _o in x86_64().disasm_lite(code, 0)]
    return np.array(starts + [len(code)], dtype=np.int64)


def changed_ranges(old: bytes, new: bytes) -> list[tuple[int, int]]:
    """[start, end) offsets where two equally long JIT images differ, one range per changed
    instruction (a patched nop5 and its jmp rel32 may share bytes; the change is the
    whole instruction, in both images' decoding)."""
    import numpy as np  # here: the recorder starts without numpy (it may run unprivileged)
    a = np.frombuffer(old, dtype=np.uint8)
    b = np.frombuffer(new, dtype=np.uint8)
    diff = np.flatnonzero(a != b)
    if not len(diff):
        return []
    starts, ends = diff.copy(), diff + 1
    for code in (old, new):
        bounds = instruction_starts(code)
        starts = np.minimum(starts, bounds[np.searchsorted(bounds, diff, "right") - 1])
        ends = np.maximum(ends, bounds[np.minimum(np.searchsorted(bounds, diff, "right"),
                                                  len(bounds) - 1)])
    merged: list[tuple[int, int]] = []
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        if merged and lo < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def makes_tail_calls(info: ProgInfo) -> bool:
    """Whether the program has a tail call, and so JIT'd sites a prog-array update may
    patch without a TEXT_POKE; False when its instructions do not decode."""
    try:
        return any(i.is_tail_call for i in decode(info.xlated_insns))
    except TextraceError:
        return False


# How long a reported change is kept for images learned later: an image comes from a
# capture stamped at its program's load, and captures arrive within a round or two of it.
REPORTED_HORIZON_NS = 10 * 10**9


class ImageWatch:
    """The last known JIT image of every live program that makes tail calls, kept current
    with the changes the kernel does report (TEXT_POKE), whichever arrives first.

    The reported changes are kept to be applied to images learned later, but only those
    of the last REPORTED_HORIZON_NS, and none in the kernel's own text (`kernel_text`,
    _text.._etext, once known), where no JIT image lies: with the function tracer on every
    function, that text takes tens of thousands of pokes."""

    def __init__(self):
        self.known: dict[int, tuple[int, list[tuple[int, bytes]]]] = {}  # id -> (time, funcs)
        self.reported: list[tuple[int, int, bytes]] = []  # (time, addr, new) of TEXT_POKEs
        self.kernel_text: tuple[int, int] | None = None
        self._prune_at = 1024

    def watch(self, info: ProgInfo, time: int) -> None:
        """Keep a program's JIT image as captured at `time` (ns), with the reported changes
        made since applied; programs without tail calls are ignored."""
        if not makes_tail_calls(info):
            return
        self.known[info.id] = (time, [(a, code) for a, _n, code in info.funcs()])
        for t, addr, new in self.reported:
            if t > time:
                self._patch(info.id, addr, new)

    def forget(self, prog_id: int) -> None:
        """Stop watching an unloaded program."""
        self.known.pop(prog_id, None)

    def apply(self, time: int, addr: int, new: bytes) -> None:
        """A change the kernel did report: not to be reported again."""
        if self.kernel_text is not None and self.kernel_text[0] <= addr < self.kernel_text[1]:
            return
        self.reported.append((time, addr, new))
        if len(self.reported) >= self._prune_at:
            horizon = time - REPORTED_HORIZON_NS
            self.reported = [r for r in self.reported if r[0] >= horizon]
            self._prune_at = max(1024, 2 * len(self.reported))
        for prog_id, (known_time, _funcs) in self.known.items():
            if time > known_time:
                self._patch(prog_id, addr, new)

    def _patch(self, prog_id: int, addr: int, new: bytes) -> None:
        funcs = self.known[prog_id][1]
        for k, (start, code) in enumerate(funcs):
            if start <= addr and addr + len(new) <= start + len(code):
                off = addr - start
                funcs[k] = (start, code[:off] + new + code[off + len(new):])

    def recheck(self, clock) -> list[UnreportedChange]:
        """Re-read every watched program now; the changes since each was last known."""
        changes = []
        for prog_id in list(self.known):
            try:
                info = read_prog_by_id(prog_id, JIT_ARRAYS)
            except NoSuchObject:
                self.forget(prog_id)
                continue
            now = clock()
            after, funcs = self.known[prog_id]
            for (addr, old), (addr2, _n, new) in zip(funcs, info.funcs()):
                if addr != addr2 or len(old) != len(new):
                    continue  # not the same image (cannot happen to a live program)
                for lo, hi in changed_ranges(old, new):
                    changes.append(UnreportedChange(prog_id, addr + lo, old[lo:hi],
                                                    new[lo:hi], after, now))
            self.known[prog_id] = (now, [(a, code) for a, _n, code in info.funcs()])
        return changes
