"""`textrace pokes`: every TEXT_POKE of a recording, in time order, with what it was.

Each row is one record: its time (ns, the recording's clock), the kernel address and the
symbol there at that time, the mechanism that patched it (history.pokes.KINDS), the old
and new bytes decoded with their call and jump targets named, and the INT3 window around it
in which a read of those bytes cannot tell old from new (pokes of one text_poke_bp batch
share one window).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import TextraceError
from ..history.code_history import INT3_WINDOW_NS
from ..history.pokes import KINDS, classify
from ..load import load_history
from ..perf.reader import PerfData


@dataclass
class PokeRow:
    """One TEXT_POKE (or inferred change): time (ns, the recording's clock), kernel virtual
    address, symbol, what kind of poke it was and why, old and new bytes decoded."""

    time: int
    addr: int
    symbol: str | None
    kind: str
    why: str
    old: str                   # hex
    new: str                   # hex
    old_insn: list[str] = field(default_factory=list)
    new_insn: list[str] = field(default_factory=list)
    ambiguous: list[int] = field(default_factory=list)  # [start, end] ns: the INT3 window
    batch: int = 1             # pokes sharing that window (one text_poke_bp batch)
    reported: bool = True      # False: a change textrace found by re-reading the code,
                               # which the kernel did not report; `ambiguous` is then
                               # the interval it happened in

    def to_dict(self) -> dict:
        """The row as a JSON object (--json), field for field."""
        return dict(self.__dict__)


def poke_rows(data: PerfData, *, kind: str | None = None,
              window_ns: int | None = None, history=None, live=None) -> list[PokeRow]:
    """One row per TEXT_POKE in time order; only those of `kind` when given.  `window_ns`:
    the INT3 window on each side of a poke (INT3_WINDOW_NS when None); `history`: the
    recording's, when already loaded; `live`: a KallsymsReader started earlier."""
    if kind is not None and kind not in KINDS:
        raise TextraceError(f"unknown poke kind {kind!r}; known: {', '.join(KINDS)}",
                            field="--kind")
    if window_ns is None:
        window_ns = INT3_WINDOW_NS
    if window_ns < 0:
        raise TextraceError(f"--window {window_ns} is negative", field="--window")
    if history is None:
        history, _programs = load_history(data, live=live, images=False)
    rows = []
    for w in history.poke_windows(window_ns):
        for p in w.pokes:
            info = classify(history, p)
            if kind is not None and info.kind != kind:
                continue
            rows.append(PokeRow(p.time, p.addr, info.symbol, info.kind, info.why,
                                p.old.hex(), p.new.hex(),
                                [i.text for i in info.old_insns],
                                [i.text for i in info.new_insns],
                                [w.start, w.end], len(w.pokes), p.window is None))
    return rows


def kind_counts(rows: list[PokeRow]) -> dict[str, int]:
    """Rows per kind, in KINDS order, kinds with none left out."""
    n = Counter(r.kind for r in rows)
    return {k: n[k] for k in KINDS if n[k]}
