"""Code regions with lifetimes, and their bulk lookup by (address, time).

Dynamic code (BPF programs, trampolines) comes and goes, and bpf_prog_pack hands a freed
address to the next program, so the same address means different code at different times.
Time is cut into epochs at every birth and death; within an epoch the live regions do not
overlap, so a sample resolves with one binary search on the epoch's sorted starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """Code at [start, end) from `born` to `died` (ns, the recording's clock; None = before
    the recording / still there at its end).  `kind`: "bpf", "ool" (out-of-line kernel
    code: trampolines, dispatchers), "kernel" or "module"."""

    start: int
    end: int
    name: str
    kind: str
    born: int | None = None
    died: int | None = None
    prog_id: int | None = None

    def alive_at(self, t: int) -> bool:
        """Whether the code was there at t (ns): born at or before t, died after it."""
        return (self.born is None or self.born <= t) and (self.died is None or t < self.died)

    def contains(self, addr: int) -> bool:
        """Whether kernel virtual address `addr` is in [start, end), at any time."""
        return self.start <= addr < self.end


_NEVER = np.iinfo(np.int64).min
_FOREVER = np.iinfo(np.int64).max


def _ns(t: int) -> int:
    """A record's time as int64: a u64 beyond it (a damaged record) is the far future."""
    return min(t, int(_FOREVER))


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique for a plain array, without it: numpy 2.x's unique() checks for masked
    arrays and so imports numpy.ma, ~8 ms of a report's start-up."""
    out = np.sort(values)
    if len(out) > 1:
        out = out[np.concatenate([[True], out[1:] != out[:-1]])]
    return out


class RegionTable:
    """Regions with lifetimes; `lookup(addrs, times)` gives each pair's region index or -1."""

    def __init__(self, regions: list[Region]):
        self.regions = list(regions)
        n = len(self.regions)
        self.start = np.array([r.start for r in self.regions], dtype=np.uint64)
        self.end = np.array([r.end for r in self.regions], dtype=np.uint64)
        self.born = np.array([_NEVER if r.born is None else _ns(r.born) for r in self.regions],
                             dtype=np.int64).reshape(n)
        self.died = np.array([_FOREVER if r.died is None else _ns(r.died)
                              for r in self.regions], dtype=np.int64).reshape(n)
        self.cuts = sorted_unique(np.concatenate([self.born, self.died, [_NEVER]]))
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _epoch(self, e: int):
        """Live regions of epoch e, sorted by start: (starts, ends, region indices)."""
        got = self._epochs.get(e)
        if got is None:
            t = self.cuts[e]
            live = np.flatnonzero((self.born <= t) & (t < self.died))
            order = live[np.argsort(self.start[live], kind="stable")]
            got = (self.start[order], self.end[order], order)
            self._epochs[e] = got
        return got

    def lookup(self, addrs: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Region index per (addr, time), -1 where no region was there then."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        times = np.asarray(times)
        if times.dtype == np.uint64:  # record times; one beyond int64 is damage: far future
            times = np.minimum(times, np.uint64(_FOREVER))
        times = times.astype(np.int64, copy=False)
        out = np.full(len(addrs), -1, dtype=np.int64)
        if not self.regions or not len(addrs):
            return out
        epoch = np.searchsorted(self.cuts, times, side="right") - 1
        order = np.argsort(epoch, kind="stable")
        bounds = np.flatnonzero(np.diff(epoch[order])) + 1
        for group in np.split(order, bounds):
            starts, ends, idx = self._epoch(int(epoch[group[0]]))
            if not len(starts):
                continue
            a = addrs[group]
            pos = np.searchsorted(starts, a, side="right") - 1
            ok = pos >= 0
            pos = np.where(ok, pos, 0)
            hit = ok & (a < ends[pos])
            out[group[hit]] = idx[pos[hit]]
        return out

    def ever_holds(self, addrs: np.ndarray) -> np.ndarray:
        """Whether some region, at some time, held each address."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        if not self.regions:
            return np.zeros(len(addrs), dtype=bool)
        order = np.argsort(self.start, kind="stable")
        starts = self.start[order]
        reach = np.maximum.accumulate(self.end[order])   # the union's extent so far
        pos = np.searchsorted(starts, addrs, side="right") - 1
        return (pos >= 0) & (addrs < reach[np.maximum(pos, 0)])

    def at(self, addr: int, t: int) -> Region | None:
        """The region holding `addr` at t (ns), or None: lookup() for one pair."""
        i = int(self.lookup(np.array([addr]), np.array([t]))[0])
        return None if i < 0 else self.regions[i]

    def versions(self, addr: int) -> list[Region]:
        """Every region that ever held `addr`, oldest first."""
        hits = [r for r in self.regions if r.contains(addr)]
        return sorted(hits, key=lambda r: _NEVER if r.born is None else r.born)
