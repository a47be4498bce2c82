"""`textrace packs`: the bpf_prog_pack allocations a recording saw, what was placed in
each over time, how full and fragmented they were, and whether freed code was gone.

One row per pack (start, size, programs placed, occupancy peak, largest free run, freed
ranges checked and stale ones, foreign chunks and code no KSYMBOL accounts for), plus a
summary with the allocations too big for a pack.  `plot()` draws each pack's occupancy over
time and its chunk map at chosen times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..history.packs import CHUNK, Pack, PackLayout, build_layout
from ..perf.reader import PerfData


@dataclass
class Placement:
    """One allocation placed in a pack: when (ns; None: before the recording), freed
    when, its offset and size in the pack (bytes), and what it held."""

    time: int | None        # ns; None: before the recording
    freed: int | None
    offset: int             # of the allocation in its pack
    size: int
    name: str
    prog_id: int | None
    kind: str
    size_source: str


@dataclass
class PackRow:
    """One bpf_prog_pack (kernel virtual address, bytes): occupancy peak, fragmentation,
    and what the recorder found where programs were freed."""

    start: int
    size: int
    source: str             # "probe": its extent read from the kernel; "aligned": inferred
    programs: int           # JIT images ever placed in it (programs' functions)
    ool: int                # trampolines and dispatchers placed in it
    peak_bytes: int         # chunks in use at the peak, in bytes
    peak_chunks: int
    peak_time: int | None
    peak_code_bytes: int    # the images' own bytes at their peak
    end_bytes: int          # in use at the recording's end
    largest_free_run: int   # bytes, at the peak
    largest_free_run_end: int
    foreign_bytes: int      # held at both reads by code no KSYMBOL names
    freed: int              # freed ranges the recorder watched
    freed_checked: int      # of those, read after the free
    stale: int              # of those, still holding code the free should have removed
    verdicts: dict = field(default_factory=dict)
    stale_ranges: list[dict] = field(default_factory=list)
    unaccounted: list[list[int]] = field(default_factory=list)  # [start, end) at the end
    placements: list[Placement] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The row as a JSON object (--json), placements included."""
        d = dict(self.__dict__)
        d["placements"] = [dict(p.__dict__) for p in self.placements]
        return d


def load_layout(data: PerfData) -> tuple[PackLayout, list]:
    """The recording's pack layout, and its programs (load.load_history)."""
    from ..load import load_history
    history, programs = load_history(data)
    layout = history.pack_layout()
    if layout is None:  # not recorded by textrace: what the records alone give
        return build_layout(history.table.regions, []), programs
    return layout, programs


def pack_row(pack: Pack) -> PackRow:
    """The row of one pack, sizes in bytes (chunks of 64)."""
    peak_chunks, peak_time = pack.peak()
    _times, chunks, code = pack.timeline()
    verdicts: dict[str, int] = {}
    for c in pack.checks:
        verdicts[c.verdict] = verdicts.get(c.verdict, 0) + 1
    placements = sorted((Placement(a.born, a.died, a.start - pack.start, a.size, a.name,
                                   a.prog_id, a.kind, a.size_source)
                         for a in pack.allocations),
                        key=lambda p: (p.time if p.time is not None else -1, p.offset))
    return PackRow(
        pack.start, pack.size, pack.source,
        programs=sum(a.kind == "bpf" for a in pack.allocations),
        ool=sum(a.kind == "ool" for a in pack.allocations),
        peak_bytes=peak_chunks * CHUNK, peak_chunks=peak_chunks, peak_time=peak_time,
        peak_code_bytes=int(code.max()) if len(code) else 0,
        end_bytes=int(chunks[-1]) * CHUNK,
        largest_free_run=pack.largest_free_run(peak_time) * CHUNK,
        largest_free_run_end=pack.largest_free_run(None) * CHUNK,
        foreign_bytes=int(pack.foreign.sum()) * CHUNK if pack.foreign is not None else 0,
        freed=len(pack.checks), freed_checked=sum(c.checked for c in pack.checks),
        stale=sum(c.stale for c in pack.checks), verdicts=verdicts,
        stale_ranges=[{"start": c.start, "size": c.size, "name": c.name,
                       "unloaded": c.unloaded, "verdict": c.verdict,
                       "last_read": c.last_read} for c in pack.checks if c.stale],
        unaccounted=[[lo, hi] for lo, hi in pack.unaccounted],
        placements=placements)


def pack_rows(layout: PackLayout) -> list[PackRow]:
    """One row per pack, in the layout's order."""
    return [pack_row(p) for p in layout.packs]


def summary(layout: PackLayout, rows: list[PackRow]) -> dict:
    """The closing line: totals over the rows, the pack size and where it came from, and
    the allocations too big for a pack."""
    return {"summary": True, "packs": len(rows), "pack_size": layout.pack_size,
            "pack_size_source": layout.pack_size_source, "reader": layout.reader,
            "programs": sum(r.programs for r in rows),
            "freed": sum(r.freed for r in rows),
            "freed_checked": sum(r.freed_checked for r in rows),
            "stale": sum(r.stale for r in rows),
            "too_big": [{"start": a.start, "size": a.size, "name": a.name,
                         "prog_id": a.prog_id, "born": a.born, "died": a.died}
                        for a in layout.too_big],
            "outside": len(layout.outside),
            "unchecked_outside_packs": sum(1 for c in layout.checks
                                           if layout.pack_of(c.start) is None)}


def plot(layout: PackLayout, path: str, times: list[int] | None = None) -> None:
    """A PNG: per pack, chunks in use over time (left) and its chunk map at each chosen
    time (right; default the peak and the end): free, programs, out-of-line, foreign."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    packs = layout.packs or []
    if not packs:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no bpf_prog_pack in this recording", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    packs = packs[:6]
    ncols = 1 + (len(times) if times else 2)
    fig, axes = plt.subplots(len(packs), ncols, figsize=(4.2 * ncols, 2.6 * len(packs)),
                             squeeze=False, gridspec_kw={"width_ratios": [2] + [1] *
                                                         (ncols - 1)})
    cmap = ListedColormap(["#f2f2f2", "#1f77b4", "#ff7f0e", "#7f7f7f"])
    for row, pack in zip(axes, packs):
        t, chunks, _code = pack.timeline()
        real = t[t > -(1 << 61)]
        t0 = int(real.min()) if len(real) else 0
        xs = (np.maximum(t, t0) - t0) / 1e9
        ax = row[0]
        base = int(pack.foreign.sum()) if pack.foreign is not None else 0
        ax.step(xs, (chunks - base) * CHUNK / 1024, where="post", color="#1f77b4",
                label="KSYMBOL-announced code")
        if base:
            ax.step(xs, chunks * CHUNK / 1024, where="post", color="#7f7f7f",
                    linestyle="--", label="with foreign chunks")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"pack {pack.start:#x} ({pack.size >> 10} KiB): in use", fontsize=9)
        ax.set_xlabel("seconds from the first placement", fontsize=8)
        ax.set_ylabel("KiB in use", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        peak_chunks, peak_time = pack.peak()
        chosen = times or [peak_time, None]
        maps = [pack.used_map(when) for when in chosen]
        width = 256 if pack.chunks >= 256 else pack.chunks
        # the map down to the last row ever used (a 2 MiB pack is mostly empty)
        used_rows = [int(np.flatnonzero(m).max()) // width + 1 for m in maps if m.any()]
        rows_shown = min(-(-pack.chunks // width), max(used_rows + [1]) + 4)
        for ax, when, m in zip(row[1:], chosen, maps):
            grid = np.full(-(-len(m) // width) * width, 0, dtype=np.int8)
            grid[:len(m)] = m
            grid = grid[:rows_shown * width]
            ax.imshow(grid.reshape(-1, width), cmap=cmap, vmin=0, vmax=3,
                      interpolation="nearest", aspect="auto")
            label = "end" if when is None else f"{(when - t0) / 1e9:.3f} s"
            if when == peak_time:
                label += " (peak)"
            ax.set_title(f"chunks at {label}: largest free run "
                         f"{pack.largest_free_run(when) * CHUNK >> 10} KiB", fontsize=8)
            ax.set_xlabel(f"first {rows_shown * width * CHUNK >> 10} KiB, "
                          f"{width} chunks of 64 B a row", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    from matplotlib.patches import Patch
    fig.legend(handles=[Patch(color=c, label=l) for c, l in zip(
        cmap.colors, ("free (INT3)", "BPF program", "trampoline/dispatcher",
                      "foreign (no KSYMBOL)"))], loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
