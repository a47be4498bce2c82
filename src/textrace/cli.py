"""The `textrace` command: one subcommand per view.  Parses arguments and prints; the work
is in the views and the library."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import TextraceError


def _add_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", default="perf.data",
                   help="perf.data file to read ('-' for a pipe-mode stream on stdin)")
    p.add_argument("--salvage", action="store_true",
                   help="read a damaged or unfinished file up to the damage")


_opened: list = []  # files read: what they warn of is printed at the end, once


def _open(args):
    from .perf.reader import PerfData
    data = PerfData.open(args.input, salvage=args.salvage)
    _opened.append(data)
    return data


def _warn_damage(data) -> None:
    for w in data.warnings:
        print(f"textrace: warning: {w}", file=sys.stderr)
    data.warnings.clear()


def _console():
    """A rich console for tables: as wide as the terminal, and unbounded into a pipe."""
    from rich.console import Console
    width = None if sys.stdout.isatty() else 400
    return Console(soft_wrap=True, markup=False, highlight=False, width=width)


def cmd_events(args) -> int:
    """`textrace events`: every record as a text line or JSON; losses said on stderr."""
    from .views.events import event_rows, format_row
    data = _open(args)
    out = sys.stdout
    rows = event_rows(data, order="file" if args.file_order else "time")
    if args.json:
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    else:
        for row in rows:
            out.write(format_row(row) + "\n")
    out.flush()
    _warn_damage(data)
    st = data.stats
    if st.lost or st.lost_samples:
        print(f"textrace: {st.lost} events and {st.lost_samples} samples were lost by the "
              f"kernel (LOST/LOST_SAMPLES records)", file=sys.stderr)
    return 0


def _kallsyms_child():
    """A KallsymsReader: /proc/kallsyms read and parsed by a child process from the start,
    while numpy loads and the recording is read (report, annotate, show, pokes)."""
    # No BLAS threads: without this, numpy's OpenBLAS starts a thread per CPU at import
    # that spins on the other CPUs (~100 ms of CPU in a report on 2 CPUs, ~25 ms of its
    # wall time, competing with the kallsyms reader).  Set here, before the view imports
    # numpy (the child imports none).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .sources.kallsyms import KallsymsReader
    return KallsymsReader()


def _short_lived(cmd):
    """A view's command run without cyclic garbage collection: it makes objects that live
    to its end (records, regions, infos, keys, arrays) and no cycles worth finding, and
    the collector's passes over them took ~50 ms of annotate on 5000 programs (gen0 111
    times, gen1 10, gen2 once).  What is left is frozen, sparing the exit's collection;
    the collector is on again after, for a caller in the same process."""
    import functools

    @functools.wraps(cmd)
    def run(args) -> int:
        import gc
        was = gc.isenabled()
        gc.disable()
        try:
            return cmd(args)
        finally:
            gc.freeze()
            if was:
                gc.enable()
    return run


@_short_lived   # a report makes a few hundred thousand objects (keys, names, rows): the
                # collector's ~400 passes over them took ~80 ms of a 1.6M-sample report
def cmd_report(args) -> int:
    """`textrace report`: samples by symbol as of each sample's time, as a table or JSON."""
    # the kallsyms child first: it imports no numpy, and reads /proc/kallsyms (~50 ms of
    # the kernel's time) while this process imports the report's modules (~0.1 s)
    live = _kallsyms_child()
    try:
        from .views.report import report_table
        data = _open(args)
        table = report_table(data, sort=args.sort, live=live)
    finally:
        live.close()
    if args.limit:
        table = table.head(args.limit)
    if args.json:
        sys.stdout.write(table.json_lines())
    else:
        _write_utf8(report_text(table))
    _warn_damage(data)
    return 0


def _write_utf8(text: bytes) -> None:
    """Write UTF-8 text to stdout: as it is where stdout's encoding is UTF-8 (as a
    pipe's is in a UTF-8 locale), else decoded and written as text."""
    import codecs
    if codecs.lookup(sys.stdout.encoding or "ascii").name == "utf-8" and \
            hasattr(sys.stdout, "buffer"):
        sys.stdout.flush()
        sys.stdout.buffer.write(text)
    else:
        sys.stdout.write(text.decode("utf-8", "surrogatepass"))


def report_text(table) -> bytes:
    """A ReportTable as perf --stdio lays it out, in UTF-8: overhead, samples, shared
    object, [k] or [.] and the symbol, columns aligned (texttable: 111k rows in ~30 ms,
    where rich's Table took 14 s for 24k)."""
    import numpy as np
    from .texttable import Coded, Decimal, Lines, Tagged, format_columns_utf8
    # [k] for the kernel's objects whatever their kind ([unknown] in the kernel as well)
    tags = ["[k] " if dso.startswith("[k") or kind not in ("user", "unknown") else "[.] "
            for dso, kind in table.places]
    hundredths = np.rint(table.percent * 100).astype(np.int64)
    lines = table.symbols.utf8_lines()
    return format_columns_utf8(
        ("Overhead", "Samples", "Shared Object", "Symbol"),
        (Decimal(hundredths, 2, "%"), Decimal(table.samples),
         Coded(table.place, [dso for dso, _kind in table.places]),
         Tagged(Coded(table.place, tags),
                table.symbol if lines is None else Lines(lines, len(table)))),
        right=(True, True))


def cmd_progs(args) -> int:
    """`textrace progs`: the BPF programs seen, their lifetimes and captures."""
    from .views.progs import prog_rows
    from .views.events import format_time
    data = _open(args)
    rows = prog_rows(data)
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row.to_dict(), separators=(",", ":")) + "\n")
        _warn_damage(data)
        return 0
    from rich.table import Table
    table = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("id", "tag", "name", "type", "loaded", "unloaded", "code", "capture"):
        table.add_column(col, justify="right" if col in ("id", "code") else "left")
    for r in rows:
        size = sum(f["len"] for f in r.funcs)
        table.add_row(str(r.id), r.tag, r.name or "-", r.type or "-",
                      format_time(r.loaded_ns) if r.loaded_ns is not None else "before",
                      format_time(r.unloaded_ns) if r.unloaded_ns is not None else "-",
                      f"{size} B/{len(r.funcs)} fn",
                      r.capture if r.captured else f"NOT CAPTURED: {r.reason}")
    console = _console()
    console.print(table)
    for r in rows:  # perf >= 6.16 records a program's bpf_metadata_* variables
        if r.metadata:
            console.print(f"{r.id} metadata: " + " ".join(f"{k}={v}"
                                                          for k, v in r.metadata.items()),
                          markup=False, highlight=False)
    n = sum(r.captured for r in rows)
    console.print(f"{len(rows)} programs, {n} captured ({100 * n / max(len(rows), 1):.1f}%)")
    from .recorded import recorded
    info = recorded(data).info
    if info.get("capture_lost_chunks"):
        console.print(f"the capture program's ring refused {info['capture_lost_chunks']} "
                      f"chunks")
    if info.get("lost_records"):
        console.print(f"the kernel lost {info['lost_records']} records (ring overflow)")
    _warn_damage(data)
    return 0


@_short_lived
def cmd_annotate(args) -> int:
    """`textrace annotate PROG`: the program's JIT code with BPF insns, source and samples."""
    live = _kallsyms_child()
    try:
        from .views.annotate import annotate
        rows, total = annotate(_open(args), args.prog, live)
    finally:
        live.close()
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row.to_dict(), separators=(",", ":")) + "\n")
        return 0
    func = None
    for r in rows:
        if r.func != func:
            func = r.func
            print(f"\n{'main program' if func == 0 else f'subprogram {func}'}:")
        if r.source:
            print(f"    ; {r.source}  {r.line}")
        for text in r.insns:
            print(f"    ;   {text}")
        hits = f"{r.samples:6d} {r.percent:6.2f}%" if r.samples else " " * 14
        extra = f"  <{r.target}>" if r.target else ""
        marks = "  [" + ",".join(r.marks) + "]" if r.marks else ""
        print(f"{hits}  {r.addr:#x}: {r.asm}{extra}{marks}")
    print(f"\n{total} samples in the program")
    if total:
        from .views.annotate import line_totals
        print("samples by source line:")
        for src, text, n in sorted(line_totals(rows), key=lambda x: -x[2]):
            if n:
                print(f"{n:6d} {100 * n / total:6.2f}%  {src}  {text}")
    return 0


@_short_lived
def cmd_callsites(args) -> int:
    """`textrace callsites PROG`: every call in the program's JIT image."""
    from .views.callsites import callsites
    rows = callsites(_open(args), args.prog)
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row.to_dict(), separators=(",", ":")) + "\n")
        return 0
    for r in rows:
        where = f"insn {r.insn}" if r.insn is not None else "insn ?"
        print(f"{r.ip:#x} -> {r.target:#x} {r.symbol or '?':40} ret {r.ret:#x}  {where}  "
              f"{r.source or ''}  {r.line or ''}".rstrip())
    return 0


@_short_lived
def cmd_show(args) -> int:
    """`textrace show ADDR`: every version of the code at a kernel address."""
    try:
        addr = int(args.addr, 0)
    except ValueError:
        raise TextraceError(f"{args.addr!r} is not an address (e.g. 0xffffffffc0012345)",
                            field="ADDR") from None
    live = _kallsyms_child()
    try:
        from .views.show import show
        versions = show(_open(args), addr, at=args.at, live=live)
    finally:
        live.close()
    from .views.events import format_time
    if args.json:
        for v in versions:
            sys.stdout.write(json.dumps(v.to_dict(), separators=(",", ":")) + "\n")
        return 0
    if not versions:
        print(f"{addr:#x}: nothing known at this address" +
              (f" at {format_time(args.at)}" if args.at is not None else ""))
        return 1
    for v in versions:
        life = (f"{format_time(v.born_ns) if v.born_ns is not None else 'before'} .. "
                f"{format_time(v.died_ns) if v.died_ns is not None else 'end'}")
        prog = f" (prog {v.prog_id})" if v.prog_id is not None else ""
        print(f"{v.name}+{addr - v.start:#x}{prog} [{v.kind}] {v.start:#x}-{v.end:#x} "
              f"alive {life}")
        if v.bytes is None:
            print("    (no captured image covers it)")
        elif v.at_ns is not None:
            print(f"    at {format_time(v.at_ns)}" + (
                "  AMBIGUOUS: mid-way through a text poke (INT3 protocol); the bytes may be "
                "the old ones, 0xcc and a tail, or the new ones" if v.ambiguous else ""))
        if v.inferred and v.inferred["change"] == "invalidated":
            by = v.inferred["by"]
            print(f"    INT3 written by the kernel's free of {v.inferred['freed']} (no record "
                  f"reports it): after {format_time(v.inferred['after'])}, by "
                  f"{format_time(by) if by else '? (not read)'}")
        elif v.inferred:
            print("    INT3: the fill of a bpf_prog_pack chunk nothing was placed in yet")
        for p in v.pokes:
            print(f"    poke at {format_time(p['time'])} {p['addr']:#x}: {p['old']} -> "
                  f"{p['new']}, window {format_time(p['window'][0])} .. "
                  f"{format_time(p['window'][1])}")
        for line in v.insns:
            print(f"    {line}")
    return 0


@_short_lived
def cmd_pokes(args) -> int:
    """`textrace pokes`: every text poke, classified and disassembled."""
    live = _kallsyms_child()
    try:
        from .views.pokes import kind_counts, poke_rows
        data = _open(args)
        rows = poke_rows(data, kind=args.kind, window_ns=args.window, live=live)
    finally:
        live.close()
    from .views.events import format_time
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row.to_dict(), separators=(",", ":")) + "\n")
        _warn_damage(data)
        return 0
    from rich.table import Table
    table = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("time", "addr", "symbol", "kind", "old -> new"):
        table.add_column(col)
    for r in rows:
        old = "; ".join(r.old_insn) or "(none)"
        new = "; ".join(r.new_insn) or "(none)"
        batch = f"  [batch of {r.batch}]" if r.batch > 1 else ""
        kind = r.kind if r.reported else f"{r.kind} (unreported)"
        table.add_row(format_time(r.time), f"{r.addr:#x}", r.symbol or "?", kind,
                      f"{old} -> {new}{batch}")
    console = _console()
    console.print(table)
    counts = kind_counts(rows)
    console.print(f"{len(rows)} pokes" + (": " + ", ".join(f"{k} {n}" for k, n in
                                                            counts.items()) if rows else ""))
    _warn_damage(data)
    return 0


def _export_progress():
    """A rich progress bar on stderr when it is a terminal: (callback, context manager)."""
    import contextlib
    if not sys.stderr.isatty():
        return None, contextlib.nullcontext()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=Console(stderr=True), transient=True)
    tasks: dict[str, int] = {}

    def step(path, table, done, total):
        # one line per file: the step under way, a bar once its size is known (samples)
        if path not in tasks:
            tasks[path] = bar.add_task("", total=None)
        bar.update(tasks[path], description=f"{os.path.basename(path)}: {table}",
                   total=total, completed=done)
    return step, bar


def cmd_export(args) -> int:
    """`textrace export`: recordings and stores as Parquet tables in one directory."""
    from .export import export
    if not args.input and not args.store:
        raise TextraceError("give recordings (-i FILE) or a store (--store DIR) to export")
    step, bar = _export_progress()
    with bar:
        rows = export(args.input or [], args.parquet, salvage=args.salvage,
                      stores=args.store or [], progress=step)
    print(f"textrace: wrote {args.parquet}: " + ", ".join(f"{t} {n}" for t, n in rows.items()),
          file=sys.stderr)
    return 0


def cmd_sql(args) -> int:
    """`textrace sql QUERY`: DuckDB over the tables; recordings and stores given are
    exported to a temporary directory first, --parquet adds directories already exported."""
    import shutil
    import tempfile

    from . import sql
    dirs = list(args.parquet or [])
    tmp = None
    try:
        if args.input or args.store or not dirs:
            from .export import export
            tmp = tempfile.mkdtemp(prefix="textrace-sql-")   # 0700
            tables = sql.tables_in(args.query)
            step, bar = _export_progress()
            with bar:
                export(args.input or ([] if args.store else ["perf.data"]), tmp,
                       tables=tables, salvage=args.salvage, stores=args.store or [],
                       progress=step)
            dirs.append(tmp)
        con = sql.connect(dirs)
        rel = sql.run(con, args.query)
        if rel is None:
            return 0
        out = sys.stdout
        if args.json:
            for line in sql.json_lines(rel):
                out.write(line + "\n")
            return 0
        _print_columns(sql.TextResult(con, rel))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


RICH_ROWS = 200   # past this many rows, DuckDB lays the columns out (rich: ~0.7 ms a row)


def _print_columns(result) -> None:
    """A rich table for a small result; a big one in the same layout, made by DuckDB."""
    if result.rows <= RICH_ROWS:
        from rich.table import Table
        table = Table(box=None, pad_edge=False, show_edge=False)
        for c, num in zip(result.columns, result.numeric):
            table.add_column(c, justify="right" if num else "left")
        for row in result.cells():
            table.add_row(*row)
        _console().print(table)
        return
    out = sys.stdout
    for chunk in result.lines():
        out.write("\n".join(chunk) + "\n")


def cmd_packs(args) -> int:
    """`textrace packs`: bpf_prog_pack placements, occupancy and freed-code checks."""
    from .views.events import format_time
    from .views.packs import load_layout, pack_rows, plot, summary
    data = _open(args)
    layout, _programs = load_layout(data)
    rows = pack_rows(layout)
    total = summary(layout, rows)
    if args.plot:
        plot(layout, args.plot, args.at or None)
        os.chmod(args.plot, 0o600)  # it shows kernel addresses
    if args.json:
        for r in rows:
            sys.stdout.write(json.dumps(r.to_dict(), separators=(",", ":")) + "\n")
        sys.stdout.write(json.dumps(total, separators=(",", ":")) + "\n")
        _warn_damage(data)
        return 0

    def when(t):
        return "before" if t is None else format_time(t)

    for r in rows:
        print(f"pack {r.start:#x}-{r.start + r.size:#x} ({r.size >> 10} KiB, "
              f"{'probed' if r.source == 'probe' else 'inferred, aligned'}): "
              f"{r.programs} JIT images" + (f", {r.ool} trampolines/dispatchers"
                                             if r.ool else "") + " placed")
        print(f"  peak {r.peak_bytes} B in use ({r.peak_chunks} chunks, "
              f"{r.peak_bytes * 100 / r.size:.2f} %) at {when(r.peak_time)}, largest free run "
              f"then {r.largest_free_run} B; at the end {r.end_bytes} B, largest free run "
              f"{r.largest_free_run_end} B" + (f"; {r.foreign_bytes} B held by code no "
                                                f"KSYMBOL names" if r.foreign_bytes else ""))
        verdicts = ", ".join(f"{k} {n}" for k, n in sorted(r.verdicts.items()))
        print(f"  freed ranges: {r.freed}, checked {r.freed_checked}, stale {r.stale}" +
              (f" ({verdicts})" if verdicts else ""))
        for s in r.stale_ranges:
            print(f"  STALE {s['start']:#x}+{s['size']} {s['name']}: {s['verdict']} "
                  f"{(s['last_read'] or 0) - s['unloaded']} ns after its unload")
        for lo, hi in r.unaccounted:
            print(f"  UNREPORTED code at {lo:#x}-{hi:#x} at the end: no KSYMBOL accounts "
                  f"for it")
        shown = r.placements if args.all else r.placements[:args.limit]
        for p in shown:
            print(f"    {when(p.time):>16} .. {when(p.freed) if p.freed else 'end':<16} "
                  f"+{p.offset:#08x} {p.size:>6} B  {p.name}" +
                  (f" (prog {p.prog_id})" if p.prog_id is not None else ""))
        if len(shown) < len(r.placements):
            print(f"    ... {len(r.placements) - len(shown)} more (--all)")
    for a in total["too_big"]:
        print(f"too big for a pack: {a['name']} at {a['start']:#x}, {a['size']} B "
              f"(its own allocation)")
    print(f"{total['packs']} packs of {total['pack_size'] >> 10} KiB "
          f"({total['pack_size_source']}), {total['programs']} JIT images placed, "
          f"{total['freed_checked']}/{total['freed']} freed ranges checked, "
          f"{total['stale']} stale" + (f", read through {total['reader']}"
                                       if total['reader'] else ""))
    _warn_damage(data)
    return 0


def cmd_record(args) -> int:
    """`textrace record`: record a command (or -a) with BPF programs captured; returns
    the command's exit status."""
    from .recorder.options import CLOCKS, RecordOptions
    from .recorder.recorder import Recorder
    clockid = CLOCKS.get(args.clockid) if not args.clockid.isdigit() else int(args.clockid)
    if clockid is None:
        raise TextraceError(f"unknown clock {args.clockid!r}; known: {', '.join(CLOCKS)}",
                            field="--clockid")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.mmap_pages < 1 or args.mmap_pages & (args.mmap_pages - 1):
        raise TextraceError(f"--mmap-pages {args.mmap_pages} is not a power of 2",
                            field="--mmap-pages")
    if not command and not args.all_cpus:
        raise TextraceError("give a command after --, or -a to record system-wide")
    opts = RecordOptions(output=args.output, system_wide=args.all_cpus,
                         duration=args.duration, event=args.event, freq=args.freq,
                         callgraph=args.call_graph, clockid=clockid, command=command,
                         capture=args.capture, kernel_text=args.kernel_text,
                         ring_pages=args.mmap_pages)
    progress = _progress_line if sys.stderr.isatty() else None
    recorder = Recorder(opts, progress=progress)
    recorder.notice = lambda note: print(f"textrace: {note}", file=sys.stderr, flush=True)
    summary = recorder.run()
    if progress:
        sys.stderr.write("\n")
    if summary.capture_note:
        print(f"textrace: {summary.capture_note}", file=sys.stderr)
    print(f"textrace: wrote {summary.output}: {summary.records} records; BPF programs: "
          f"{summary.programs_seen} seen, {summary.programs_captured} captured "
          f"({summary.capture} capture)", file=sys.stderr)
    if summary.kernel_lost:
        print(f"textrace: warning: the capture program's ring refused {summary.kernel_lost} "
              f"chunks", file=sys.stderr)
    code = summary.code
    if code.get("images") or code.get("failures"):
        failed = sum(code["failures"].values())
        print(f"textrace: kernel code: {code['images']} ranges, {code['bytes']} bytes read "
              f"({code['source']})" + (f"; {failed} reads failed: "
                                       + ", ".join(f"{n} {why}" for why, n in
                                                   code["failures"].items())
                                       if failed else ""), file=sys.stderr)
    packs = summary.packs
    if packs.get("freed"):
        states = packs["states"]
        print(f"textrace: bpf_prog_pack: {packs['packs']} packs found, {packs['freed']} freed "
              f"ranges re-read: " + ", ".join(f"{n} {st}" for st, n in sorted(states.items()))
              + (" (textrace packs lists them)" if states.get("stale") else ""),
              file=sys.stderr)
    if summary.unreported:
        print(f"textrace: {summary.unreported} code changes the kernel did not report "
              f"(JIT images re-read; written as TEXT_POKE records)", file=sys.stderr)
    if summary.programs_failed:
        print(f"textrace: {summary.programs_failed} programs not captured (textrace progs "
              f"-i {summary.output} lists them with the reason)", file=sys.stderr)
    if summary.lost:
        print(f"textrace: warning: the kernel lost {summary.lost} records (ring overflow)",
              file=sys.stderr)
    return summary.exit_code or 0


def cmd_daemon(args) -> int:
    """`textrace daemon --store DIR`: capture into a store until SIGTERM or SIGINT."""
    from .recorder.daemon import Daemon, DaemonOptions
    stats = Daemon(DaemonOptions(store=args.store, max_mb=args.max_mb, min_mb=args.min_mb,
                                 capture=args.capture, nice=args.nice)).run()
    print(f"textrace daemon: stopped: {stats.loads} loads, {stats.captured} captured, "
          f"{stats.failed} not captured, {stats.ool} out-of-line code regions, "
          f"{stats.pokes} text pokes, {stats.unreported} unreported changes"
          + (f"; the kernel lost {stats.lost} records" if stats.lost else ""),
          file=sys.stderr)
    return 0


def cmd_store(args) -> int:
    """`textrace store DIR`: what the store holds, per boot."""
    import textrace.store
    st = textrace.store.open(args.dir)
    s = st.summary()
    if args.json:
        sys.stdout.write(json.dumps(s, separators=(",", ":")) + "\n")
        return 0
    from .views.events import format_time
    print(f"{args.dir}: {s['programs']} program loads ({s['captured']} captured, "
          f"{s['live']} live), {s['images']} distinct images "
          f"({s['images_evicted']} evicted), {s['btf']} BTF objects")
    print(f"  {s['bytes']} bytes of code and BTF, {s['disk_bytes']} bytes on disk; "
          f"{s['evicted']} evictions ({s['evicted_bytes']} bytes)")
    print(f"  {s['ool']} out-of-line code regions, {s['pokes']} code changes "
          f"({s['unreported']} unreported)")
    for b in s["boots"]:
        print(f"  boot {b['boot_id']} ({b['release']}): {format_time(b['first_ns'])} .. "
              f"{format_time(b['last_ns'])}")
    return 0


def cmd_inject(args) -> int:
    """`textrace inject`: complete a perf-made file from a store or a recording."""
    from .inject import inject
    r = inject(args.input, args.output, store=args.store, from_path=args.from_path)
    print(f"textrace: wrote {r.output}: {r.programs} programs loaded in the file; "
          f"{r.had} perf had, {len(r.completed)} completed, {len(r.missing)} not",
          file=sys.stderr)
    for prog_id, why in sorted(r.missing.items()):
        print(f"textrace:   program {prog_id}: {why}", file=sys.stderr)
    return 0


def cmd_symbolize(args) -> int:
    """`textrace symbolize`: {addr, time} JSON lines to symbols from a store, in batches
    of 65536 lines so a stream of any length is answered as it goes."""
    import numpy as np
    import textrace.store
    st = textrace.store.open(args.store)
    src = sys.stdin if args.input == "-" else open(args.input)
    out = sys.stdout
    lineno = 0
    while True:
        batch = []
        for line in src:
            lineno += 1
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                addr = d["addr"] if isinstance(d["addr"], int) else int(d["addr"], 0)
                batch.append((addr, int(d["time"])))
            except (ValueError, KeyError, TypeError):
                raise TextraceError(f"line {lineno}: not {{\"addr\": ..., \"time\": ...}}: "
                                    f"{line.strip()[:80]!r}", file=args.input) from None
            if len(batch) >= 65536:
                break
        if not batch:
            break
        addrs = np.array([a for a, _ in batch], dtype=np.uint64)
        times = np.array([t for _, t in batch], dtype=np.int64)
        got = st.symbolize(addrs, times, boot=args.boot)
        for k, (addr, t) in enumerate(batch):
            row = {"addr": addr, "time": t, "name": got["name"][k], "kind": got["kind"][k],
                   "offset": int(got["offset"][k]) if got["name"][k] is not None else None,
                   "tag": got["tag"][k],
                   "id": int(got["prog_id"][k]) if got["prog_id"][k] >= 0 else None}
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    out.flush()
    return 0


_last_progress = [0.0]


def _progress_line(rec) -> None:
    import time
    now = time.monotonic()
    if now - _last_progress[0] < 0.25:
        return
    _last_progress[0] = now
    sys.stderr.write(f"\rtextrace record: {rec.summary.records} records, "
                     f"{rec.ledger.n_seen} programs seen, "
                     f"{rec.ledger.n_captured} captured, {rec.summary.lost} lost ")
    sys.stderr.flush()


def cmd_recover(args) -> int:
    """`textrace recover FILE`: finish a killed recording from its stream."""
    from .recorder.finish import recover
    report = recover(args.file, args.output)
    for line in report.damage:
        print(f"textrace: damage: {line}", file=sys.stderr)
    if not report.damage:
        print(f"textrace: {args.file}: nothing damaged", file=sys.stderr)
    print(f"textrace: wrote {report.path}: {report.programs} programs, {report.captured} "
          f"captured, {report.btfs} BTF, {report.kernel_code} kernel code reads, "
          f"{report.unreported} unreported changes; features: {', '.join(report.features)}",
          file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per view, each set to call its cmd_ function."""
    parser = argparse.ArgumentParser(
        prog="textrace",
        description="Trace the Linux kernel's changing code: BPF programs, JIT images, "
                    "text pokes, perf.data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("events", help="every record of a perf.data file, in time order")
    _add_input(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--file-order", action="store_true",
                   help="records in the order they are stored, not by time")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("report", help="samples attributed to symbols as of each sample's time")
    _add_input(p)
    p.add_argument("--sort", choices=("symbol", "program", "dso"), default="symbol")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.add_argument("--limit", type=int, default=0, help="show only the first N rows")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("annotate", help="a BPF program's JIT code with BPF insns, source "
                                        "lines and sample counts")
    _add_input(p)
    p.add_argument("prog", metavar="PROG", help="program id, name or tag")
    p.add_argument("--json", action="store_true", help="one JSON object per x86 instruction")
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("callsites", help="every call in a BPF program's JIT image")
    _add_input(p)
    p.add_argument("prog", metavar="PROG", help="program id, name or tag")
    p.add_argument("--json", action="store_true", help="one JSON object per call")
    p.set_defaults(func=cmd_callsites)

    p = sub.add_parser("show", help="symbol, bytes and disassembly at an address, over time")
    _add_input(p)
    p.add_argument("addr", metavar="ADDR", help="kernel virtual address, e.g. 0xffffffffc0012345")
    p.add_argument("--at", type=int, help="time in ns (the recording's clock)")
    p.add_argument("--json", action="store_true", help="one JSON object per version")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("pokes", help="every text poke: what patched the kernel text, old -> "
                                     "new disassembled")
    _add_input(p)
    p.add_argument("--json", action="store_true", help="one JSON object per poke")
    p.add_argument("--kind", metavar="K", help="only pokes of this kind: jump_label, ftrace, "
                   "static_call, bpf_trampoline, bpf_dispatcher, tail_call, kprobe, unknown")
    p.add_argument("--window", type=int, metavar="NS",
                   help="how long before and after a poke's time its bytes may be mid-change "
                        "(the INT3 protocol; default 10000 ns)")
    p.set_defaults(func=cmd_pokes)

    p = sub.add_parser("packs", help="bpf_prog_pack: packs, placements, occupancy, "
                                     "fragmentation, freed code checked for staleness")
    _add_input(p)
    p.add_argument("--json", action="store_true", help="one JSON object per pack, then a "
                                                       "summary")
    p.add_argument("--plot", metavar="FILE.png", help="draw occupancy and chunk maps")
    p.add_argument("--at", type=int, action="append", metavar="NS",
                   help="a time (ns) for a chunk map in the plot (repeatable; default the "
                        "peak and the end)")
    p.add_argument("--limit", type=int, default=20, help="placements listed per pack")
    p.add_argument("--all", action="store_true", help="list every placement")
    p.set_defaults(func=cmd_packs)

    p = sub.add_parser("progs", help="BPF programs seen: lifetimes, captures, failures")
    _add_input(p)
    p.add_argument("--json", action="store_true", help="one JSON object per program")
    p.set_defaults(func=cmd_progs)

    p = sub.add_parser("export", help="the code history as Parquet tables: recordings, "
                                      "programs, functions, code_versions, pokes, samples")
    p.add_argument("-i", "--input", action="append", metavar="FILE",
                   help="perf.data file (repeat for several recordings)")
    p.add_argument("--store", action="append", metavar="DIR",
                   help="a textrace daemon's store: each boot a recording (repeatable)")
    p.add_argument("--salvage", action="store_true",
                   help="read damaged or unfinished files up to the damage")
    p.add_argument("--parquet", required=True, metavar="DIR",
                   help="directory to write TABLE.parquet into (made 0700)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sql", help="SQL over the tables of recordings (DuckDB, in-process)")
    p.add_argument("-i", "--input", action="append", metavar="FILE",
                   help="perf.data file (repeat for several; default perf.data unless "
                        "--parquet or --store is given)")
    p.add_argument("--store", action="append", metavar="DIR",
                   help="a textrace daemon's store: each boot a recording (repeatable)")
    p.add_argument("--parquet", action="append", metavar="DIR",
                   help="an export directory to query (repeat for several)")
    p.add_argument("--salvage", action="store_true",
                   help="read damaged or unfinished files up to the damage")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.add_argument("query", metavar="QUERY", help="SQL; tables: " + ", ".join(
        ["recordings", "programs", "functions", "code_versions", "pokes", "samples"]))
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("recover", help="finish a killed or cut recording from what its "
                                       "stream holds; says what was damaged and where")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", help="write the finished file here (default: FILE)")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("record", help="record kernel code changes, capturing BPF programs")
    p.add_argument("-o", "--output", default="perf.data")
    p.add_argument("-a", "--all-cpus", action="store_true", help="system-wide until Ctrl-C")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("-e", "--event", help="also sample this event (cpu-clock, task-clock, "
                                         "cycles, instructions)")
    p.add_argument("-F", "--freq", type=int, default=999, help="samples per second")
    p.add_argument("-g", "--call-graph", action="store_true", help="sample callchains")
    p.add_argument("--clockid", default="monotonic", help="clock of record times")
    p.add_argument("--capture", choices=("auto", "kernel", "user"), default="auto",
                   help="capture BPF programs in the kernel at load (a small BPF program), "
                        "in user space, or kernel when it loads (default)")
    p.add_argument("-m", "--mmap-pages", type=int, default=1024,
                   help="ring pages per CPU, a power of 2 (default 1024: 4 MiB, room for a "
                        "burst of thousands of program loads)")
    p.add_argument("--kernel-text", action="store_true",
                   help="snapshot the kernel's whole text at the start (~20 MiB, kept "
                        "compressed): the base every later TEXT_POKE replays forwards from")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("daemon", help="capture service: every BPF program and code change "
                                      "into a store, until SIGTERM/SIGINT")
    p.add_argument("--store", required=True, metavar="DIR", help="the store's directory")
    p.add_argument("--max-mb", type=float, help="never more than this on disk (MB); "
                   "unloaded code is evicted oldest first")
    p.add_argument("--min-mb", type=float, default=0.0,
                   help="never evict below this much of the most recent unloaded code (MB)")
    p.add_argument("--capture", choices=("auto", "kernel", "user"), default="auto",
                   help="capture in the kernel at load, from user space, or kernel when it "
                        "loads (default)")
    p.add_argument("--nice", type=int, default=10,
                   help="lower the daemon's CPU priority by this much (default 10): loads "
                        "are not slowed by it, and the rings hold what it has not read")
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("inject", help="a copy of a perf.data with every program it saw "
                                      "load completed from a store or a recording")
    p.add_argument("-i", "--input", required=True, help="perf.data made by perf record")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--store", metavar="DIR", help="a textrace daemon's store")
    p.add_argument("--from", dest="from_path", metavar="FILE",
                   help="a textrace recording made at the same time")
    p.set_defaults(func=cmd_inject)

    p = sub.add_parser("symbolize", help="JSON lines {addr, time} in: the program or kernel "
                                         "symbol at that address then, out")
    p.add_argument("--store", required=True, metavar="DIR")
    p.add_argument("-i", "--input", default="-", help="JSON lines file (default stdin)")
    p.add_argument("--boot", help="the boot's boot_id (default: the store's newest)")
    p.set_defaults(func=cmd_symbolize)

    p = sub.add_parser("store", help="what a code store holds")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_store)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `textrace` entry point: the exit status, 2 with one line on stderr for a
    TextraceError, 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        for data in _opened:
            _warn_damage(data)
        return code
    except TextraceError as e:
        print(f"textrace: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `textrace events | head`: the reader went away; leave quietly as perf does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
