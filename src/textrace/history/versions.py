"""Every version of kernel code a history knows: address range, bytes, when they held.

A history holds images (each read at one time) and TEXT_POKE records; between two pokes of
a range its bytes do not change.  So each image is cut at the edges of the pokes that touch
it (and into pieces of at most MAX_SEGMENT bytes), and each piece has one version per
interval between those pokes, its bytes read from the history at the interval's start.
Bytes no image covers but a poke carries (poked kernel text without a snapshot) have a
version per poke: its old bytes before it, its new bytes from it.

`how` says where a version's bytes come from: "capture" (a captured BPF JIT image),
"kernel_read" (kernel code the recorder read: kcore or the capture program), "text_poke"
(an image moved through reported TEXT_POKE records, or the bytes of one), "inferred" (moved
through a change textrace found by re-reading the code, which no record reported).
"""

from __future__ import annotations

from dataclasses import dataclass

from .code_history import CodeHistory, Image, Poke, UnknownCode
from .regions import Region

MAX_SEGMENT = 1 << 20   # bytes a version carries at most (a kernel text snapshot is ~20 MiB)


@dataclass(frozen=True)
class CodeVersion:
    """Bytes at [start, start + len(data)) from `valid_from` to `valid_to` (ns, the
    recording's clock; None: before the recording / still so at its end)."""

    start: int
    data: bytes
    valid_from: int | None
    valid_to: int | None
    how: str                    # capture, kernel_read, text_poke, inferred
    symbol: str | None          # the region's name (program function, trampoline), if any
    prog_id: int | None

    @property
    def end(self) -> int:
        """First kernel virtual address past the version's bytes."""
        return self.start + len(self.data)


def _how_image(im: Image) -> str:
    return "capture" if im.source.startswith("bpf:") else "kernel_read"


def _how_poke(p: Poke) -> str:
    return "inferred" if p.window is not None else "text_poke"


def code_versions(history: CodeHistory) -> list[CodeVersion]:
    """Every version, images first (by address), then the bytes only pokes carry."""
    table = history.table
    dynamic: dict[int, list[Image]] = {}       # region index -> its images
    static: list[Image] = []
    index = {id(r): i for i, r in enumerate(table.regions)}
    for im in history.images:
        region = table.at(im.addr, im.time) if im.time is not None else None
        if region is not None and region.start <= im.addr and im.end <= region.end:
            dynamic.setdefault(index[id(region)], []).append(im)
        elif region is None:
            static.append(im)
    out: list[CodeVersion] = []
    for i, ims in sorted(dynamic.items()):
        region = table.regions[i]
        pokes = [p for p in history.pokes if region.alive_at(p.time)]
        done: set[tuple[int, int]] = set()
        for im in ims:
            if (im.addr, im.end) in done:
                continue
            done.add((im.addr, im.end))
            out += _versions(history, im.addr, im.end, region, pokes, [im])
    # static text: the union of the images, cut where one image ends and another begins,
    # so that each piece lies within one image
    static.sort(key=lambda im: im.addr)
    for lo, hi, ims in _union(static):
        out += _versions(history, lo, hi, None, history.pokes, ims)
    covered = [(v.start, v.end) for v in out]
    out += _poke_versions(history, covered)
    return out


def _union(images: list[Image]):
    """(start, end, images) of each stretch of address space the images cover."""
    run: list[Image] = []
    lo = hi = None
    for im in images:
        if run and im.addr > hi:
            yield lo, hi, run
            run = []
        if not run:
            lo, hi = im.addr, im.end
        run.append(im)
        hi = max(hi, im.end)
    if run:
        yield lo, hi, run


def _versions(history: CodeHistory, lo: int, hi: int, region: Region | None,
              pokes: list[Poke], images: list[Image]) -> list[CodeVersion]:
    touching = [p for p in pokes if p.addr < hi and lo < p.end]
    cuts = {lo, hi}
    cuts.update(range(lo, hi, MAX_SEGMENT))
    for im in images:
        cuts.update(x for x in (im.addr, im.end) if lo < x < hi)
    for p in touching:
        cuts.update(x for x in (p.addr, p.end) if lo < x < hi)
    cuts = sorted(cuts)
    born = region.born if region is not None else None
    died = region.died if region is not None else None
    name = region.name if region is not None else None
    prog_id = region.prog_id if region is not None else None
    out = []
    for a, b in zip(cuts, cuts[1:]):
        mine = [im for im in images if im.addr <= a and b <= im.end]
        if not mine:
            continue
        seg_pokes = [p for p in touching if p.addr < b and a < p.end]
        times = sorted({p.time for p in seg_pokes})
        bounds = [born, *times, died]
        base_times = [im.time for im in mine if im.time is not None]
        for f, t in zip(bounds, bounds[1:]):
            if f is not None and t is not None and t <= f:
                continue
            at = f if f is not None else (t - 1 if t is not None else
                                          (base_times[0] if base_times else 0))
            try:
                data = history.read(a, b - a, at)
            except UnknownCode:
                continue
            out.append(CodeVersion(a, data, f, t, _how(mine, seg_pokes, f, t), name, prog_id))
    return out


def _how(images: list[Image], pokes: list[Poke], f: int | None, t: int | None) -> str:
    """Where the bytes of [f, t) come from: an image read in it, else the poke through
    which they were reached from the image (the one starting it when the image is earlier,
    the one ending it when the image is later)."""
    for im in images:
        if im.time is None or ((f is None or f <= im.time) and (t is None or im.time < t)):
            return _how_image(im)
    when = min(im.time for im in images)
    edge = f if f is not None and f > when else t
    for p in pokes:
        if p.time == edge:
            return _how_poke(p)
    return "text_poke"


def _poke_versions(history: CodeHistory, covered: list[tuple[int, int]]) -> list[CodeVersion]:
    """Pokes of bytes no image covers: each site's old bytes before its first poke, the new
    bytes of each poke until the next."""
    def is_covered(p: Poke) -> bool:
        return any(lo <= p.addr and p.end <= hi for lo, hi in covered)

    sites: dict[int, list[Poke]] = {}
    for p in history.pokes:
        if not is_covered(p):
            sites.setdefault(p.addr, []).append(p)
    out = []
    for addr in sorted(sites):
        ps = sites[addr]
        region = history.table.at(addr, ps[0].time)
        name = region.name if region is not None else None
        prog_id = region.prog_id if region is not None else None
        if ps[0].old:
            out.append(CodeVersion(addr, ps[0].old, None, ps[0].time, _how_poke(ps[0]),
                                   name, prog_id))
        for p, nxt in zip(ps, [*ps[1:], None]):
            if p.new:
                out.append(CodeVersion(addr, p.new, p.time,
                                       nxt.time if nxt is not None else None, _how_poke(p),
                                       name, prog_id))
    return out
